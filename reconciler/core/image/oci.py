"""OCI composition: base manifest + base config + config layer → the new image's exact
bytes and its digest, before anything is uploaded.

Stage: the native builder's pure half. Input: the base image's per-architecture
manifest (the exact bytes or the parsed dict) and config, a `layer.Layer`, and labels.
Output: a `ComposedImage` holding the new config and manifest as the exact bytes to
upload and their digests. The manifest digest is the *predicted digest*: the registry
computes the same sha256 over the same bytes (distribution names a manifest by the
digest of the bytes PUT, OCI distribution-spec "Pushing Manifests"), so it is known
before the push and checked after it.

Decisions (each keeps "same inputs, same bytes"):
- Media types follow the base: an OCI manifest stays OCI, a Docker v2 schema 2 manifest
  stays Docker, and our layer gets the gzip layer type of that family. An index or
  manifest list is not an image: select the architecture's manifest first
  (`select_platform_manifest`).
- `created` (config and our history entry) is the base config's `created`, or the
  epoch when the base has none. It is a pure function of the base digest, so it is
  deterministic; unlike the epoch it does not make every pool image look 56 years old
  in `podman images` or in bootc's `status.booted.image.timestamp`, which reads it.
- Labels: the base's are kept (they carry `containers.bootc=1` / `ostree.bootable`,
  which bootc requires to pull), ours are added and win on a clash.
- Both JSON documents are canonical (`canonical.canonical_json`); the base's manifest
  annotations describe the base and are dropped, and an OCI manifest records the base
  manifest digest as `org.opencontainers.image.base.digest` (OCI image-spec
  annotations.md).

`BUILDER_FORMAT_VERSION` is part of every inputs digest (`identity.py`): bump it when
this module, `layer.py` or `layout.py` would produce different bytes for the same
inputs, so no image built by older code is reused for the new format.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.core import canonical
from reconciler.core.image.layer import Layer
from reconciler.errors import ConfigError, ConfigProblem, ReconcilerError

# 3: core's SSH keys out of the image, no rendered-config name in labels, kargs.d,
# tmpfiles.d or history (nodes apply the keys live).
BUILDER_FORMAT_VERSION = "3"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
EPOCH = "1970-01-01T00:00:00Z"
BASE_DIGEST_ANNOTATION = "org.opencontainers.image.base.digest"


class ManifestError(ReconcilerError, ValueError):
    """A base manifest or config we cannot build on (not an image manifest, malformed)."""


@dataclass(frozen=True)
class ComposedImage:
    media_type: str
    config: Mapping[str, Any]
    config_bytes: bytes
    config_digest: str
    manifest: Mapping[str, Any]
    manifest_bytes: bytes
    manifest_digest: str
    """The predicted digest: sha256 of `manifest_bytes`."""
    layer_descriptor: Mapping[str, Any]


def _load(doc: bytes | Mapping[str, Any], what: str) -> dict[str, Any]:
    if isinstance(doc, bytes | bytearray):
        try:
            value = json.loads(doc)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"the base {what} is not JSON ({exc})") from exc
    else:
        value = copy.deepcopy(dict(doc))
    if not isinstance(value, dict):
        raise ManifestError(f"the base {what} is not a JSON object")
    return value


def manifest_media_type(manifest: Mapping[str, Any]) -> str:
    """The manifest's media type; an OCI manifest may omit the field (image-spec
    manifest.md), so it is inferred from the config descriptor then."""
    declared = manifest.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if "manifests" in manifest:
        return OCI_INDEX
    config_type = (manifest.get("config") or {}).get("mediaType")
    return DOCKER_MANIFEST if config_type == DOCKER_CONFIG else OCI_MANIFEST


# Go's GOARCH names, as OCI platforms use them; the arm64 variant is optional.
_PLATFORM_ARCH = {"amd64": "amd64", "arm64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}


def select_platform_manifest(
    index: bytes | Mapping[str, Any], architecture: str, *, image: str = "the base image"
) -> dict[str, Any]:
    """The descriptor of `linux/<architecture>` in an image index or manifest list.

    bootc records the per-platform manifest digest (bootc-contract.md §1), so that is
    the digest the reconciler pins and hashes, never the index's.
    """
    doc = _load(index, "index")
    arch = _PLATFORM_ARCH.get(architecture, architecture)
    found = [
        m
        for m in doc.get("manifests") or []
        if isinstance(m, dict)
        and (m.get("platform") or {}).get("os") == "linux"
        and (m.get("platform") or {}).get("architecture") == arch
        and m.get("mediaType", OCI_MANIFEST) not in INDEX_TYPES
    ]
    if not found:
        have = sorted(
            f"{(m.get('platform') or {}).get('os')}/{(m.get('platform') or {}).get('architecture')}"
            for m in doc.get("manifests") or []
            if isinstance(m, dict)
        )
        raise ConfigError(
            ConfigProblem(
                f"{image} has no linux/{arch} image (it has: {', '.join(have) or 'none'})",
                fix="pick a base image built for this architecture, or set the pool's "
                "MachineOSConfig spec.architecture",
            )
        )
    # Several entries for one platform (e.g. arm64 v8 and an attestation): the first
    # wins, as container tools pick it.
    return dict(found[0])


def compose_image(
    base_manifest: bytes,
    base_config: bytes | Mapping[str, Any],
    layer: Layer,
    *,
    labels: Mapping[str, str],
    created_by: str,
) -> ComposedImage:
    """The base image with `layer` appended and `labels` added, as exact bytes.

    `base_manifest` is the exact bytes the registry serves (its sha256 is the base
    digest recorded in the new manifest); `base_config` may be bytes or parsed.
    """
    manifest = _load(base_manifest, "manifest")
    config = _load(base_config, "config")
    media_type = manifest_media_type(manifest)
    if media_type in INDEX_TYPES:
        raise ManifestError(
            "the base manifest is an index; select the architecture's manifest first"
        )
    if media_type == OCI_MANIFEST:
        layer_type, default_config_type = OCI_LAYER_GZIP, OCI_CONFIG
    elif media_type == DOCKER_MANIFEST:
        layer_type, default_config_type = DOCKER_LAYER_GZIP, DOCKER_CONFIG
    else:
        raise ManifestError(f"unsupported base manifest media type {media_type!r}")
    base_layers = manifest.get("layers")
    rootfs = config.get("rootfs")
    if not isinstance(base_layers, list) or not isinstance(rootfs, dict):
        raise ManifestError("the base manifest has no layers or its config no rootfs")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != len(base_layers):
        raise ManifestError(
            f"the base config lists {len(diff_ids or [])} diff_ids for {len(base_layers)} layers"
        )

    created = config.get("created") or EPOCH
    config["created"] = created
    rootfs["diff_ids"] = [*diff_ids, layer.diff_id]
    history = config.get("history")
    config["history"] = [
        *(history if isinstance(history, list) else []),
        {"created": created, "created_by": created_by},
    ]
    runtime = config.get("config")
    if not isinstance(runtime, dict):
        runtime = config["config"] = {}
    runtime["Labels"] = {**(runtime.get("Labels") or {}), **labels}
    config_bytes = canonical.canonical_json(config)

    layer_descriptor = {"mediaType": layer_type, "digest": layer.digest, "size": layer.size}
    new_manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": (manifest.get("config") or {}).get("mediaType") or default_config_type,
            "digest": canonical.sha256_digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [*base_layers, layer_descriptor],
    }
    if media_type == OCI_MANIFEST:
        new_manifest["annotations"] = {
            BASE_DIGEST_ANNOTATION: canonical.sha256_digest(bytes(base_manifest))
        }
    manifest_bytes = canonical.canonical_json(new_manifest)
    return ComposedImage(
        media_type=media_type,
        config=config,
        config_bytes=config_bytes,
        config_digest=canonical.sha256_digest(config_bytes),
        manifest=new_manifest,
        manifest_bytes=manifest_bytes,
        manifest_digest=canonical.sha256_digest(manifest_bytes),
        layer_descriptor=layer_descriptor,
    )
