"""Ignition spec 2.2 → 3.x, the way MCO does it (ign-converter `Translate2to3` with the
`root` filesystem mapped to `/`; MCO `controller/common/ignition_converter.go`).

Stage: part of loading, before validation. Input: a raw 2.2 config dict. Output: the
same config as a 3.5-shaped dict, duplicates removed as MCO removes them first.
"""

from __future__ import annotations

from typing import Any

from reconciler.core.ignition.models import INTERNAL_VERSION
from reconciler.errors import ReconcilerError


class ConversionError(ReconcilerError):
    """A 2.2 config that cannot be converted; `field` is the dotted path of the culprit."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem
        self.fix = fix


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def dedupe_2_2(cfg: dict[str, Any]) -> dict[str, Any]:
    """MCO's `removeIgnDuplicateFilesUnitsUsers` (helpers.go), run before converting a
    2.2 config, since spec 3 refuses duplicates. Files and units are walked from last to
    first and the first seen of each path or name is kept, so the last one wins and the
    result is in reverse order (as MCO's). A dropped unit gives its dropins to the
    kept one where the name is new. Users (core only) become one: the last entry, with
    every entry's SSH keys (last entry first), duplicates removed."""
    storage = dict(cfg.get("storage") or {})
    seen_paths: set[Any] = set()
    files = []
    for entry in reversed(storage.get("files") or []):
        if isinstance(entry, dict) and entry.get("path") in seen_paths:
            continue
        seen_paths.add(entry.get("path") if isinstance(entry, dict) else None)
        files.append(entry)
    kept: dict[Any, dict[str, Any]] = {}
    units: list[Any] = []
    for unit in reversed((cfg.get("systemd") or {}).get("units") or []):
        if not isinstance(unit, dict):
            units.append(unit)
            continue
        first = kept.get(unit.get("name"))
        if first is None:
            kept[unit.get("name")] = first = dict(unit)
            units.append(first)
            continue
        names = {d.get("name") for d in first.get("dropins") or [] if isinstance(d, dict)}
        extra = [d for d in unit.get("dropins") or [] if d.get("name") not in names]
        if extra:
            first["dropins"] = [*(first.get("dropins") or []), *extra]
    out = dict(cfg)
    if files:
        out["storage"] = {**storage, "files": files}
    if units:
        out["systemd"] = {**(cfg.get("systemd") or {}), "units": units}
    users = (cfg.get("passwd") or {}).get("users") or []
    if users:
        for i, user in enumerate(users):
            if not isinstance(user, dict):
                raise ConversionError(f"passwd.users[{i}]", "a user is not an object", "fix it")
            if user.get("name") != "core":
                raise ConversionError(
                    f"passwd.users[{i}].name",
                    f"unexpected user {user.get('name')!r}: only core is supported",
                    "manage only core's sshAuthorizedKeys and passwordHash; create other "
                    "users with sysusers.d",
                )
        keys = [k for user in reversed(users) for k in user.get("sshAuthorizedKeys") or []]
        last = {**users[-1], "sshAuthorizedKeys": list(dict.fromkeys(keys))}
        if not last["sshAuthorizedKeys"] and "sshAuthorizedKeys" not in users[-1]:
            del last["sshAuthorizedKeys"]
        out["passwd"] = {**cfg["passwd"], "users": [last]}
    return out


def convert_2_2(cfg: dict[str, Any]) -> dict[str, Any]:
    """Convert an Ignition 2.2 config dict into a 3.5-shaped dict, or raise."""
    out: dict[str, Any] = {}
    for i, user in enumerate((cfg.get("passwd") or {}).get("users") or []):
        if isinstance(user, dict) and "create" in user:
            raise ConversionError(
                f"passwd.users[{i}].create",
                "the 2.x 'create' block is not converted",
                "only core's sshAuthorizedKeys and passwordHash are supported; drop 'create'",
            )
    cfg = dedupe_2_2(cfg)
    # Keys of no 2.2 section are kept for the unused-key report (Ignition warns).
    known = ("ignition", "storage", "systemd", "passwd", "networkd")
    out.update({k: v for k, v in cfg.items() if k not in known})
    ign = dict(cfg.get("ignition") or {})
    ign["version"] = INTERNAL_VERSION
    refs = ign.pop("config", None)
    if refs:
        if refs.get("append"):
            refs = {**refs, "merge": refs["append"]}
            del refs["append"]
        ign["config"] = refs
    out["ignition"] = ign
    if (cfg.get("networkd") or {}).get("units"):
        raise ConversionError(
            "networkd.units",
            "networkd units from Ignition 2.x are not converted",
            "write them as files under /etc/systemd/network/ in a 3.x config",
        )
    storage = cfg.get("storage") or {}
    new_storage: dict[str, Any] = {}
    for key in storage:
        if key not in ("files", "directories", "links") and storage[key]:
            new_storage[key] = storage[key]  # install-time sections, or unused keys
    for kind in ("files", "directories", "links"):
        entries = []
        for i, raw_entry in enumerate(storage.get(kind) or []):
            entry = dict(raw_entry)
            fs = entry.pop("filesystem", "root")
            if fs != "root":
                raise ConversionError(
                    f"storage.{kind}[{i}].filesystem",
                    f"{fs!r} is not the root filesystem",
                    "only filesystem 'root' converts to Ignition 3 (MCO maps it to '/')",
                )
            if kind == "files" and "append" in entry:
                append = entry.pop("append")
                if append:
                    entry["append"] = [entry.pop("contents", {})]
            entries.append(entry)
        if entries:
            new_storage[kind] = entries
    if new_storage:
        out["storage"] = new_storage
    units = []
    for raw_unit in (cfg.get("systemd") or {}).get("units") or []:
        unit = dict(raw_unit)
        if "enable" in unit:
            enable = unit.pop("enable")
            unit.setdefault("enabled", enable)
        units.append(unit)
    if units:
        out["systemd"] = {**(cfg.get("systemd") or {}), "units": units}
    passwd = cfg.get("passwd") or {}
    if passwd:
        users = [dict(user) for user in passwd.get("users") or []]
        out["passwd"] = _drop_none({"users": users or None, "groups": passwd.get("groups")})
    return out
