"""Ignition config spec 3.5 as strict pydantic models.

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

from reconciler.core.docstrings import describe_fields

INTERNAL_VERSION = "3.5.0"
SUPPORTED_3X = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0")


class _Ign(BaseModel):
    model_config = ConfigDict(
        strict=True,
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        json_schema_extra=describe_fields,  # field docstrings, read only for schemas
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
