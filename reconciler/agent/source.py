"""Where the agent learns what to run: the pool's pin and the pool's rollout policy.

Stage: the agent's input. `PinSource.current(pool)` returns a `Snapshot`: the config
revision, the parsed pin (or why it cannot be trusted) and the pool's policy
(`paused`, `maxUnavailable`, `nodeSelector` from its MachineConfigPool).

`GitPinSource` reads them from the config repository through the Git adapter's
`Mirror`: each poll is one `git ls-remote`; only when the branch moved is it fetched,
shallow (`--depth=1`) and partial (`--filter=blob:none`), and then only the blobs read
are downloaded: `pins/<pool>.yaml` and the YAML files the pool definitions may live in
(objects are found by kind, so every config file is a candidate). The live settings
(`settings`) are read at the pin's `sourceCommit`, that one commit fetched alone.
With `signers` (`--allowed-signers`, or the image's /etc/bootc-reconciler/allowed-signers)
a pin is trusted only when the commit that last changed it carries a sound SSH
signature by one of them (core/provenance.py `judge_pin_commit`); finding that commit
needs the history of commits and trees, so the fetch is then not shallow (still no
blobs but those read).
`MemoryPinSource` is the same contract in memory, for fleet simulations.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from reconciler.adapters import git
from reconciler.adapters.git import verify as gitverify
from reconciler.agent.live import NodeSettings, settings_from_spec
from reconciler.core import load, merge, model, pins, provenance, select
from reconciler.errors import ReconcilerError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolPolicy:
    """What a MachineConfigPool says about rolling out (defaults when there is none)."""

    name: str
    max_unavailable: int | str | None = None
    paused: bool = False
    node_selector: model.LabelSelector | None = None
    push_spec: str | None = None
    """The pool's MachineOSConfig `renderedImagePushSpec`: the only repository its pins
    may name (None: no MachineOSConfig, so no pin is trusted)."""
    rollout: model.Rollout | None = None
    """The MachineOSConfig's progressive rollout (canary, soak, pause threshold)."""

    @classmethod
    def of(
        cls, pool: model.MachineConfigPool, os_config: model.MachineOSConfig | None = None
    ) -> PoolPolicy:
        return cls(
            name=pool.metadata.name,
            max_unavailable=pool.spec.max_unavailable,
            paused=pool.spec.paused,
            node_selector=pool.spec.node_selector,
            push_spec=os_config.spec.rendered_image_push_spec if os_config else None,
            rollout=os_config.spec.rollout if os_config else None,
        )


@dataclass(frozen=True)
class Snapshot:
    revision: str
    pin: pins.Pin | None
    """None when `problem` says why (missing, malformed, not by digest, wrong pool)."""
    problem: str = ""
    missing: bool = False
    """The pool has no pin yet: nothing to apply (not an error)."""
    policy: PoolPolicy = field(default_factory=lambda: PoolPolicy(""))


class PinSource(Protocol):
    def current(self, pool: str) -> Snapshot:
        """The pool's pin and policy at the newest revision."""
        ...

    def pools(self) -> Mapping[str, PoolPolicy]:
        """Every pool's policy at the newest revision (to find a node's pool)."""
        ...

    def settings(self, pool: str, revision: str, pin: pins.Pin) -> NodeSettings | None:
        """The pool's rendered settings behind `pin` (kernel arguments, core's SSH keys
        and password hash); None when they cannot be read for that pin."""
        ...


class PoolNotFound(LookupError):
    pass


def pool_for_labels(policies: Mapping[str, PoolPolicy], labels: Mapping[str, str]) -> str:
    """The pool whose `nodeSelector` matches `labels`. MCO allows a node in at most one
    custom pool plus `worker`; the custom pool wins (`GetPoolsForNode`)."""
    matching = sorted(n for n, p in policies.items() if select.matches(p.node_selector, labels))
    custom = [n for n in matching if n != "worker"]
    if len(custom) > 1:
        raise PoolNotFound(
            f"node labels match more than one custom pool ({', '.join(custom)}); "
            "a node may belong to one custom pool only"
        )
    if custom:
        return custom[0]
    if matching:
        return matching[0]
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"
    raise PoolNotFound(
        f"no pool's nodeSelector matches this node ({shown}); label the node or pass --pool"
    )


def snapshot_from_pin_file(
    revision: str, pool: str, pin_text: bytes | None, policy: PoolPolicy
) -> Snapshot:
    """The pure part: a pool's pin file (None: absent) at one revision → Snapshot."""
    if pin_text is None:
        return Snapshot(
            revision,
            None,
            f"{pins.pin_path(pool)} at {revision[:12]}: no pin yet (the reconciler has not "
            f"built pool {pool!r})",
            missing=True,
            policy=policy,
        )
    return snapshot_from_pin(revision, pool, pin_text, policy)


def snapshot_from_pin(
    revision: str, pool: str, pin_text: bytes | str, policy: PoolPolicy
) -> Snapshot:
    where = f"{pins.pin_path(pool)} at {revision[:12]}"
    try:
        pin = pins.parse_pin(pin_text, where=where)
    except pins.PinError as exc:
        return Snapshot(revision, None, f"{exc}; fix or revert the pin", policy=policy)
    if pin.spec.pool != pool:
        return Snapshot(
            revision,
            None,
            f"{where}: spec.pool is {pin.spec.pool!r}, not {pool!r}; the file holds another "
            "pool's pin",
            policy=policy,
        )
    try:
        pins.check_origin(pin, policy.push_spec, where=where)
    except pins.PinError as exc:
        return Snapshot(revision, None, str(exc), policy=policy)
    return Snapshot(revision, pin, policy=policy)


def policies_from_files(
    config_files: Mapping[str, bytes | str | load.Unreadable],
) -> dict[str, PoolPolicy]:
    repo = load.load_repository(config_files)
    return {
        name: PoolPolicy.of(
            loaded.obj, repo.os_configs[name].obj if name in repo.os_configs else None
        )
        for name, loaded in repo.pools.items()
    }


class GitPinSource:
    """Pins and pools from the config repository's branch (see the module docstring)."""

    def __init__(
        self,
        url: str,
        cache_dir: str | os.PathLike[str],
        branch: str = "main",
        auth: git.GitAuth | None = None,
        timeout: float = 120.0,
        signers: provenance.Policy | None = None,
    ) -> None:
        self.mirror = git.Mirror(url, cache_dir, auth, timeout=timeout)
        self.branch = branch
        self.signers = signers
        """Set: a pin is applied only from a commit one of these signed (see `_refusal`)."""
        self._checked: dict[tuple[str, str], str | None] = {}
        self._rev = ""
        self._policies: dict[str, PoolPolicy] = {}
        self._pins: dict[str, bytes | None] = {}
        self._settings: dict[tuple[str, str], NodeSettings | None] = {}

    def _refresh(self) -> str:
        """One `ls-remote`; a fetch, and parsing, only when the branch moved."""
        # Checking who signed a pin needs the commit that last changed it: the history
        # of commits and trees then (still no blobs but those read).
        depth = None if self.signers is not None else 1
        head = self.mirror.fetch(self.branch, depth=depth, filter="blob:none")
        if head != self._rev:
            files = self.mirror.read_files(head, load.is_config_path)
            self._policies = policies_from_files(files)
            self._pins = {}
            self._rev = head
        return head

    def current(self, pool: str) -> Snapshot:
        head = self._refresh()
        if pool not in self._pins:
            self._pins[pool] = self.mirror.read_file(head, pins.pin_path(pool))
        policy = self._policies.get(pool, PoolPolicy(pool))
        snapshot = snapshot_from_pin_file(head, pool, self._pins[pool], policy)
        if snapshot.pin is not None and self.signers is not None:
            refused = self._refusal(head, pool, self.signers)
            if refused is not None:
                return Snapshot(head, None, refused, policy=policy)
        return snapshot

    def _refusal(self, head: str, pool: str, signers: provenance.Policy) -> str | None:
        """Why the pin at `head` may not be applied: the commit that last changed it must
        carry a sound SSH signature by one of `signers` (provenance.judge_pin_commit)."""
        key = (head, pool)
        if key not in self._checked:
            path = pins.pin_path(pool)
            changed = self.mirror.log(head, paths=[path], max_count=1)
            if not changed:
                found: str | None = f"{path} at {head[:12]}: no commit changed it"
            else:
                last = changed[0]
                facts = gitverify.SourceFacts(self.mirror).facts(last.sha, last)
                check = provenance.judge_pin_commit(facts, signers)
                found = None if check.accepted else (
                    f"{path} at {head[:12]}: refusing the pin of commit {last.sha}: "
                    f"{check.reason} (--allowed-signers lists the keys a pin must be "
                    "signed with)"
                )  # fmt: skip
            self._checked = {key: found}
        return self._checked[key]

    def pools(self) -> Mapping[str, PoolPolicy]:
        self._refresh()
        return dict(self._policies)

    def settings(self, pool: str, revision: str, pin: pins.Pin) -> NodeSettings | None:
        """Rendered from the config files at the pin's `sourceCommit` (the commit the
        pin was computed from, fetched alone: `Mirror.fetch_commit`), not at the
        branch's head, which may have moved on while the pool is held or stalled; and
        trusted only when that rendering is the pin's `renderedConfig`."""
        commit = pin.spec.source_commit
        key = (pool, commit)
        if key not in self._settings:
            found = None
            try:
                self.mirror.fetch_commit(commit, self.branch, filter="blob:none")
                files = self.mirror.read_files(commit, load.is_config_path)
                rendered = merge.render_pool(load.load_repository(files), pool)
                if rendered.name == pin.spec.rendered_config:
                    found = settings_from_spec(rendered.spec)
                else:
                    log.warning(
                        "pool %s: the config at %s renders %s, not the pin's %s",
                        pool, commit[:12], rendered.name, pin.spec.rendered_config,
                    )  # fmt: skip
            except ReconcilerError as exc:
                log.warning("pool %s: cannot read the config at the pin's sourceCommit %s: %s",
                            pool, commit[:12], exc)  # fmt: skip
            self._settings = {key: found}  # only the current pin's are worth keeping
        return self._settings[key]


class MemoryPinSource:
    """Pins and policies held in memory; `publish` is a new commit (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rev = 0
        self._pins: dict[str, str] = {}
        self._policies: dict[str, PoolPolicy] = {}
        self._settings: dict[str, NodeSettings] = {}

    def publish(
        self,
        pool: str,
        pin_text: str | None = None,
        policy: PoolPolicy | None = None,
        settings: NodeSettings | None = None,
    ) -> None:
        with self._lock:
            self._rev += 1
            if pin_text is not None:
                self._pins[pool] = pin_text
            if policy is not None:
                self._policies[pool] = policy
            if settings is not None:
                self._settings[pool] = settings

    def current(self, pool: str) -> Snapshot:
        with self._lock:
            revision = f"{self._rev:040x}"
            policy = self._policies.get(pool, PoolPolicy(pool))
            text = self._pins.get(pool)
        if text is None:
            return Snapshot(
                revision, None, f"no pin for pool {pool!r} yet", missing=True, policy=policy
            )
        return snapshot_from_pin(revision, pool, text, policy)

    def pools(self) -> Mapping[str, PoolPolicy]:
        with self._lock:
            return dict(self._policies)

    def settings(self, pool: str, revision: str, pin: pins.Pin) -> NodeSettings | None:
        with self._lock:
            return self._settings.get(pool)
