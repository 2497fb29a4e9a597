"""Diff: two rendered configs → a file-level diff and what applying it disrupts.

Stage: after merge, used by `reconciler plan --base/--head` (what a pull request does to
each pool). Inputs: the rendered spec of a pool at two revisions (either may be absent:
a pool added or removed) and, for each, the pool's MachineOSConfig. Outputs: a list of
`ItemDiff`s (one per changed file, directory, link, unit, dropin, kernel arguments, SSH
keys, extensions, kernel type, base image, Containerfile content) that render as a
git-style unified diff, and a `Disruption`: what the change needs on a node.

The rendered config is shown in the admin's terms, as files a reviewer reads like code:
host paths (`/etc/chrony.conf`, a unit as `/etc/systemd/system/<unit>`) with the decoded
content, Ignition or MachineConfig keys (`spec.kernelArguments`,
`passwd.users[core].sshAuthorizedKeys`) with one value a line. Mode, owner and flags are
metadata lines above the hunk (`mode: 0644 → 0755`), written as YAML writes values.
Binary content is shown by size and a short sha256, never inline. Anything that looks
secret is not shown at all, because a plan ends up in PR comments and CI logs:
credentials files (auth.json, kubelet's pull secret, `*.key`), private keys, files whose
mode makes them unreadable to others (an admin's own statement that the content is
private), password hashes and LUKS key files. Their content is compared by a keyed
fingerprint (HMAC with a key drawn per process, never printed) and shown as metadata:
"hidden", "changed" or nothing; a plain digest would be an offline guessing oracle.

Disruption is classified the way MCO's Machine Config Daemon does with its default node
disruption policies (reference `mco-semantics.md` §5; MCO `pkg/daemon/update.go`
`calculatePostConfigChangeNodeDisruptionAction`, policies from
`pkg/apihelpers/apihelpers.go` `defaultClusterPolicies`):
- a change of the OS image (base image, Containerfile content), kernel arguments, fips,
  kernelType or extensions is a reboot;
- each changed file takes the policy whose path is the file's path or its closest parent
  directory (`FindClosestFilePolicyPathMatch`); a file without a policy is a reboot;
- each changed unit (a dropin counts for its unit) takes the policy of the same name;
  there is no default unit policy that applies to admin units, so it is a reboot;
- SSH keys (any `passwd` change) take the sshkey policy: none;
- any reboot makes the whole change a reboot; otherwise the actions are collected.
Directories and links have no policy (MCO refuses to change them on a running node), so
they count as a reboot here. Where the image is pushed is not part of what it is: none.

This says what MCO would do. What our node agent does is `node_action`: core's SSH keys
and password hash ("live settings") are applied on the running node without a reboot;
every other change is a new image, applied with `bootc switch` and a reboot.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import json
import posixpath
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import yaml

from reconciler.core import canonical, contents, model
from reconciler.core.identity import containerfile_for

ItemKind = Literal[
    "file",
    "directory",
    "link",
    "unit",
    "dropin",
    "kernelArguments",
    "sshKeys",
    "passwordHash",
    "user",
    "extensions",
    "kernelType",
    "fips",
    "baseImage",
    "extensionsImage",
    "containerFile",
    "pushSpec",
    "ignition",
]
ActionType = Literal["Reboot", "None", "Reload", "Restart", "DaemonReload", "Drain", "Special"]
Status = Literal["added", "removed", "modified"]

# Ignition sections shown item by item; anything else in the config is shown whole.
_ITEMISED = {("storage", "files"), ("storage", "directories"), ("storage", "links")}
_MAX_TEXT_BYTES = 256 * 1024  # larger files are shown by digest: a diff nobody reads
_SHORT_HEX = 12
# Hidden content is compared by HMAC under a key that lives only in this process: equal
# content compares equal, and nothing printed or stored can be checked against a guess.
_FINGERPRINT_KEY = secrets.token_bytes(32)
SYSTEMD_DIR = "/etc/systemd/system"
LIVE_USER = "core"
"""The user whose SSH keys and password hash the node agent applies without a reboot."""


@dataclass(frozen=True)
class Action:
    """One node disruption action (MCO `NodeDisruptionPolicyStatusAction`)."""

    type: ActionType
    service: str | None = None

    def __str__(self) -> str:
        if self.type == "Special":
            return "reload crio.service (drain unless only safe registries.conf additions)"
        if self.service:
            return f"{self.type.lower()} {self.service}"
        return {"DaemonReload": "systemd daemon-reload"}.get(self.type, self.type.lower())


REBOOT = Action("Reboot")
NONE = Action("None")
_CRIO_RELOAD = Action("Reload", "crio.service")

DEFAULT_FILE_POLICIES: Mapping[str, tuple[Action, ...]] = {
    "/var/lib/kubelet/config.json": (NONE,),
    "/etc/machine-config-daemon/no-reboot/containers-gpg.pub": (_CRIO_RELOAD,),
    "/etc/containers/policy.json": (_CRIO_RELOAD,),
    "/etc/containers/registries.conf": (Action("Special"),),
    "/etc/containers/registries.d": (_CRIO_RELOAD,),
    "/etc/crio/policies": (_CRIO_RELOAD,),
    "/etc/nmstate/openshift": (NONE,),
    "/etc/pki/ca-trust/source/anchors/openshift-config-user-ca-bundle.crt": (
        Action("Restart", "coreos-update-ca-trust.service"),
        Action("Restart", "crio.service"),
    ),
    "/etc/kubernetes/credential-providers": (Action("Restart", "kubelet.service"),),
}
"""MCO's default file policies (reference `mco-semantics.md` §5)."""
DEFAULT_UNIT_POLICIES: Mapping[str, tuple[Action, ...]] = {}
"""MCO ships no unit policy that applies to an admin's units."""
DEFAULT_SSHKEY_POLICY: tuple[Action, ...] = (NONE,)


@dataclass(frozen=True)
class Item:
    """One diffable part of a rendered config."""

    kind: ItemKind
    name: str
    """What the diff header names: a host path (`/etc/chrony.conf`,
    `/etc/systemd/system/x.service`) or a key (`spec.kernelArguments`)."""
    text: str = ""
    """The body diffed line by line (decoded file content, unit text, one value a line)."""
    meta: tuple[tuple[str, str], ...] = ()
    """Attributes shown as header lines when they change (mode, owner, enabled, …)."""
    target: str | None = None
    """What a disruption policy matches: the absolute path, or the unit's name (for
    users: the user's name)."""
    hidden: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)
    """Content that must not be shown: (what, description, keyed fingerprint). Only
    "hidden", "changed" or "removed" and the description are ever printed."""


@dataclass(frozen=True)
class ItemDiff:
    old: Item | None
    new: Item | None

    @property
    def item(self) -> Item:
        found = self.new or self.old
        if found is None:
            raise ValueError("an ItemDiff needs an old or a new item")
        return found

    @property
    def status(self) -> Status:
        if self.old is None:
            return "added"
        return "removed" if self.new is None else "modified"

    @property
    def name(self) -> str:
        return self.item.name

    def lines(self, context: int = 3) -> list[str]:
        """This change as git-style unified diff lines (no trailing newlines)."""
        name = self.name
        out = [f"diff --rendered {name}"]
        old_meta = dict(self.old.meta) if self.old else {}
        new_meta = dict(self.new.meta) if self.new else {}
        if self.old is None:
            out += [f"new {self.item.kind} ({_meta_text(new_meta)})"]
        elif self.new is None:
            out += [f"deleted {self.item.kind} ({_meta_text(old_meta)})"]
        else:
            for key in sorted(set(old_meta) | set(new_meta)):
                before, after = old_meta.get(key, "(unset)"), new_meta.get(key, "(unset)")
                if before != after:
                    out.append(f"{key}: {before} → {after}")
        out += _hidden_lines(self.old, self.new)
        old_text = self.old.text if self.old else ""
        new_text = self.new.text if self.new else ""
        if old_text != new_text:
            out += _unified(
                old_text,
                new_text,
                "/dev/null" if self.old is None else name,
                "/dev/null" if self.new is None else name,
                context,
            )
        return out


def _hidden_lines(old: Item | None, new: Item | None) -> list[str]:
    """Hidden content as metadata: whether it is set, changed or removed, never what."""
    before = {k: (d, f) for k, d, f in old.hidden} if old else {}
    after = {k: (d, f) for k, d, f in new.hidden} if new else {}
    out = []
    for key in sorted(set(before) | set(after)):
        if key not in before:
            out.append(f"{key}: set, not shown ({after[key][0]})")
        elif key not in after:
            out.append(f"{key}: removed (was not shown)")
        elif before[key][1] != after[key][1]:
            desc = after[key][0]
            if before[key][0] != desc:
                desc = f"{before[key][0]} → {desc}"
            out.append(f"{key}: changed, not shown ({desc})")
    return out


def fingerprint(data: bytes) -> str:
    """A keyed fingerprint of secret content: compares equal within this process only."""
    return hmac.new(_FINGERPRINT_KEY, data, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Disruption:
    """What a change needs on a node, as MCO's default policies classify it."""

    reboot: bool
    actions: tuple[Action, ...] = ()
    """Without a reboot: the actions to run (empty: nothing at all)."""
    reasons: tuple[str, ...] = field(default=())
    """Why, one line per changed item that decided it."""
    causes: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    """The same as (outcome, why) pairs, e.g. ("reboot", "no disruption policy for
    /etc/motd"): what `one_line` groups."""

    @property
    def summary(self) -> str:
        if self.reboot:
            return "reboot"
        if not self.actions:
            return "none"
        return ", ".join(str(a) for a in self.actions)

    def one_line(self) -> str:
        """Every reason in one line, each cause once: `reboot (no disruption policy for
        /etc/a, /etc/b; kernel arguments changed)`."""
        grouped: dict[tuple[str, str], list[str]] = {}
        for outcome, why in self.causes:
            head, sep, subject = why.partition(" for ")
            key = (outcome, head if sep else why)
            subjects = grouped.setdefault(key, [])
            if sep and subject not in subjects:
                subjects.append(subject)
        parts: dict[str, list[str]] = {}
        for (outcome, why), subjects in grouped.items():
            parts.setdefault(outcome, []).append(
                f"{why} for {', '.join(subjects)}" if subjects else why
            )
        return "; ".join(f"{o} ({'; '.join(dict.fromkeys(w))})" for o, w in parts.items())

    def to_json(self) -> dict[str, Any]:
        return {
            "reboot": self.reboot,
            "summary": self.summary,
            "actions": [
                {"type": a.type, **({"service": a.service} if a.service else {})}
                for a in self.actions
            ],
            "reasons": list(self.reasons),
        }


# --- rendered config → items -----------------------------------------------------------------


def config_items(
    spec: Mapping[str, Any] | None,
    os_config: model.MachineOSConfig | None = None,
    architecture: str = "amd64",
) -> dict[str, Item]:
    """Every diffable part of a rendered spec (and the pool's MachineOSConfig), by key."""
    items: dict[str, Item] = {}
    if spec is None:
        return items

    def add(key: str, item: Item) -> None:
        items[key] = item

    config: Mapping[str, Any] = spec.get("config") or {}
    storage = config.get("storage") or {}
    meta: tuple[tuple[str, str], ...]
    for node in storage.get("files", ()):
        add(f"node:{node['path']}", _file_item(node))
    for node in storage.get("directories", ()):
        path = node["path"]
        meta = (("mode", _mode(node.get("mode"), 0o755)), ("owner", _owner(node)))
        add(f"node:{path}", Item("directory", path.rstrip("/") + "/", "", meta, path))
    for node in storage.get("links", ()):
        path = node["path"]
        meta = (
            ("owner", _owner(node)),
            ("hard", _scalar(bool(node.get("hard")))),
            ("overwrite", _scalar(node.get("overwrite"))),
        )
        add(f"node:{path}", Item("link", path, f"-> {node.get('target', '')}\n", meta, path))
    for unit in (config.get("systemd") or {}).get("units", ()):
        name = unit["name"]
        meta = tuple((k, _scalar(unit[k])) for k in ("enabled", "mask") if unit.get(k) is not None)
        path = f"{SYSTEMD_DIR}/{name}"
        add(f"unit:{name}", Item("unit", path, unit.get("contents") or "", meta, name))
        for dropin in unit.get("dropins", ()):
            add(
                f"dropin:{name}/{dropin['name']}",
                Item("dropin", f"{path}.d/{dropin['name']}", dropin.get("contents") or "", (),
                     name),
            )  # fmt: skip
    for user in (config.get("passwd") or {}).get("users", ()):
        name = user["name"]
        key = f"passwd.users[{name}]"
        keys = user.get("sshAuthorizedKeys") or []
        if keys:
            add(f"sshkeys:{name}", Item("sshKeys", f"{key}.sshAuthorizedKeys", _lines(keys),
                                        (), name))  # fmt: skip
        if user.get("passwordHash") is not None:
            # Never shown, not even by a plain digest: compared by a keyed fingerprint.
            secret = fingerprint(str(user["passwordHash"]).encode())
            hidden_hash = (("passwordHash", "a password hash", secret),)
            add(f"password:{name}",
                Item("passwordHash", f"{key}.passwordHash", "", (), name, hidden_hash))  # fmt: skip
        rest = {
            k: v for k, v in user.items() if k not in ("name", "sshAuthorizedKeys", "passwordHash")
        }
        if rest:
            add(f"user:{name}", Item("user", key, _pretty(rest), (), name))
    others, hidden = _other_ignition(config)
    if others:
        sections = ", ".join(f"{a}.{b}" for a, body in sorted(others.items()) for b in sorted(body))
        add("ignition", Item("ignition", f"spec.config ({sections})", _pretty(others), (), None,
                             hidden))  # fmt: skip
    add("kargs", Item("kernelArguments", "spec.kernelArguments",
                      _lines(spec.get("kernelArguments"))))  # fmt: skip
    add("extensions", Item("extensions", "spec.extensions", _lines(spec.get("extensions"))))
    add("kernelType", Item("kernelType", "spec.kernelType",
                           _lines([spec.get("kernelType", "default")])))  # fmt: skip
    add("fips", Item("fips", "spec.fips", _lines([_scalar(bool(spec.get("fips")))])))
    add("baseImage", Item("baseImage", "spec.osImageURL", _lines([spec.get("osImageURL") or ""])))
    if spec.get("baseOSExtensionsContainerImage"):
        image = spec["baseOSExtensionsContainerImage"]
        add("extensionsImage", Item("extensionsImage", "spec.baseOSExtensionsContainerImage",
                                    _lines([image])))  # fmt: skip
    if os_config is not None:
        cf = containerfile_for(os_config, architecture)
        if cf is not None:
            meta = (("arch", str(cf.containerfile_arch)),)
            add("containerFile", Item("containerFile", "MachineOSConfig spec.containerFile",
                                      _ensure_nl(cf.content), meta))  # fmt: skip
        add("pushSpec", Item("pushSpec", "MachineOSConfig spec.renderedImagePushSpec",
                             _lines([os_config.spec.rendered_image_push_spec])))  # fmt: skip
    # Empty lists are no content: "no kernel arguments" and "kargs: []" render alike.
    return {k: v for k, v in items.items() if v.text or v.meta or v.hidden or v.kind in _ALWAYS}


_ALWAYS = {"file", "directory", "link", "unit", "dropin", "kernelType", "fips", "baseImage"}


def diff_items(old: Mapping[str, Item], new: Mapping[str, Item]) -> list[ItemDiff]:
    """The items that differ, in a reading order: files by path, then units, then the rest."""
    out = [
        ItemDiff(old.get(key), new.get(key))
        for key in set(old) | set(new)
        if old.get(key) != new.get(key)
    ]
    order = {kind: i for i, kind in enumerate(get_args(ItemKind))}
    return sorted(out, key=lambda d: (_group(d.item.kind), order[d.item.kind], d.name))


def _group(kind: ItemKind) -> int:
    return 0 if kind in ("file", "directory", "link") else 1 if kind in ("unit", "dropin") else 2


def render(diffs: Iterable[ItemDiff], context: int = 3) -> str:
    """All changes as one unified diff text (empty when nothing changed)."""
    lines = [line for d in diffs for line in d.lines(context)]
    return "\n".join(lines) + "\n" if lines else ""


# --- disruption ------------------------------------------------------------------------------

_ALWAYS_REBOOT: Mapping[str, str] = {
    "kernelArguments": "kernel arguments changed",
    "extensions": "extensions changed",
    "kernelType": "kernel type changed",
    "fips": "FIPS mode changed",
    "baseImage": "base image changed",
    "extensionsImage": "extensions image changed",
    "containerFile": "Containerfile content changed (the OS image changes)",
    "ignition": "Ignition sections without a disruption policy changed",
}


def classify(
    diffs: Sequence[ItemDiff],
    file_policies: Mapping[str, tuple[Action, ...]] = DEFAULT_FILE_POLICIES,
    unit_policies: Mapping[str, tuple[Action, ...]] = DEFAULT_UNIT_POLICIES,
    sshkey_policy: tuple[Action, ...] = DEFAULT_SSHKEY_POLICY,
) -> Disruption:
    """What applying `diffs` needs on a node, by MCO's rules (see the module docstring)."""
    causes: list[tuple[str, str, str]] = []  # (item, outcome, why)
    actions: list[Action] = []
    for d in diffs:
        item = d.item
        if item.kind in _ALWAYS_REBOOT:
            causes.append((item.name, "reboot", _ALWAYS_REBOOT[item.kind]))
        elif item.kind == "file":
            found = closest_file_policy(item.target or "", file_policies)
            if found is None:
                causes.append((item.name, "reboot", f"no disruption policy for {item.target}"))
            else:
                policy, acts = found
                actions += acts
                what = ", ".join(str(a) for a in acts)
                causes.append((item.name, what, f"policy for {policy}"))
        elif item.kind in ("directory", "link"):
            causes.append((item.name, "reboot", f"no disruption policy for {item.kind}s"))
        elif item.kind in ("unit", "dropin"):
            unit_acts = unit_policies.get(item.target or "")
            if unit_acts is None:
                causes.append((item.name, "reboot", f"no disruption policy for {item.target}"))
            else:
                actions += unit_acts
                what = ", ".join(str(a) for a in unit_acts)
                causes.append((item.name, what, f"policy for {item.target}"))
        elif item.kind in ("sshKeys", "passwordHash", "user"):
            actions += sshkey_policy
            what = ", ".join(str(a) for a in sshkey_policy)
            causes.append((item.name, what, "sshkey policy"))
        elif item.kind == "pushSpec":
            causes.append((item.name, "none", "where the image is pushed, not what it is"))
    reboot = any(outcome == "reboot" for _, outcome, _ in causes)
    if reboot:
        causes = [c for c in causes if c[1] == "reboot"]
    reasons = tuple(f"{name}: {outcome} ({why})" for name, outcome, why in causes)
    pairs = tuple((outcome, why) for _, outcome, why in causes)
    if reboot:
        return Disruption(True, (), reasons, pairs)
    # MCO drops "None" next to real actions, and keeps one "None" when that is all.
    real = tuple(dict.fromkeys(a for a in actions if a.type != "None"))
    return Disruption(False, real, reasons, pairs)


# --- what our node agent does ----------------------------------------------------------------


@dataclass(frozen=True)
class NodeAction:
    """What our node agent does with a change: a new image (`bootc switch` and a reboot)
    or only live settings applied on the running node."""

    reboot: bool
    live: tuple[str, ...] = ()
    """Without a reboot: what is applied live (e.g. `SSH keys`, `password hash`)."""

    @property
    def summary(self) -> str:
        if self.reboot:
            return "reboot"
        if self.live:
            return "no reboot"
        return "no node change"

    @property
    def detail(self) -> str:
        if self.reboot:
            return "new image: bootc switch and a reboot, node by node"
        if self.live:
            return f"{' and '.join(self.live)} applied live by the node agent, no reboot"
        return "nothing changes on the nodes"

    def to_json(self) -> dict[str, Any]:
        return {"reboot": self.reboot, "summary": self.summary, "live": list(self.live)}


_LIVE_KINDS: Mapping[str, str] = {"sshKeys": "SSH keys", "passwordHash": "password hash"}


def node_action(diffs: Sequence[ItemDiff]) -> NodeAction:
    """Core's SSH keys and password hash are live settings (the image does not change for
    them); anything else is a new image the agent applies with `bootc switch` and a
    reboot. No diff at all still means new inputs, so a new image: a reboot."""
    live = [
        _LIVE_KINDS[d.item.kind]
        for d in diffs
        if d.item.kind in _LIVE_KINDS and d.item.target == LIVE_USER
    ]
    if not diffs or len(live) != len(diffs):
        return NodeAction(True)
    return NodeAction(False, tuple(v for v in _LIVE_KINDS.values() if v in live))


def closest_file_policy(
    path: str, policies: Mapping[str, tuple[Action, ...]]
) -> tuple[str, tuple[Action, ...]] | None:
    """The policy for `path` itself or its closest parent directory (longest match)."""
    clean = posixpath.normpath(path)
    best: tuple[str, tuple[Action, ...]] | None = None
    for policy_path, acts in policies.items():
        root = posixpath.normpath(policy_path)
        if (clean == root or clean.startswith(root.rstrip("/") + "/")) and (
            best is None or len(root) > len(best[0])
        ):
            best = (root, acts)
    return best


# --- helpers ---------------------------------------------------------------------------------


def _file_item(node: Mapping[str, Any]) -> Item:
    path = node["path"]
    meta = [
        ("mode", _mode(node.get("mode"), 0o644)),
        ("owner", _owner(node)),
        ("overwrite", _scalar(node.get("overwrite", True))),
    ]
    try:
        data = contents.decode_resource(dict(node.get("contents") or {}))
    except contents.ContentsError as exc:  # load refuses these; say so rather than crash
        return Item("file", path, f"<undecodable contents: {exc.problem}>\n", tuple(meta), path)
    why = _secret_reason(path, node.get("mode"), data)
    if why:
        secret = (("content", f"{why}, {len(data)} bytes", fingerprint(data)),)
        return Item("file", path, "", tuple(meta), path, secret)
    return Item("file", path, _body(data), tuple(meta), path)


# Files that hold credentials by convention: pull secrets and registry auth files
# (containers-auth.json(5); kubelet's config.json, MCO's KubeletAuthFile; bootc's
# /etc/ostree/auth.json) and private keys.
_SECRET_NAMES = ("auth.json", ".dockercfg", "credentials")
_SECRET_PATHS = ("/var/lib/kubelet/config.json",)
_SECRET_SUFFIXES = (".key", ".p12", ".pfx", ".keytab")


def _secret_reason(path: str, mode: Any, data: bytes) -> str | None:
    """Why a file's content must not go into a plan (a PR comment), if it must not."""
    name = posixpath.basename(path)
    if (
        path in _SECRET_PATHS
        or name in _SECRET_NAMES
        or name.endswith(_SECRET_SUFFIXES)
        or (name == "config.json" and "/.docker/" in path)
    ):
        return "a credentials file"
    if b"PRIVATE KEY-----" in data:
        return "holds a private key"
    if isinstance(mode, int) and not mode & 0o004:
        return f"mode {mode:04o}: not readable by others"
    return None


def _body(data: bytes) -> str:
    if len(data) <= _MAX_TEXT_BYTES and b"\x00" not in data:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    digest = hashlib.sha256(data).hexdigest()[:_SHORT_HEX]
    return f"<binary or large content: {len(data)} bytes, sha256 {digest}…>\n"


def _scalar(value: Any) -> str:
    """A metadata value as YAML writes it: `true`, `null`, `0644`, `root:root`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _mode(mode: Any, default: int) -> str:
    return f"{mode if isinstance(mode, int) else default:04o}"


def _owner(node: Mapping[str, Any]) -> str:
    def who(entry: Any) -> str:
        if not isinstance(entry, Mapping):
            return "root"
        if entry.get("name"):
            return str(entry["name"])
        return str(entry["id"]) if entry.get("id") is not None else "root"

    return f"{who(node.get('user'))}:{who(node.get('group'))}"


def _meta_text(meta: Mapping[str, str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(meta.items())) or "no attributes"


def _lines(values: Sequence[Any] | None) -> str:
    return "".join(f"{v}\n" for v in values or ())


def _ensure_nl(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def _pretty(value: Any) -> str:
    # YAML, as the admin wrote it, one key a line for a line-wise diff.
    plain = json.loads(canonical.canonical_json(value))
    return str(yaml.safe_dump(plain, sort_keys=True, default_flow_style=False, width=88))


def _other_ignition(
    config: Mapping[str, Any],
) -> tuple[dict[str, Any], tuple[tuple[str, str, str], ...]]:
    """Ignition content outside files, directories, links, units and users, and the
    secrets taken out of it (LUKS key files)."""
    out: dict[str, Any] = {}
    hidden: list[tuple[str, str, str]] = []
    for section, body in config.items():
        if section == "ignition" or not isinstance(body, Mapping):
            continue
        for key, value in body.items():
            if (section, key) in _ITEMISED or (section, key) in (
                ("systemd", "units"),
                ("passwd", "users"),
            ):
                continue
            if (section, key) == ("storage", "luks") and isinstance(value, list):
                volumes = []
                for i, volume in enumerate(value):
                    shown, secret = _redact_luks(volume)
                    volumes.append(shown)
                    if secret is not None:
                        name = volume.get("name", i) if isinstance(volume, Mapping) else i
                        hidden.append((f"storage.luks[{name}].keyFile", "a LUKS key", secret))
                out.setdefault(section, {})[key] = volumes
                continue
            out.setdefault(section, {})[key] = value
    return out, tuple(hidden)


def _redact_luks(volume: Any) -> tuple[Any, str | None]:
    """A LUKS volume without its key file (the key never goes into a PR comment), and
    the key file's keyed fingerprint."""
    if not isinstance(volume, Mapping) or not volume.get("keyFile"):
        return volume, None
    secret = fingerprint(canonical.canonical_json(volume["keyFile"]))
    return {**volume, "keyFile": "(not shown)"}, secret


def _unified(old: str, new: str, a: str, b: str, context: int) -> list[str]:
    lines = list(
        difflib.unified_diff(
            old.splitlines(), new.splitlines(), fromfile=a, tofile=b, n=context, lineterm=""
        )
    )
    if not lines:  # the texts differ in their final newline only
        return [f"--- {a}", f"+++ {b}", "\\ only the newline at the end of the file changed"]
    return lines
