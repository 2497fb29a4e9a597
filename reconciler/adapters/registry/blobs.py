"""Blobs: reads verified against their digest, existence checks, cross-repository
mounts, and uploads (monolithic, chunked, or streamed between registries).

Stage: edge.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator

import httpx

from reconciler.adapters.registry.auth import Authentication
from reconciler.adapters.registry.media import _sha256
from reconciler.adapters.registry.transport import _Access, _error_text
from reconciler.errors import RegistryError

log = logging.getLogger("reconciler.adapters.registry")  # one logger for the client

DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024


class Blobs(Authentication):
    """Blob reads and writes on top of the authenticated transport."""

    def _get_blob(self, a: _Access, digest: str, what: str) -> bytes:
        r = self._send(a, "GET", f"/v2/{a.path}/blobs/{digest}")
        if r.status_code == 404:
            raise RegistryError(f"{what} not found ({_error_text(r) or 'blob unknown'})")
        if r.status_code != 200:
            raise self._error(a.host, r, f"reading {what}")
        if digest.startswith("sha256:") and _sha256(r.content) != digest:
            raise RegistryError(f"{a.host.name} sent bytes for {what} that do not match it")
        return r.content

    def _blob_exists(self, a: _Access, digest: str) -> bool:
        r = self._send(a, "HEAD", f"/v2/{a.path}/blobs/{digest}")
        if r.status_code == 200:
            return True
        if r.status_code == 404:
            return False
        raise self._error(a.host, r, f"checking blob {digest} in {a.name}")

    def _start_upload(self, a: _Access) -> str:
        """POST an upload; returns the session URL."""
        r = self._send(a, "POST", f"/v2/{a.path}/blobs/uploads/")
        return self._session_url(a, r)

    def _try_mount(self, a: _Access, digest: str, from_path: str) -> str | None:
        """POST a cross-repository mount. None if mounted; else the upload session the
        registry opened instead (OCI distribution spec: 202 when it declines)."""
        m = _Access(a.host, a.path, "push", mount_from=from_path)
        r = self._send(
            m, "POST", f"/v2/{a.path}/blobs/uploads/", params={"mount": digest, "from": from_path}
        )
        if r.status_code == 201:
            log.debug("mounted %s into %s from %s", digest, a.name, from_path)
            return None
        return self._session_url(a, r)

    def _session_url(self, a: _Access, r: httpx.Response) -> str:
        if r.status_code != 202 or not r.headers.get("Location"):
            raise self._error(a.host, r, f"starting an upload to {a.name}")
        return _absolute(a.host.base_url, r.headers["Location"])

    def _abandon_upload(self, a: _Access, location: str) -> None:
        # Best effort: the registry purges stale sessions itself.
        with contextlib.suppress(RegistryError):
            self._send(a, "DELETE", location).close()

    def _upload(self, a: _Access, data: bytes, digest: str, chunk_size: int | None) -> None:
        location = self._start_upload(a)
        if chunk_size is None:
            r = self._send(
                a,
                "PUT",
                location,
                params={"digest": digest},
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
            if r.status_code != 413:
                self._check_committed(a, r, digest)
                self.bytes_uploaded += len(data)
                return
            # The registry, or a proxy in front (nginx client_max_body_size), limits
            # request bodies: send chunks in a fresh session instead.
            log.info("%s refused a %d-byte PUT; uploading in chunks", a.host.name, len(data))
            self._abandon_upload(a, location)
            location = self._start_upload(a)
            chunk_size = DEFAULT_CHUNK_SIZE
        for start in range(0, len(data), chunk_size):
            chunk = data[start : start + chunk_size]
            r = self._send(
                a,
                "PATCH",
                location,
                content=chunk,
                headers={
                    "Content-Type": "application/octet-stream",
                    # OCI distribution spec, chunked upload: inclusive range, no unit.
                    "Content-Range": f"{start}-{start + len(chunk) - 1}",
                },
            )
            if r.status_code != 202:
                raise self._error(a.host, r, f"uploading a chunk of {digest} to {a.name}")
            location = _absolute(location, r.headers.get("Location", location))
        r = self._send(a, "PUT", location, params={"digest": digest})
        self._check_committed(a, r, digest)
        self.bytes_uploaded += len(data)

    def _copy_blob(
        self, src: _Access, dst: _Access, digest: str, size: int, location: str | None
    ) -> int:
        """Stream a blob from one repository into another, on any registries: one
        PATCH with the body streamed, then PUT (as containers/image does)."""
        if location is None:
            location = self._start_upload(dst)
        what = f"blob {digest} in {src.name}"
        hasher = hashlib.sha256()
        sent = 0
        resp = self._send(src, "GET", f"/v2/{src.path}/blobs/{digest}", stream=True)
        try:
            if resp.status_code != 200:
                resp.read()
                if resp.status_code == 404:
                    raise RegistryError(f"{what} not found ({_error_text(resp) or 'blob unknown'})")
                raise self._error(src.host, resp, f"reading {what}")

            def body() -> Iterator[bytes]:
                nonlocal sent
                for chunk in resp.iter_bytes(1024 * 1024):
                    hasher.update(chunk)
                    sent += len(chunk)
                    yield chunk

            r = self._send(
                dst,
                "PATCH",
                location,
                content=body(),
                headers={"Content-Type": "application/octet-stream"},
            )
        finally:
            resp.close()
        if r.status_code != 202:
            raise self._error(dst.host, r, f"uploading {digest} to {dst.name}")
        if "sha256:" + hasher.hexdigest() != digest or (size >= 0 and sent != size):
            self._abandon_upload(dst, location)
            raise RegistryError(f"{src.host.name} sent bytes for {what} that do not match it")
        location = _absolute(location, r.headers.get("Location", location))
        r = self._send(dst, "PUT", location, params={"digest": digest})
        self._check_committed(dst, r, digest)
        self.bytes_uploaded += sent
        return sent

    def _check_committed(self, a: _Access, r: httpx.Response, digest: str) -> None:
        if r.status_code != 201:
            raise self._error(a.host, r, f"finishing the upload of {digest} to {a.name}")
        got = r.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise RegistryError(f"{a.host.name} stored blob {digest} as {got}")

    # --- retries, transport, auth, errors ---------------------------------------------------


def _absolute(base: str, location: str) -> str:
    """`location` resolved against `base` (RFC 3986); the two forms registries send
    without parsing a URL (a good part of a request's CPU, under one GIL)."""
    if location.startswith(("http://", "https://")):
        return location
    if location.startswith("/") and not location.startswith("//"):
        scheme, _, rest = base.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}{location}"
    return str(httpx.URL(base).join(location))
