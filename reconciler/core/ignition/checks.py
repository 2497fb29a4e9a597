"""Ignition checks: MCO's refusals and Ignition's own validation of one config.

Stage: part of loading, after validation. Input: one MachineConfig's validated Ignition
config as a dict (and its kernel arguments). Output: (path, problem, fix) tuples, the
path inside `spec.config`; loading turns them into problems or warnings with file and line.

MCO's refusals come from `controller/common/reconcile.go` `isConfigReconcilable` and
`helpers.go` `ValidateIgnition`/`ValidateMachineConfig`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from reconciler.core import contents

UNIT_SUFFIXES = (
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".path",
    ".mount",
    ".automount",
    ".swap",
    ".slice",
    ".scope",
    ".device",
)
MCD_FORCE_FILE = "/run/machine-config-daemon-force"
MAX_ID = 2**32 - 1
"""uid_t and gid_t are 32 bits; (uid_t)-1 means "no change" to chown(2)."""


# OpenSSH key types (sshd(8) AUTHORIZED_KEYS FILE FORMAT), certificates included.
_SSH_KEY_TYPE = re.compile(
    r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9-]+@openssh\.com)"
)
_FOLD_FIX = "start each item on its own line with '- ' at the same indent as the first"


def _ssh_key_problem(key: str) -> tuple[str, str] | None:
    """Valid YAML that means something else: a list item indented one space too few is
    folded into the item before it, so several keys become one entry: sshd uses the
    first, and the admins the others name are locked out."""
    keys = max(
        ([t for t in line.split() if _SSH_KEY_TYPE.match(t)] for line in key.splitlines()),
        key=len,
        default=[],
    )
    if len(keys) > 1:
        folded = " (a list item folded into this one)" if " - " in key else ""
        return (f"one entry holds {len(keys)} keys{folded}; sshd reads the first and takes "
                "the others as its comment, so they let nobody in",
                f"write one key per entry: {_FOLD_FIX}")  # fmt: skip
    if "\n" in key.strip():
        return ("an entry spans several lines (a block scalar?): one key per entry, so "
                "each can be reviewed, diffed and removed on its own",
                f"write one key per entry: {_FOLD_FIX}")  # fmt: skip
    return None


def karg_problem(karg: str) -> tuple[str, str] | None:
    """A kernel argument that is valid YAML but not what was meant. Several
    space-separated arguments in one entry are fine (MCO splits them); a folded list
    item, a list written as a string, a tab or newline, or `key = value` are not."""
    shown = repr(karg) if len(karg) <= 80 else repr(karg[:77] + "...")
    if not karg.strip():
        return f"{shown} is not a kernel argument", "remove the empty entry"
    if "\n" in karg.strip() or re.search(r"[\t\r\v\f]", karg):
        return (f"{shown} holds a newline or tab: the kernel command line is one line",
                "write one argument per entry, or space-separated arguments")  # fmt: skip
    if re.search(r"[\x00-\x1f\x7f]", karg):
        return (f"{shown} holds a control character, which no kernel command line can",
                "remove it")  # fmt: skip
    tokens = karg.split()
    if "-" in tokens[1:]:
        return (f"{shown} holds ' - ': a list item folded into the argument before it",
                _FOLD_FIX)  # fmt: skip
    if karg.strip().startswith("[") and karg.strip().endswith("]"):
        return (f"{shown} is a list written as one string",
                "write a YAML list without quotes: kernelArguments: [a, b]")  # fmt: skip
    if any(t.startswith("=") for t in tokens):
        return (f"{shown} has a space before '=': the kernel reads separate arguments",
                "write key=value without spaces")  # fmt: skip
    return None


def check_ignition(ign: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """MCO's refusals and Ignition's own validation, as (path, problem, fix)."""
    storage = ign.get("storage", {})
    passwd = ign.get("passwd", {})
    if passwd.get("groups"):
        yield (
            ("passwd", "groups"),
            "ignition Passwd Groups section is not supported",
            "create groups with a sysusers.d file under /usr/lib/sysusers.d/",
        )
    seen_users: set[str] = set()
    for i, user in enumerate(passwd.get("users", [])):
        if user["name"] in seen_users:
            yield (
                ("passwd", "users", i, "name"),
                f"user {user['name']!r} appears twice",
                "merge the two entries",
            )
        seen_users.add(user["name"])
        if user["name"] != "core":
            yield (
                ("passwd", "users", i, "name"),
                f"non-core user {user['name']!r} is not supported",
                "only core's sshAuthorizedKeys and passwordHash can be managed; create "
                "other users with sysusers.d",
            )
            continue
        extra = sorted(set(user) - {"name", "sshAuthorizedKeys", "passwordHash"})
        for key in extra:
            yield (
                ("passwd", "users", i, key),
                f"{key} of user core is not supported",
                "only sshAuthorizedKeys and passwordHash can be set for core",
            )
        if not user.get("sshAuthorizedKeys") and "passwordHash" not in user:
            yield (
                ("passwd", "users", i),
                "user core has no sshAuthorizedKeys and no passwordHash",
                "add at least one key, or remove the entry",
            )
        for j, key in enumerate(user.get("sshAuthorizedKeys") or []):
            found = _ssh_key_problem(key)
            if found:
                yield ("passwd", "users", i, "sshAuthorizedKeys", j), *found
    if ign.get("kernelArguments"):
        yield (
            ("kernelArguments",),
            "ignition kargs section is not supported",
            "use spec.kernelArguments of the MachineConfig instead",
        )
    # Go writes `replace: {verification: {}}` and `merge: []`: without a source that
    # is no reference (Ignition fetches only a set source).
    refs = ign.get("ignition", {}).get("config") or {}
    sources = [r.get("source") for r in [refs.get("replace") or {}, *refs.get("merge", [])]]
    if any(sources):
        yield (
            ("ignition", "config"),
            "remote config merge/replace is not supported",
            "inline the referenced config into this MachineConfig",
        )
    seen_paths: dict[str, str] = {}
    for section in ("files", "directories", "links"):
        for i, node in enumerate(storage.get(section, [])):
            where: tuple[str | int, ...] = ("storage", section, i)
            path = node["path"]
            bad = path_problem(path)
            if bad:
                yield (*where, "path"), bad[0], bad[1]
            if path in seen_paths:
                yield (
                    (*where, "path"),
                    f"{path!r} appears twice (also {seen_paths[path]})",
                    "keep one entry per path",
                )
            seen_paths[path] = f"{section}[{i}]"
            for owner in ("user", "group"):
                number = (node.get(owner) or {}).get("id")
                if number is not None and not 0 <= number < MAX_ID:
                    yield (
                        (*where, owner, "id"),
                        f"{owner} id {number} is not a Linux {owner} id",
                        f"use 0 to {MAX_ID - 1}, or give the {owner} by name",
                    )
            mode = node.get("mode")
            if mode is not None and not 0 <= mode <= 0o777:
                yield (
                    (*where, "mode"),
                    f"invalid mode {mode} ({oct(mode)}) for {path}, cannot exceed 0777",
                    "setuid, setgid and sticky bits are refused (MCO, BZ 2038240); "
                    "use e.g. 420 (0644) or 493 (0755)",
                )
            if section == "files":
                yield from _check_file(where, node)
            if section == "links" and not node.get("target"):
                yield (*where, "target"), "link has no target", "add target: /path/it/points/to"
    seen_units: set[str] = set()
    for i, unit in enumerate(ign.get("systemd", {}).get("units", [])):
        name = unit["name"]
        if not name.endswith(UNIT_SUFFIXES) or "/" in name:
            yield (
                ("systemd", "units", i, "name"),
                f"invalid unit name {name!r}",
                "name it like 'chronyd.service' (a unit type suffix, no '/')",
            )
        if name in seen_units:
            yield (
                ("systemd", "units", i, "name"),
                f"unit {name!r} appears twice",
                "merge the two entries",
            )
        seen_units.add(name)
        seen_dropins: set[str] = set()
        for j, dropin in enumerate(unit.get("dropins", [])):
            dname = dropin["name"]
            if not dname.endswith(".conf") or "/" in dname:
                yield (
                    ("systemd", "units", i, "dropins", j, "name"),
                    f"invalid dropin name {dname!r}",
                    "name it like '10-override.conf'",
                )
            if dname in seen_dropins:
                yield (
                    ("systemd", "units", i, "dropins", j, "name"),
                    f"dropin {dname!r} appears twice",
                    "merge the two entries",
                )
            seen_dropins.add(dname)


def install_time_only(
    ign: dict[str, Any],
) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """Storage an image cannot set up, as warnings: MCO accepts these sections (a
    Tang-bound LUKS volume is a documented install-time MachineConfig; MCO's
    `isConfigReconcilable` never looks at luks, and refuses disk, filesystem and RAID
    changes on a running pool only), and the Ignition that provisions a new machine
    applies them. The rendered config keeps them; the image carries nothing of them."""
    storage = ign.get("storage", {})
    for section, what in (
        ("luks", "LUKS volumes"),
        ("disks", "partitions"),
        ("raid", "RAID arrays"),
        ("filesystems", "filesystems"),
    ):
        if storage.get(section):
            yield (
                ("storage", section),
                f"{what} are set up at install time only (Ignition on a machine's first "
                "boot); an image cannot create or change them on a running machine",
                "keep it for new machines; change existing machines by reinstalling them",
            )


def _check_file(
    where: tuple[str | int, ...], node: dict[str, Any]
) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    path = node["path"]
    if node.get("append"):
        yield (
            (*where, "append"),
            f"ignition file {path} includes append",
            "write the whole file with contents.source; append is not idempotent",
        )
    if path == MCD_FORCE_FILE:
        yield (*where, "path"), f"cannot create {path} via Ignition", "remove this file"
    resource = node.get("contents")
    if resource:
        if resource.get("source") == "":
            yield (
                (*where, "contents", "source"),
                "source is empty",
                "omit source for an empty file, or write 'data:,'",
            )
            return
        try:
            contents.decode_resource(resource)
        except contents.ContentsError as exc:
            yield (*where, "contents", *exc.field.split(".")), exc.problem, exc.fix


def path_problem(path: str) -> tuple[str, str] | None:
    if not path.startswith("/"):
        return f"{path!r} is not absolute", f"write '/{path.lstrip('./')}'"
    parts = path.split("/")[1:]
    if path == "/" or any(p in ("", ".", "..") for p in parts):
        clean = "/" + "/".join(p for p in parts if p not in ("", ".", ".."))
        return (
            f"{path!r} has an empty, '.' or '..' component",
            f"write the plain absolute path, e.g. {clean!r}",
        )
    return None


def normalise_compression(ign: dict[str, Any]) -> None:
    """butane#332 / MCO's workaround: a file that sets contents.source without
    compression gets compression "" so it clears an earlier gzip in the merge. Done only
    where the source is set, so a later mode-only override cannot pair an old gzip
    source with "" (MCO sets it on every file; we deliberately do not)."""
    for node in ign.get("storage", {}).get("files", []):
        resource = node.get("contents")
        if resource and "source" in resource and "compression" not in resource:
            resource["compression"] = ""
