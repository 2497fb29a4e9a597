"""Ignition config spec 3.5 as strict pydantic models, and the 2.2 → 3 conversion.

Stage: part of loading. Input: the `spec.config` object of a MachineConfig (a plain
JSON-like dict). Output: the same config as a 3.5-shaped dict whose every key has been
checked against the spec, ready for the field-level merge in `merge.py`.

The models validate; the merge works on the validated dicts. That keeps Ignition's
"a pointer field is replaced only if the child sets it" rule simple (a key present in
the child dict replaces the parent's) and avoids dumping models on the hot path.
Shapes follow coreos/ignition `config/v3_5/types/schema.go`; fields Ignition added in
3.1–3.5 are accepted whatever `ignition.version` says, as MCO parses every 3.x config
into 3.5 (`IgnParseWrapper`). The models refuse unknown keys; loading removes them
first (`unused.py`: warnings, as Ignition gives, except a likely typo such as
`contens`, an error), so the models only ever see keys of the spec.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from reconciler.errors import ReconcilerError

INTERNAL_VERSION = "3.5.0"
SUPPORTED_3X = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0")


class _Ign(BaseModel):
    model_config = ConfigDict(
        strict=True,
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )


class HTTPHeader(_Ign):
    name: str
    """Header name; the merge key."""
    value: str | None = None
    """Header value; null in a later config removes the header."""


class Verification(_Ign):
    hash: str | None = None
    """`sha512-<hex>` or `sha256-<hex>` of the (decompressed) contents."""


class Resource(_Ign):
    source: str | None = None
    """Where the contents come from. Only `data:` URLs are supported (as MCO)."""
    compression: str | None = None
    """`gzip` or empty for none."""
    http_headers: list[HTTPHeader] | None = None
    verification: Verification | None = None


class NodeUser(_Ign):
    id: int | None = None
    name: str | None = None


class NodeGroup(_Ign):
    id: int | None = None
    name: str | None = None


class File(_Ign):
    path: str
    """Absolute path of the file on the machine; the merge key shared with links and
    directories."""
    overwrite: bool | None = None
    user: NodeUser | None = None
    group: NodeGroup | None = None
    contents: Resource | None = None
    append: list[Resource] | None = None
    """Refused, as MCO refuses it."""
    mode: int | None = None
    """Permission bits as a decimal integer (420 is 0644). Above 0777 is refused."""


class Directory(_Ign):
    path: str
    overwrite: bool | None = None
    user: NodeUser | None = None
    group: NodeGroup | None = None
    mode: int | None = None


class Link(_Ign):
    path: str
    overwrite: bool | None = None
    user: NodeUser | None = None
    group: NodeGroup | None = None
    hard: bool | None = None
    target: str | None = None


class Storage(_Ign):
    files: list[File] | None = None
    directories: list[Directory] | None = None
    links: list[Link] | None = None
    disks: list[dict[str, Any]] | None = None
    """Install time only (a warning): kept in the rendered config, nothing in the image."""
    filesystems: list[dict[str, Any]] | None = None
    """Install time only (a warning): kept in the rendered config, nothing in the image."""
    raid: list[dict[str, Any]] | None = None
    """Install time only (a warning): kept in the rendered config, nothing in the image."""
    luks: list[dict[str, Any]] | None = None
    """Install time only (a warning): kept in the rendered config, nothing in the image."""


class Dropin(_Ign):
    name: str
    """File name of the dropin, e.g. `10-limits.conf`; the merge key within a unit."""
    contents: str | None = None


class Unit(_Ign):
    name: str
    """Unit name, e.g. `chronyd.service`; the merge key."""
    enabled: bool | None = None
    mask: bool | None = None
    contents: str | None = None
    dropins: list[Dropin] | None = None


class Systemd(_Ign):
    units: list[Unit] | None = None


class PasswdUser(_Ign):
    name: str
    ssh_authorized_keys: list[str] | None = None
    """Public keys for the user; merged as an ordered union."""
    password_hash: str | None = None
    """core's password (a crypt hash): rendered and applied by the node agent, never
    written into an image."""
    gecos: str | None = None
    groups: list[str] | None = None
    home_dir: str | None = None
    no_create_home: bool | None = None
    no_log_init: bool | None = None
    no_user_group: bool | None = None
    primary_group: str | None = None
    shell: str | None = None
    should_exist: bool | None = None
    system: bool | None = None
    uid: int | None = None


class Passwd(_Ign):
    users: list[PasswdUser] | None = None
    groups: list[dict[str, Any]] | None = None
    """Refused: MCO does not reconcile groups."""


class KernelArguments(_Ign):
    should_exist: list[str] | None = None
    should_not_exist: list[str] | None = None


class IgnitionConfigRefs(_Ign):
    merge: list[Resource] | None = None
    replace: Resource | None = None


class TLS(_Ign):
    certificate_authorities: list[Resource] | None = None


class Security(_Ign):
    tls: TLS | None = None


class Timeouts(_Ign):
    http_response_headers: int | None = None
    http_total: int | None = None


class Proxy(_Ign):
    http_proxy: str | None = None
    https_proxy: str | None = None
    no_proxy: list[str] | None = None


class IgnitionMeta(_Ign):
    version: str = Field(pattern=r"^\d+\.\d+\.\d+(-experimental)?$")
    """Spec version: 3.0.0–3.5.0, or 2.2.0 (converted)."""
    config: IgnitionConfigRefs | None = None
    proxy: Proxy | None = None
    security: Security | None = None
    timeouts: Timeouts | None = None


class Config(_Ign):
    """An Ignition config, spec 3.5 (3.0–3.4 and converted 2.2 configs parse into it)."""

    ignition: IgnitionMeta
    kernel_arguments: KernelArguments | None = None
    passwd: Passwd | None = None
    storage: Storage | None = None
    systemd: Systemd | None = None


# ---------------------------------------------------------------------------------------
# Spec 2.2 → 3.x, the way MCO does it (ign-converter `Translate2to3` with the `root`
# filesystem mapped to `/`; MCO `controller/common/ignition_converter.go`).


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
