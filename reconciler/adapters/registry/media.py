"""Registry media types and the manifest documents a client reads: exact bytes,
descriptors, platform selection in an index.

Stage: edge (values only).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from reconciler.core import reference
from reconciler.errors import RegistryError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES = IMAGE_MANIFEST_TYPES + INDEX_TYPES

_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "armhf": "arm"}


class DescriptorLike(Protocol):
    @property
    def digest(self) -> str: ...

    @property
    def size(self) -> int: ...


Descriptor = Mapping[str, Any] | DescriptorLike


class Manifest(NamedTuple):
    """A manifest as the registry stores it: exact bytes, media type, sha256 digest."""

    data: bytes
    media_type: str
    digest: str


_ACCEPT = ", ".join(MANIFEST_TYPES)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _split_arch(arch: str) -> tuple[str, str | None]:
    name, _, variant = arch.partition("/")
    return _ARCH_ALIASES.get(name, name), variant or None


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return doc


def _descriptor_digest(desc: Any, what: str) -> str:
    if not isinstance(desc, dict) or not reference.is_digest(str(desc.get("digest", ""))):
        raise RegistryError(f"{what}: missing or malformed descriptor")
    return str(desc["digest"])


def _descriptor_fields(desc: Descriptor) -> tuple[str, int]:
    if isinstance(desc, Mapping):
        digest, size = desc.get("digest"), desc.get("size", -1)
    else:
        digest, size = desc.digest, desc.size
    if not isinstance(digest, str) or not reference.is_digest(digest):
        raise ValueError(f"descriptor without a valid digest: {digest!r}")
    return digest, int(size if size is not None else -1)


def _select_platform(
    index: Mapping[str, Any], os: str, arch: str, variant: str | None, what: str
) -> str:
    available = []
    for entry in index.get("manifests", []):
        p = entry.get("platform") or {}
        e_os, e_arch, e_var = p.get("os"), p.get("architecture"), p.get("variant")
        if not e_os or e_os == "unknown":
            continue  # attestation manifests (buildkit) say unknown/unknown
        available.append(f"{e_os}/{e_arch}" + (f"/{e_var}" if e_var else ""))
        if e_os == os and e_arch == arch and (variant is None or variant == e_var):
            if entry.get("mediaType") in INDEX_TYPES:
                raise RegistryError(f"{what}: nested indexes are not supported")
            return _descriptor_digest(entry, f"{what} ({os}/{arch})")
    want = f"{os}/{arch}" + (f"/{variant}" if variant else "")
    raise RegistryError(
        f"image {what} has no {want} manifest (available: {', '.join(available) or 'none'}); "
        f"set the pool's architecture to one of those or use an image built for {want}"
    )
