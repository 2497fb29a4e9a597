"""Merging: a pool's MachineConfigs → its rendered config and `rendered-<pool>-<hash>`.

Stage: after selection. Input: the loaded repository and a pool name. Output: a
`RenderedConfig` (the merged spec as a JSON-like dict, its name, the input configs in
merge order) or a `ConfigError` naming what blocks the pool.

Semantics are MCO's (`controller/common/helpers.go` `MergeMachineConfigs`) over
Ignition 3.5 `Merge(parent, child)` (coreos/ignition `config/merge/merge.go`):
- structs merge field by field; a field the child sets replaces the parent's, so a later
  config that changes a file's contents but omits `mode` keeps the earlier mode;
- keyed lists merge entries with equal keys in place and append the child's new ones;
  files, directories and links share one key space (`path`), so a later file replaces
  an earlier link; units and dropins by `name`; `sshAuthorizedKeys` is an ordered union;
- `kernelArguments` and `extensions` concatenate in order, duplicates kept
  (OCPBUGS-19708); `kernelType`: the last non-default wins; `fips`: OR;
  `osImageURL` and `baseOSExtensionsContainerImage`: the last non-empty
  (controller-generated configs excepted);
- after the merge, every file without `overwrite` gets `overwrite: true`.

Ignition merges pairwise (parent, child) and rebuilds every list each time, which is
quadratic in the number of files of a pool. We fold each config into an accumulator
whose lists are ordered dicts by key; that yields exactly the same order (in-place
merges keep their position, removals drop out, new keys append in the child's order)
in linear time.

The rendered name hashes the spec only (never file names, document order or key
order): SHA-256 over canonical JSON, first 32 hex digits (MCO's name length; MCO uses
a salted MD5 of YAML).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.core import canonical, ignition, load, model, select
from reconciler.errors import ConfigError, ConfigProblem

GENERATED_BY_ANNOTATION = "machineconfiguration.openshift.io/generated-by-controller-version"
SOURCES_ANNOTATION = "gitops.bootc.dev/source-machineconfigs"
POOL_ANNOTATION = "gitops.bootc.dev/pool"
MAX_RENDERED_SIZE = 1_572_864  # MCO `MaxMachineConfigSize`
NAME_HASH_LEN = 32

# List field → key of its entries (None: the entry itself, a string). Ignition's
# `Key()` methods (config/v3_5/types): the field name alone decides it in 3.5.
_LIST_KEYS: dict[str, str | None] = {
    "units": "name",
    "dropins": "name",
    "users": "name",
    "groups": "name",  # passwd.groups (dicts); a user's groups are strings (keyed by value)
    "httpHeaders": "name",
    "certificateAuthorities": "source",
    "merge": "source",
    "disks": "device",
    "partitions": "number",
    "filesystems": "device",
    "raid": "name",
    "luks": "name",
    "sshAuthorizedKeys": None,
    "noProxy": None,
    "shouldExist": None,
    "shouldNotExist": None,
}
_CONCAT = {"append"}  # Ignition's IgnoreDuplicates: plain append
_NODE_SECTIONS = ("files", "directories", "links")
# What a node agent applies live, without an image (MCD: `updateSSHKeys`, `SetPasswordHash`).
LIVE_USER_FIELDS = frozenset({"sshAuthorizedKeys", "passwordHash"})


@dataclass(frozen=True)
class RenderedConfig:
    """A pool's merged config. `spec` is all of it (the name hashes it); images are made
    of `image_spec()`, and nodes apply the rest live."""

    pool: str
    name: str
    spec: Mapping[str, Any]
    sources: tuple[str, ...]

    @property
    def ignition(self) -> Mapping[str, Any]:
        config: Mapping[str, Any] = self.spec["config"]
        return config

    @property
    def core_user(self) -> Mapping[str, Any] | None:
        """core's entry in `passwd.users`, if a config declares it."""
        for user in self.ignition.get("passwd", {}).get("users", ()):
            if user.get("name") == "core":
                found: Mapping[str, Any] = user
                return found
        return None

    @property
    def password_hash(self) -> str | None:
        """core's `passwordHash`: for the node agent, which sets it live (MCD applies it
        without a reboot); never part of an image."""
        core = self.core_user
        if core is not None and core.get("passwordHash") is not None:
            return str(core["passwordHash"])
        return None

    @property
    def ssh_authorized_keys(self) -> tuple[str, ...]:
        """core's `sshAuthorizedKeys`, in merge order: applied live by the node agent
        (MCD writes them without a reboot); never part of an image."""
        core = self.core_user
        return tuple(str(k) for k in (core.get("sshAuthorizedKeys") or ())) if core else ()

    def image_spec(self) -> dict[str, Any]:
        """`spec` without what nodes apply live (core's `sshAuthorizedKeys` and
        `passwordHash`, `LIVE_USER_FIELDS`): what an image is made of and its identity
        hashes, so rotating a key or the password rebuilds nothing and reboots no node.
        The `core` user itself stays (the image declares it, see `image.layout`)."""
        spec = dict(self.spec)
        passwd = spec["config"].get("passwd")
        if passwd and any(set(u) & LIVE_USER_FIELDS for u in passwd.get("users", ())):
            users = [
                {k: v for k, v in u.items() if k not in LIVE_USER_FIELDS} for u in passwd["users"]
            ]
            spec["config"] = {**spec["config"], "passwd": {**passwd, "users": users}}
        return spec

    def to_machine_config(self) -> dict[str, Any]:
        """The rendered MachineConfig object, as `reconciler render` prints it."""
        return {
            "apiVersion": model.MCO_API_VERSION,
            "kind": "MachineConfig",
            "metadata": {
                "name": self.name,
                "annotations": {
                    POOL_ANNOTATION: self.pool,
                    SOURCES_ANNOTATION: ",".join(self.sources),
                },
            },
            "spec": self.spec,
        }


class _KeyedList:
    """An Ignition list being merged: entries by key, in result order."""

    __slots__ = ("concat", "entries", "field", "items")

    def __init__(self, field: str) -> None:
        self.field = field
        self.concat = field in _CONCAT
        self.entries: dict[Any, Any] = {}
        self.items: list[Any] = []

    def key(self, item: Any) -> Any:
        keyf = _LIST_KEYS.get(self.field)
        if keyf is None or not isinstance(item, dict):
            return item if not isinstance(item, dict) else canonical.canonical_json(item)
        return item.get(keyf)

    def merge(self, child: Sequence[Any]) -> None:
        if self.concat:
            self.items.extend(_to_acc(item) for item in child)
            return
        for item in child:
            k = self.key(item)
            existing = self.entries.get(k)
            if existing is None:
                self.entries[k] = _to_acc(item)
            elif self.field == "httpHeaders" and item.get("value") is None:
                del self.entries[k]  # Ignition: a header without value removes it
            elif isinstance(item, dict):
                _merge_into(existing, item)
            else:
                self.entries[k] = item

    def finish(self) -> list[Any]:
        values = self.items if self.concat else list(self.entries.values())
        return [_from_acc(v) for v in values]


def _to_acc(value: Any) -> Any:
    """Copy a child value into the accumulator (children are shared between pools)."""
    if isinstance(value, dict):
        acc: dict[str, Any] = {}
        _merge_into(acc, value)
        return acc
    if isinstance(value, list):
        raise TypeError("nested list without a field name")  # not in Ignition's schema
    return value


def _merge_into(acc: dict[str, Any], child: Mapping[str, Any]) -> None:
    for key, value in child.items():
        if isinstance(value, dict):
            sub = acc.get(key)
            if not isinstance(sub, dict):
                sub = acc[key] = {}
            if key == "storage":
                _merge_storage(sub, value)
            else:
                _merge_into(sub, value)
        elif isinstance(value, list):
            kl = acc.get(key)
            if kl is None:
                kl = acc[key] = _KeyedList(key)
            kl.merge(value)
        else:
            acc[key] = value


def _merge_storage(acc: dict[str, Any], child: Mapping[str, Any]) -> None:
    for section in _NODE_SECTIONS:
        if section not in acc:
            acc[section] = _KeyedList(section)
    for section in _NODE_SECTIONS:
        for item in child.get(section, ()):
            path = item["path"]
            target = acc[section].entries
            if path in target:
                _merge_into(target[path], item)
                continue
            for other in _NODE_SECTIONS:  # files, directories and links share one key space
                acc[other].entries.pop(path, None)
            target[path] = _to_acc(item)
    _merge_into(acc, {k: v for k, v in child.items() if k not in _NODE_SECTIONS})


def _from_acc(value: Any) -> Any:
    """Accumulator → plain JSON value; empty lists and objects are dropped (as Go's
    `omitempty` does for lists), so `files: []` and no files render the same."""
    if isinstance(value, _KeyedList):
        return value.finish()
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            plain = _from_acc(v)
            if plain or not isinstance(plain, (list, dict)):  # not [] or {}
                out[k] = plain
        return out
    return value


def merge_ignition(configs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold Ignition 3.5 dicts in order, as repeated Ignition `Merge(parent, child)`."""
    acc: dict[str, Any] = {}
    for config in configs:
        _merge_into(acc, config)
    merged: dict[str, Any] = _from_acc(acc)
    merged.setdefault("ignition", {})["version"] = ignition.INTERNAL_VERSION
    for node in merged.get("storage", {}).get("files", ()):
        node.setdefault("overwrite", True)  # MCD always overwrites; Ignition 3 does not
        # The "" that made a later plain file clear an earlier gzip (load.py) is unset
        # again after the merge, as MCO does (`ignitionMergeUnsetFilesDefaultCompression`).
        resource = node.get("contents")
        if resource and resource.get("compression") == "":
            del resource["compression"]
    return merged


def select_configs(repo: load.Repository, pool_name: str) -> list[load.LoadedConfig]:
    """The pool's valid configs in merge order, or `ConfigError` if none is selected.
    (Whether an invalid config blocks the pool is `verdict`'s judgement, made first.)"""
    pool = repo.pools[pool_name]
    selector = pool.obj.spec.machine_config_selector
    groups = repo.configs_by_labels()
    chosen = [
        (mc.name, mc.labels, mc)
        for labels in _candidates(repo, selector)
        if select.matches(selector, dict(labels))
        for mc in groups[labels]
    ]
    if not chosen:
        raise ConfigError(
            ConfigProblem(
                "no MachineConfigs found matching selector",
                file=pool.origin.file,
                line=pool.origin.line(("spec", "machineConfigSelector")),
                kind="MachineConfigPool",
                name=pool_name,
                field="spec.machineConfigSelector",
                fix="label at least one MachineConfig so the selector matches it",
            )
        )
    return select.merge_order(chosen)


def _candidates(
    repo: load.Repository, selector: model.LabelSelector | None
) -> list[tuple[tuple[str, str], ...]]:
    """The label sets a selector can match: those with one label it requires (a
    `matchLabels` pair, or one of an `In` expression's values), else all of them.
    Only narrows the search: `select.matches` still decides each candidate."""
    everything = list(repo.configs_by_labels())
    if selector is None:
        return everything
    if selector.match_labels:
        key, value = next(iter(selector.match_labels.items()))
        return repo.label_sets_with(key, value)
    for req in selector.match_expressions:
        if req.operator == "In":
            found = {s for v in req.values for s in repo.label_sets_with(req.key, v)}
            return [s for s in everything if s in found]  # (the same order as before)
    return everything


def base_image(repo: load.Repository, pool_name: str, configs: Sequence[load.LoadedConfig]) -> str:
    """The pool's base image as written: last non-empty `osImageURL` in merge order, else
    the MachineOSConfig's `baseImagePullSpec`, else the repository default, else ""."""
    for mc in reversed(configs):
        if mc.obj.spec.os_image_url and GENERATED_BY_ANNOTATION not in mc.obj.metadata.annotations:
            return mc.obj.spec.os_image_url
    mosc = repo.os_configs.get(pool_name)
    if mosc and mosc.obj.spec.base_image_pull_spec:
        return mosc.obj.spec.base_image_pull_spec
    return repo.settings.default_base_image or ""


def render_pool(repo: load.Repository, pool_name: str) -> RenderedConfig:
    """Render one pool; raises `ConfigError` when its configs cannot be merged."""
    configs = select_configs(repo, pool_name)
    kernel_type = "default"
    fips = False
    kargs: list[str] = []
    extensions: list[str] = []
    extensions_image = ""
    for mc in configs:
        spec = mc.obj.spec
        if spec.kernel_type in ("realtime", "64k-pages"):
            kernel_type = spec.kernel_type
        fips = fips or spec.fips
        kargs.extend(spec.kernel_arguments)
        extensions.extend(spec.extensions)
        generated = GENERATED_BY_ANNOTATION in mc.obj.metadata.annotations
        if spec.base_os_extensions_container_image and not generated:
            # Like osImageURL: MCO takes it only from configs not made by its controllers.
            extensions_image = spec.base_os_extensions_container_image
    spec_out: dict[str, Any] = {
        "config": merge_ignition([mc.ignition for mc in configs if mc.ignition]),
        "kernelArguments": kargs,
        "extensions": extensions,
        "fips": fips,
        "kernelType": kernel_type,
        "osImageURL": base_image(repo, pool_name, configs),
        "baseOSExtensionsContainerImage": extensions_image,
    }
    pool = repo.pools[pool_name]
    if "kernel-devel" in extensions and kernel_type != "default":
        raise ConfigError(
            ConfigProblem(
                f"the kernel-devel extension cannot be used with kernelType {kernel_type}",
                file=pool.origin.file,
                kind="MachineConfigPool",
                name=pool_name,
                fix="drop kernel-devel from the pool's configs or use the default kernel",
            )
        )
    data = canonical.canonical_json(spec_out)
    if len(data) > MAX_RENDERED_SIZE:
        raise ConfigError(
            ConfigProblem(
                f"the rendered config is {len(data)} bytes, above MCO's limit of "
                f"{MAX_RENDERED_SIZE}",
                file=pool.origin.file,
                kind="MachineConfigPool",
                name=pool_name,
                fix="move large files into the base image or a containerFile step",
            )
        )
    digest = canonical.sha256_hex(data)[:NAME_HASH_LEN]
    return RenderedConfig(
        pool=pool_name,
        name=f"rendered-{pool_name}-{digest}",
        spec=spec_out,
        sources=tuple(mc.name for mc in configs),
    )
