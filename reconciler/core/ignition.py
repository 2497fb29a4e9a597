"""Ignition config spec 3.5 as strict pydantic models, and the 2.2 → 3 conversion.

Stage: part of loading. Input: the `spec.config` object of a MachineConfig (a plain
JSON-like dict). Output: the same config as a 3.5-shaped dict whose every key has been
checked against the spec, ready for the field-level merge in `merge.py`.

The models validate; the merge works on the validated dicts. That keeps Ignition's
"a pointer field is replaced only if the child sets it" rule simple (a key present in
the child dict replaces the parent's) and avoids dumping models on the hot path.
Shapes follow coreos/ignition `config/v3_5/types/schema.go`; fields Ignition added in
3.1–3.5 are accepted whatever `ignition.version` says, as MCO parses every 3.x config
into 3.5 (`IgnParseWrapper`). Unknown keys are refused (Ignition only warns), so a
typo such as `contens` is caught at review time instead of silently dropped.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

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
    """Refused: MCO cannot reconcile disk changes."""
    filesystems: list[dict[str, Any]] | None = None
    """Refused: MCO cannot reconcile filesystem changes."""
    raid: list[dict[str, Any]] | None = None
    """Refused: MCO cannot reconcile RAID changes."""
    luks: list[dict[str, Any]] | None = None
    """Refused: MCO cannot reconcile LUKS changes."""


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


class ConversionError(Exception):
    """A 2.2 config that cannot be converted; `field` is the dotted path of the culprit."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem
        self.fix = fix


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def convert_2_2(cfg: dict[str, Any]) -> dict[str, Any]:
    """Convert an Ignition 2.2 config dict into a 3.5-shaped dict, or raise."""
    out: dict[str, Any] = {}
    ign = dict(cfg.get("ignition") or {})
    ign["version"] = INTERNAL_VERSION
    refs = ign.pop("config", None)
    if refs:
        if refs.get("append"):
            refs = {**refs, "merge": refs["append"]}
            del refs["append"]
        ign["config"] = refs
    out["ignition"] = ign
    if cfg.get("networkd", {}).get("units"):
        raise ConversionError(
            "networkd.units",
            "networkd units from Ignition 2.x are not converted",
            "write them as files under /etc/systemd/network/ in a 3.x config",
        )
    storage = cfg.get("storage") or {}
    new_storage: dict[str, Any] = {}
    for key in ("disks", "raid", "filesystems"):
        if storage.get(key):
            new_storage[key] = storage[key]  # refused later with MCO's reason
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
        out["systemd"] = {"units": units}
    passwd = cfg.get("passwd") or {}
    if passwd:
        users = []
        for i, user in enumerate(passwd.get("users") or []):
            if "create" in user:
                raise ConversionError(
                    f"passwd.users[{i}].create",
                    "the 2.x 'create' block is not converted",
                    "only core's sshAuthorizedKeys and passwordHash are supported; drop 'create'",
                )
            users.append(dict(user))
        out["passwd"] = _drop_none({"users": users or None, "groups": passwd.get("groups")})
    return out
