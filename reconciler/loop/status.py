"""What the reconciler last saw and did, per pool: the status `reconciler status` shows.

Stage: the loop's memory between passes (and across restarts). Kept as one JSON file in
the work directory, written atomically (temporary file, fsync, rename), so a crash
leaves the previous or the new status, never half of one.

Conditions follow Kubernetes/kstatus conventions (Flux's Ready/Stalled/Reconciling):
- `Ready`: the pool's pin is the image for its current inputs (or it is held);
- `Building`: a build for the pool is running;
- `Stalled`: the pool's config cannot be built until a new commit fixes it;
- `Held`: someone other than the reconciler set the pin; it stays until inputs change.
Each condition carries a reason, a message and the time it last changed; conditions
change (and are logged) only on transitions.

Nothing here decides anything: the controller does, this records it. A status file
that cannot be read as one (garbage, another shape) is moved aside to
`status.json.corrupt-<time>` with one warning and the loop starts afresh: Git holds
everything that matters.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import tempfile
import time
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from reconciler.core import pins

log = logging.getLogger("reconciler.status")  # the logger keeps its name across moves

# Condition types (Flux's `condition_types.go` names, plus Held).
READY = "Ready"
BUILDING = "Building"
STALLED = "Stalled"
HELD = "Held"
CONDITIONS = (READY, BUILDING, STALLED, HELD)


class Reason:
    """Condition reasons, one name each (CamelCase, as Kubernetes conditions want)."""

    PINNED = "Pinned"
    """Ready: the pin is the image for the pool's current inputs."""
    HELD = "Held"
    """Ready: a pin someone else set is kept (see Held)."""
    MANUAL_PIN = "ManualPin"
    """Held: a commit not by the reconciler set the pin; kept until inputs change."""
    CONFIG_ERROR = "ConfigError"
    """Ready False, Stalled: the pool's config cannot be built until a commit fixes it."""
    RETRYING = "RetryingAfterError"
    """Ready False: a transient failure (registry, network, Git); retried with backoff."""
    UNMANAGED = "Unmanaged"
    """Ready False: the pool has no MachineOSConfig, so nothing is built for it."""
    BUILDING = "Building"
    """Building: a Containerfile build is running (and Ready False: the pin stays the
    old image until it ends)."""
    IDLE = "Idle"
    """Building False."""
    AS_EXPECTED = "AsExpected"
    """A condition that is False because nothing is wrong (OpenShift's word): what an
    empty internal reason becomes in the cluster."""


MAX_BACKOFF_S = 300.0
FIRST_BACKOFF_S = 5.0


RecordedState = Literal["unchanged", "held", "stalled", "failed", "unmanaged", "building"]
"""The pass states (`controller.PoolState`) the conditions tell apart."""


@dataclass
class Condition:
    status: bool
    reason: str
    message: str
    since: float


@dataclass
class PoolStatus:
    pool: str
    conditions: dict[str, Condition] = field(default_factory=dict)
    image: str | None = None
    """The pinned image (`repo@sha256:…`) in Git, as of the last pass."""
    source_commit: str | None = None
    inputs_digest: str | None = None
    last_error: str | None = None
    failures: int = 0
    """Consecutive transient failures (for the backoff)."""
    retry_at: float | None = None
    """When a transient failure should be retried even if Git has not moved."""
    failed_inputs: str | None = None
    """The inputs digest whose build failed for good: not rebuilt until inputs change."""

    def set(self, name: str, status: bool, reason: str, message: str, now: float) -> bool:
        """Set a condition; True when it changed (a transition worth logging)."""
        old = self.conditions.get(name)
        if old is not None and (old.status, old.reason, old.message) == (status, reason, message):
            return False
        since = old.since if old is not None and old.status == status else now
        self.conditions[name] = Condition(status, reason, message, since)
        return True

    def recorded_state(self) -> RecordedState:
        """The pass's state (`controller.PoolState`) these conditions were set from
        (`controller._apply`): pinned and unchanged both read as `unchanged`."""
        ready = self.conditions.get("Ready")
        if self.is_true("Building"):
            return "building"
        if self.is_true("Held"):
            return "held"
        if self.is_true("Stalled"):
            return "stalled"
        if ready is not None and ready.reason == "RetryingAfterError":
            return "failed"
        if ready is not None and ready.reason == "Unmanaged":
            return "unmanaged"
        return "unchanged"

    def is_true(self, name: str) -> bool:
        cond = self.conditions.get(name)
        return bool(cond and cond.status)

    def fail_transient(self, message: str, now: float) -> None:
        self.failures += 1
        self.last_error = message
        delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (self.failures - 1))
        self.retry_at = now + delay

    def clear_failures(self) -> None:
        self.failures = 0
        self.retry_at = None


@dataclass
class Status:
    repo: str = ""
    branch: str = ""
    observed_head: str | None = None
    """The remote head the last complete pass saw (after its own push, if any)."""
    last_pass: float | None = None
    """When the last pass that was not skipped ran (it re-resolved every base image)."""
    last_commit: str | None = None
    warnings: list[str] = field(default_factory=list)
    """The repository's warnings at `observed_head` (they block no pool)."""
    pools: dict[str, PoolStatus] = field(default_factory=dict)

    def pool(self, name: str) -> PoolStatus:
        if name not in self.pools:
            self.pools[name] = PoolStatus(name)
        return self.pools[name]

    def next_retry(self) -> float | None:
        times = [p.retry_at for p in self.pools.values() if p.retry_at is not None]
        return min(times) if times else None

    def to_json(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "pools"}
        doc["warnings"] = list(self.warnings)
        doc["pools"] = {name: _pool_json(pool) for name, pool in self.pools.items()}
        return doc

    @classmethod
    def from_json(cls, doc: object) -> Status:
        """The status `to_json` wrote, or `ValueError` saying what does not fit.

        Keys this version does not know are ignored (a newer version wrote them); a
        known key with a value of the wrong type is an error, so that nothing later
        trips over it.
        """
        raw = _fields_of(cls, doc, "status", skip=frozenset({"pools", "warnings"}))
        warnings = raw.pop("warnings", [])
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            raise ValueError("status.warnings is not a list of strings")
        pools = {}
        for name, pool in _mapping(raw.pop("pools", {}), "pools").items():
            where = f"pools.{name}"
            values = _fields_of(PoolStatus, pool, where, skip=frozenset({"conditions"}))
            conditions = {
                k: Condition(**_fields_of(Condition, v, f"{where}.conditions.{k}"))
                for k, v in _mapping(values.pop("conditions", {}), f"{where}.conditions").items()
            }
            pools[name] = PoolStatus(**values, conditions=conditions)
        return cls(**raw, warnings=warnings, pools=pools)


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{where} is not an object")
    return value


def _fields_of(
    cls: type, value: object, where: str, skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The known keys of `value` for dataclass `cls`, each checked against its type."""
    doc = _mapping(value, where)
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in doc:
            continue
        v = doc[f.name]
        if f.name not in skip and not _fits(v, hints[f.name]):
            want = getattr(hints[f.name], "__name__", str(hints[f.name]))
            raise ValueError(f"{where}.{f.name} is {type(v).__name__}, not {want}")
        out[f.name] = v
    return out


def _fits(value: object, hint: Any) -> bool:
    """Whether a JSON value has the (scalar or optional scalar) type `hint`."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return True
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if option in (int, str) and type(value) is option:
            return True
        if option is bool and isinstance(value, bool):
            return True
    return False


class StatusStore:
    """`<work_dir>/status.json`, read once and written after every pass."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Status:
        """The saved status; a fresh one if there is none or it cannot be read as one."""
        try:
            return Status.from_json(json.loads(self.path.read_bytes()))
        except FileNotFoundError:
            return Status()
        except (ValueError, TypeError, RecursionError, IsADirectoryError) as exc:
            # Damaged (a crash of the disk, a hand edit) or from another version: start
            # over. Git holds everything that matters; this only saves work and keeps
            # timestamps. The file is kept aside for whoever wants to know why.
            self._move_aside(exc)
            return Status()

    def _move_aside(self, why: Exception) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
            where = f"moved it to {aside}"
        except OSError as exc:
            where = f"could not move it aside ({exc.strerror})"
        for old in sorted(self.path.parent.glob(f"{glob.escape(self.path.name)}.corrupt-*"))[:-1]:
            if old != aside:  # keep the newest copy only
                shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
        reason = str(why).splitlines()[0][:200] if str(why) else type(why).__name__
        log.warning(
            "status file %s is unreadable (%s): %s; starting afresh", self.path, reason, where
        )

    def save(self, status: Status) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".status-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as out:
                # compact: `indent` makes json use its pure-Python encoder, ten times
                # slower (a pass of a 300-pool fleet saves 300 pools' conditions)
                out.write(json.dumps(status.to_json(), sort_keys=True, separators=(",", ":")))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


_POOL_FIELDS = tuple(f.name for f in fields(PoolStatus))
_CONDITION_FIELDS = tuple(f.name for f in fields(Condition))


def _pool_json(pool: PoolStatus) -> dict[str, Any]:
    """`asdict(pool)`, without its deep copies (all values are scalars or Conditions)
    and without asking `fields()` again for every pool and condition."""
    doc: dict[str, Any] = {name: getattr(pool, name) for name in _POOL_FIELDS}
    doc["conditions"] = {
        name: {f: getattr(c, f) for f in _CONDITION_FIELDS} for name, c in pool.conditions.items()
    }
    return doc


def status_document(
    head: str,
    pinned: Mapping[str, pins.Pin | pins.PinError],
    recorded: Status,
    cluster: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """What `reconciler status` shows: the pins in Git at `head` and what the last pass
    recorded (times as Unix seconds; the CLI prints them as RFC 3339); with `cluster`
    (read from the BootcPools), each pool's fleet counts and rollout too."""
    pools: dict[str, Any] = {}
    for name, pin in sorted(pinned.items()):
        if isinstance(pin, pins.PinError):
            pools[name] = {"pin": None, "pinError": str(pin)}
        else:
            pools[name] = {"pin": pin.spec.image, "sourceCommit": pin.spec.source_commit,
                           "renderedConfig": pin.spec.rendered_config}  # fmt: skip
    for name, state in recorded.pools.items():
        entry = pools.setdefault(name, {"pin": None})
        entry["conditions"] = {
            k: {"status": c.status, "reason": c.reason, "message": c.message, "since": c.since}
            for k, c in state.conditions.items()
        }
        entry["lastError"] = state.last_error
        if state.retry_at:
            entry["retryAt"] = state.retry_at
    for name, extra in (cluster or {}).items():
        pools.setdefault(name, {"pin": None}).update(extra)
    return {
        "recordedIn": "work-dir" if cluster is None else "cluster",
        "head": head,
        "observedHead": recorded.observed_head,
        "statusIsCurrent": recorded.observed_head == head,
        "lastPass": recorded.last_pass,
        "warnings": list(recorded.warnings),
        "pools": pools,
    }
