"""OCI registry client, split by concept: `client` (the API: resolve, manifests,
blobs, `ensure_blobs`), `blobs` (reads, mounts and uploads), `auth` (the Basic and
Bearer protocol), `transport` (hosts, TLS, requests, retries), `media` (media types and
manifest documents), `credentials` (auth files). Why a client of our own and not
oras-py: `client`.
"""

from reconciler.adapters.registry.client import RegistryClient
from reconciler.adapters.registry.media import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
)
from reconciler.adapters.registry.transport import DEFAULT_CERTS_DIRS

__all__ = [
    "DEFAULT_CERTS_DIRS",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "IMAGE_MANIFEST_TYPES",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Manifest",
    "RegistryClient",
]
