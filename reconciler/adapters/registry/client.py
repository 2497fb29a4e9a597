"""OCI registry client: resolve images, read and write manifests and blobs, exact bytes.

Stage: edge. Inputs: image references (`reconciler.core.reference`), credentials
(`registry.credentials`), TLS and plain-HTTP settings. Outputs: resolved per-platform
manifests and configs (what a pin records), blobs present in a target repository,
manifests stored under the digest we computed. Every failure is a `RegistryError`
saying what, where and the fix, with `transient` telling the caller whether to retry
later; no httpx exception escapes.

Why a small client on httpx instead of oras-py (reference test-infrastructure.md §5):
oras-py's `upload_manifest` re-serialises the manifest, so the pushed digest differs
from the one we computed (promise 2 needs exact bytes); it has no cross-repository
mount; it caches one Bearer token for all scopes, so a second repository or a mount
fails with 401; its Basic backend crashes without credentials; and its retry decorator
sleeps 2+3**n seconds (131 s against a closed port). What we need of the OCI
distribution spec (the pull and push endpoints, nothing of content discovery or
management) is a handful of requests: doing them by hand is shorter than working
around those.

What it does and why, rule by rule: docs/design/registry.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping

from reconciler.adapters.registry.blobs import Blobs
from reconciler.adapters.registry.media import (
    _ACCEPT,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    Descriptor,
    Manifest,
    _descriptor_digest,
    _descriptor_fields,
    _json,
    _select_platform,
    _sha256,
    _split_arch,
)
from reconciler.adapters.registry.transport import _Access, _error_text
from reconciler.core import reference
from reconciler.core.poolplan import Resolved
from reconciler.core.reference import ImageRef
from reconciler.errors import RegistryError

log = logging.getLogger("reconciler.adapters.registry")  # one logger for the client


class RegistryClient(Blobs):
    """A synchronous client for OCI distribution registries (see the module docstring).

    Repositories are named `host/path` (`reference.repository(ref)`), e.g.
    `127.0.0.1:5000/fleet/worker` or `quay.io/fedora/fedora-bootc`, or given as an
    `ImageRef` (its tag and digest are ignored). Use as a context manager, or `close()`.
    Not thread-safe (token cache, counters): one client per thread.
    """

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolve(self, ref: ImageRef | str, arch: str = "amd64", os: str = "linux") -> Resolved:
        """Follow a tag or digest to the image manifest for `os/arch` (an index is
        narrowed to that platform), and fetch its config."""
        ref = reference.parse(ref) if isinstance(ref, str) else ref
        arch, variant = _split_arch(arch)
        want = f"{os}/{arch}" + (f"/{variant}" if variant else "")
        a = self._access(ref, "pull")
        m = self._retry(lambda: self._get_manifest(a, ref.reference, str(ref)))
        doc = _json(m.data, f"manifest of {ref}")
        index_digest = None
        if m.media_type in INDEX_TYPES:
            index_digest = m.digest
            digest = _select_platform(doc, os, arch, variant, str(ref))
            m = self._retry(lambda: self._get_manifest(a, digest, f"{ref} ({want})"))
            doc = _json(m.data, f"manifest of {ref} ({want})")
        if m.media_type not in IMAGE_MANIFEST_TYPES:
            raise RegistryError(
                f"{ref} is a {m.media_type or 'manifest of unknown type'}, not an image "
                f"manifest; push it again with a current tool (skopeo copy, buildah push)"
            )
        config_digest = _descriptor_digest(doc.get("config"), f"config of {ref}")
        config_bytes = self._retry(lambda: self._get_blob(a, config_digest, f"config of {ref}"))
        config = _json(config_bytes, f"config of {ref}")
        if index_digest is None and (
            config.get("architecture", arch) != arch or config.get("os", os) != os
        ):
            got = f"{config.get('os')}/{config.get('architecture')}"
            raise RegistryError(
                f"image {ref} is {got}, not {want}; use an image built for {want} "
                f"or a multi-architecture image"
            )
        return Resolved(
            ref=ref,
            digest=m.digest,
            media_type=m.media_type,
            manifest=m.data,
            manifest_json=doc,
            config=config,
            config_bytes=config_bytes,
            platform=want,
            index_digest=index_digest,
        )

    def get_manifest(
        self, repo: str | ImageRef, ref: str, accept: Iterable[str] = MANIFEST_TYPES
    ) -> Manifest:
        """The manifest `repo:ref` or `repo@ref` as stored (bytes, media type, digest)."""
        a = self._access(repo, "pull")
        what = _name(a, ref)
        return self._retry(lambda: self._get_manifest(a, ref, what, tuple(accept)))

    def manifest_digest(self, repo: str | ImageRef, ref: str) -> str | None:
        """The digest `repo:ref` points to (one HEAD), or None if there is none."""
        a = self._access(repo, "pull")
        what = _name(a, ref)

        def head() -> str | None:
            r = self._send(a, "HEAD", f"/v2/{a.path}/manifests/{ref}", headers={"Accept": _ACCEPT})
            if r.status_code == 404:
                return None
            if r.status_code != 200:
                raise self._error(a.host, r, f"checking {what}")
            digest = str(r.headers.get("Docker-Content-Digest", ""))
            if reference.is_digest(digest):
                return digest
            # Some registries omit the header on HEAD: hash the manifest instead.
            return self._get_manifest(a, ref, what).digest

        return self._retry(head)

    def get_blob(self, repo: str | ImageRef, digest: str) -> bytes:
        """A blob's bytes, verified against `digest`."""
        a = self._access(repo, "pull")
        return self._retry(lambda: self._get_blob(a, digest, f"blob {digest} in {a.name}"))

    def blob_exists(self, repo: str | ImageRef, digest: str) -> bool:
        a = self._access(repo, "pull")
        return self._retry(lambda: self._blob_exists(a, digest))

    # --- writing --------------------------------------------------------------------------

    def mount_blob(self, repo: str | ImageRef, digest: str, from_repo: str | ImageRef) -> bool:
        """Cross-repository mount `digest` from `from_repo` into `repo` (same registry).
        True if mounted; False if the registry declined (the blob must be uploaded)."""
        a = self._access(repo, "push")
        src = self._access(from_repo, "pull")
        if src.host is not a.host:
            return False  # mounts work within one registry only

        def mount() -> bool:
            location = self._try_mount(a, digest, src.path)
            if location is None:
                return True
            self._abandon_upload(a, location)
            return False

        return self._retry(mount)

    def push_blob(
        self,
        repo: str | ImageRef,
        data: bytes,
        digest: str | None = None,
        chunk_size: int | None = None,
    ) -> str:
        """Upload `data` as a blob; returns its digest. Monolithic (POST, PUT) unless
        `chunk_size` is given or the registry refuses the single PUT with 413."""
        actual = _sha256(data)
        if digest is not None and digest != actual:
            raise ValueError(f"blob data has digest {actual}, not {digest}")
        a = self._access(repo, "push")
        self._retry(lambda: self._upload(a, data, actual, chunk_size))
        return actual

    def put_manifest(self, repo: str | ImageRef, ref: str, data: bytes, media_type: str) -> str:
        """Store `data` (exactly these bytes) as the manifest `repo:ref` (a tag, or its
        own digest). Returns sha256(data), after checking that the registry computed
        the same digest."""
        expected = _sha256(data)
        if reference.is_digest(ref) and ref != expected:
            raise ValueError(f"manifest bytes have digest {expected}, not {ref}")
        if not reference.is_digest(ref) and not reference.TAG_RE.match(ref):
            raise ValueError(f"{ref!r} is neither a tag nor a digest")
        a = self._access(repo, "push")
        what = _name(a, ref)

        def put() -> str:
            r = self._send(
                a,
                "PUT",
                f"/v2/{a.path}/manifests/{ref}",
                headers={"Content-Type": media_type},
                content=data,
            )
            if r.status_code not in (200, 201):
                raise self._error(a.host, r, f"pushing manifest {what}")
            got = r.headers.get("Docker-Content-Digest") or self._get_manifest(a, ref, what).digest
            if got != expected:
                raise RegistryError(
                    f"{a.host.name} stored manifest {what} as {got}, not {expected} (the "
                    f"digest of the bytes sent); this registry rewrites manifests, so image "
                    f"digests cannot be predicted: push to another registry"
                )
            self.bytes_uploaded += len(data)
            return expected

        return self._retry(put)

    def ensure_blobs(
        self,
        target_repo: str | ImageRef,
        descriptors: Iterable[Descriptor],
        source_repo: str | ImageRef | None = None,
        *,
        local: Mapping[str, bytes] | None = None,
    ) -> int:
        """Make every blob in `descriptors` present in `target_repo`: HEAD; else upload
        the bytes from `local` (digest → data) if there; else cross-repository mount
        from `source_repo` (same registry); else stream it from `source_repo` (any
        registry). Returns the bytes uploaded (0 when everything was there or mounted).
        """
        # Ask for push from the start: one token then serves the HEAD and the upload.
        a = self._access(target_repo, "push")
        src = self._access(source_repo, "pull") if source_repo is not None else None
        uploaded = 0
        seen: set[str] = set()
        for desc in descriptors:
            digest, size = _descriptor_fields(desc)
            if digest in seen:
                continue
            seen.add(digest)

            def ensure_one(digest: str = digest, size: int = size) -> int:
                if self._blob_exists(a, digest):
                    return 0
                if local is not None and digest in local:
                    data = local[digest]
                    if _sha256(data) != digest:
                        raise ValueError(f"local data for {digest} has another digest")
                    self._upload(a, data, digest, None)
                    return len(data)
                if src is None:
                    raise RegistryError(
                        f"blob {digest} is missing from {a.name} and no source was given"
                    )
                location = None
                if src.host is a.host and src.path != a.path:
                    location = self._try_mount(a, digest, src.path)
                    if location is None:
                        return 0
                return self._copy_blob(src, a, digest, size, location)

            uploaded += self._retry(ensure_one)
        return uploaded

    # --- operations, one attempt each -------------------------------------------------------

    def _get_manifest(
        self, a: _Access, ref: str, what: str, accept: tuple[str, ...] = MANIFEST_TYPES
    ) -> Manifest:
        r = self._send(
            a, "GET", f"/v2/{a.path}/manifests/{ref}", headers={"Accept": ", ".join(accept)}
        )
        if r.status_code == 404:
            raise RegistryError(f"{what} not found ({_error_text(r) or 'manifest unknown'})")
        if r.status_code != 200:
            raise self._error(a.host, r, f"reading {what}")
        data = r.content
        digest = _sha256(data)
        if ref.startswith("sha256:") and digest != ref:
            raise RegistryError(f"{a.host.name} sent a manifest for {what} with digest {digest}")
        header = r.headers.get("Docker-Content-Digest", "")
        if header.startswith("sha256:") and header != digest:
            raise RegistryError(
                f"{a.host.name} says {what} is {header} but its bytes hash to {digest}; "
                f"the registry or a proxy alters manifests"
            )
        media_type = r.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            # Older registries answer application/json; the document says what it is.
            with contextlib.suppress(ValueError, AttributeError):
                media_type = str(json.loads(data).get("mediaType") or media_type)
        return Manifest(data, media_type, digest)


def _name(a: _Access, ref: str) -> str:
    return f"{a.name}{'@' if reference.is_digest(ref) else ':'}{ref}"
