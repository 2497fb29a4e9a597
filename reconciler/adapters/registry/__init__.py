"""OCI registry client: resolve images, read and write manifests and blobs, exact bytes.

Stage: edge. Inputs: image references (`reconciler.core.reference`), credentials
(`reconciler.adapters.auth`), TLS and plain-HTTP settings. Outputs: resolved per-platform
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

What this client does, and the rule behind each choice:
- Manifests are PUT with the caller's bytes and `Content-Type`, and the registry's
  `Docker-Content-Digest` must equal sha256(bytes), else `put_manifest` raises. Blobs
  and manifests read by digest are verified against it.
- Accept: OCI manifest and index, Docker schema 2 manifest and manifest list. An index
  is resolved to the pool's platform; the pin records that per-platform manifest digest
  (bootc reports it as `imageDigest`: reference bootc-contract.md §1).
- Blob uploads: monolithic (POST, then PUT with the body), or chunked (PATCH with
  `Content-Range`, then PUT) when asked or when the registry answers 413 to the
  monolithic PUT. Copies between registries stream (one PATCH with the body streamed,
  then PUT), as containers/image does, so a 1 GB base layer never sits in memory.
  Within one registry, blobs are cross-repository mounted (`?mount=&from=`): no bytes.
- Auth: anonymous first. On 401 the `WWW-Authenticate` challenge decides: Basic sends
  the credentials; Bearer fetches a token from the realm for exactly the scopes the
  operation needs (a mount also asks pull on the source repository), with the
  credentials if any (an `identitytoken` is exchanged with the OAuth2 refresh-token
  grant), anonymously otherwise. Tokens are cached per scope set until they expire.
  Distribution answers 401 (not 403) when a token lacks a scope: that is handled too.
- TLS: https with the system CAs, plus `ca_file`, plus `*.crt` in
  `/etc/containers/certs.d/HOST/` and `/etc/docker/certs.d/HOST/` (the containers-certs.d(5)
  layout). Plain HTTP only for hosts named in `insecure` (`--insecure-registry HOST:PORT`);
  a token realm on plain HTTP is only used for such hosts, so credentials never cross
  the network in clear unless the admin said so.
- Retries: connection failures, timeouts, 429 and 5xx are retried with short
  exponential backoff (0.2 s doubling, at most 2 s apart, longer if `Retry-After` says
  so) until `retry_deadline_s` has passed since the operation began; other 4xx are
  never retried. A retried upload starts a fresh upload session. An operation takes
  at most about `retry_deadline_s + timeout_s`.
- Nothing half-pushed can be pinned: only a manifest PUT creates something a tag or
  digest names, and distribution refuses a manifest whose blobs are missing; callers
  push blobs first (`ensure_blobs`), the manifest last.

Counters `bytes_uploaded` and `requests` are public, for benchmarks.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import json
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import httpx

from reconciler.adapters.registry.credentials import Credential, Credentials
from reconciler.core import reference
from reconciler.core.poolplan import Resolved
from reconciler.core.reference import ImageRef
from reconciler.errors import ConfigError, ConfigProblem, RegistryError

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES = IMAGE_MANIFEST_TYPES + INDEX_TYPES

DEFAULT_CERTS_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
# Docker Hub's API lives on another host than its name (distribution `registry/config.go`).
_API_HOSTS = {"docker.io": "registry-1.docker.io"}
_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "armhf": "arm"}
_USER_AGENT = "reconciler (bootc GitOps)"

T = TypeVar("T")
# Token scopes as (resource, action) atoms, e.g. ("repository:fleet/worker", "push"), so
# that a cached pull,push token is known to cover a later pull.
Scopes = frozenset[tuple[str, str]]


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


@dataclass
class _Host:
    """Per-registry state: connection, scheme and what we learnt about its auth."""

    name: str
    base_url: str
    client: httpx.Client
    insecure: bool
    challenge: str | None = None  # "basic" | "bearer", once the registry told us
    realm: str | None = None
    service: str | None = None
    tokens: dict[Scopes, tuple[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Access:
    """What a request is about: one repository, and the action it needs there. A mount
    also needs pull on the source repository (its token must carry both scopes)."""

    host: _Host
    path: str
    action: str  # "pull" | "push"
    mount_from: str | None = None

    @property
    def scopes(self) -> Scopes:
        # Push needs pull too (distribution checks both on a blob upload).
        actions = ("pull", "push") if self.action == "push" else ("pull",)
        scopes = {(f"repository:{self.path}", a) for a in actions}
        if self.mount_from:
            scopes.add((f"repository:{self.mount_from}", "pull"))
        return frozenset(scopes)

    @property
    def name(self) -> str:
        return f"{self.host.name}/{self.path}"


class RegistryClient:
    """A synchronous client for OCI distribution registries (see the module docstring).

    Repositories are named `host/path` (`reference.repository(ref)`), e.g.
    `127.0.0.1:5000/fleet/worker` or `quay.io/fedora/fedora-bootc`, or given as an
    `ImageRef` (its tag and digest are ignored). Use as a context manager, or `close()`.
    Not thread-safe (token cache, counters): one client per thread.
    """

    def __init__(
        self,
        credentials: Credentials | None = None,
        insecure: Iterable[str] = frozenset(),
        ca_file: str | None = None,
        timeout_s: float = 10.0,
        retry_deadline_s: float = 15.0,
        *,
        certs_dirs: Iterable[str] = DEFAULT_CERTS_DIRS,
    ) -> None:
        self.credentials = credentials
        self.insecure = frozenset(insecure)
        if ca_file is not None and not Path(ca_file).is_file():
            raise ConfigError(
                ConfigProblem("CA file not found", file=ca_file, fix="check the --registry-ca path")
            )
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        self.retry_deadline_s = retry_deadline_s
        self.certs_dirs = tuple(certs_dirs)
        self.bytes_uploaded = 0
        """Request-body bytes of successful uploads (blobs and manifests)."""
        self.requests = 0
        """HTTP requests sent, including token requests and retries."""
        self._hosts: dict[str, _Host] = {}
        self._realm_clients: dict[str, httpx.Client] = {}

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for h in self._hosts.values():
            h.client.close()
        for c in self._realm_clients.values():
            c.close()
        self._hosts.clear()
        self._realm_clients.clear()

    # --- reading --------------------------------------------------------------------------

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
        return str(httpx.URL(a.host.base_url).join(r.headers["Location"]))

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
            location = str(httpx.URL(location).join(r.headers.get("Location", location)))
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
        location = str(httpx.URL(location).join(r.headers.get("Location", location)))
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

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run one operation; repeat it on transient failures until the deadline."""
        start = time.monotonic()
        delay = 0.2
        attempts = 0
        while True:
            attempts += 1
            try:
                return fn()
            except RegistryError as exc:
                elapsed = time.monotonic() - start
                remaining = self.retry_deadline_s - elapsed
                if not exc.transient or remaining <= 0:
                    if exc.transient and attempts > 1:
                        raise RegistryError(
                            f"{exc} (gave up after {attempts} attempts in {elapsed:.1f} s)",
                            transient=True,
                        ) from exc
                    raise
                wait = min(delay, remaining)
                if isinstance(exc, _Unavailable) and exc.retry_after is not None:
                    wait = min(max(wait, exc.retry_after), remaining)
                log.info("%s; retrying in %.1f s", exc, wait)
                time.sleep(wait)
                delay = min(delay * 2, 2.0)

    def _access(self, repo: str | ImageRef, action: str) -> _Access:
        ref = reference.parse(repo) if isinstance(repo, str) else repo
        if isinstance(repo, str) and (ref.tag or ref.digest):
            raise ValueError(f"{repo!r}: expected a repository (host/path) without tag or digest")
        return _Access(self._host(ref.registry), ref.repository, action)

    def _host(self, name: str) -> _Host:
        h = self._hosts.get(name)
        if h is None:
            insecure = name in self.insecure
            api = _API_HOSTS.get(name, name)
            h = _Host(
                name=name,
                base_url=f"{'http' if insecure else 'https'}://{api}",
                client=self._new_client(None if insecure else api),
                insecure=insecure,
            )
            self._hosts[name] = h
        return h

    def _new_client(self, tls_host: str | None) -> httpx.Client:
        verify: ssl.SSLContext | bool = False  # plain HTTP: nothing to verify
        if tls_host is not None:
            ctx = ssl.create_default_context()
            cafiles = [self.ca_file] if self.ca_file else []
            for d in self.certs_dirs:
                # containers-certs.d(5): every *.crt in certs.d/HOST[:PORT]/ is a CA.
                host_dir = Path(d) / tls_host
                if host_dir.is_dir():
                    cafiles += [str(p) for p in sorted(host_dir.glob("*.crt"))]
            for cafile in cafiles:
                try:
                    ctx.load_verify_locations(cafile=cafile)
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigError(
                        ConfigProblem(
                            f"cannot load CA certificates ({exc})",
                            file=cafile,
                            fix="give a PEM file with the registry's CA certificate",
                        )
                    ) from None
            verify = ctx
        return httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(self.timeout_s),
            headers={"User-Agent": _USER_AGENT},
        )

    def _send(
        self,
        a: _Access,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: bytes | Iterator[bytes] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One request with auth: as learnt so far (anonymous at first), and once more
        after a 401 challenge if the body can be sent again. Transport failures, 429
        and 5xx become `RegistryError`s."""
        response = self._attempt(
            a, method, url, headers=headers, params=params, content=content, stream=stream
        )
        if response.status_code != 401:
            return response
        response.close()
        self._answer_challenge(a, response)
        if not isinstance(content, bytes | None):
            # A streamed body is gone; the upload session was authorised by the POST
            # before it, so a 401 here is a real refusal.
            raise self._auth_error(a, response)
        response = self._attempt(
            a, method, url, headers=headers, params=params, content=content, stream=stream
        )
        if response.status_code == 401:
            response.close()
            raise self._auth_error(a, response)
        return response

    def _attempt(
        self,
        a: _Access,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        content: bytes | Iterator[bytes] | None,
        stream: bool,
    ) -> httpx.Response:
        h = a.host
        base = httpx.URL(h.base_url)
        full = base.join(url)
        if params:
            full = full.copy_merge_params(dict(params))
        all_headers = dict(headers or {})
        # Credentials go to the registry only, never to another host a Location names.
        if full.netloc == base.netloc:
            all_headers.update(self._auth_header(a))
        request = h.client.build_request(method, full, headers=all_headers, content=content)
        self.requests += 1
        try:
            # Blob GETs may redirect to storage (S3, CDN); httpx drops Authorization
            # when the origin changes.
            response = h.client.send(request, stream=stream, follow_redirects=method == "GET")
        except httpx.HTTPError as exc:
            raise self._transport_error(h, exc) from None
        log.debug("%s %s -> %d", method, full.copy_with(query=None), response.status_code)
        if response.status_code == 400 and h.insecure and _is_tls_refusal(response):
            raise RegistryError(
                f"{h.name} speaks HTTPS but is named as a plain-HTTP registry; "
                f"remove it from --insecure-registry"
            )
        if response.status_code == 429 or response.status_code >= 500:
            response.read()
            raise self._error(h, response, f"{method} {full.path}")
        return response

    def _auth_header(self, a: _Access) -> dict[str, str]:
        h = a.host
        if h.challenge == "basic":
            cred = self._credential(a)
            if cred is not None:
                return {"Authorization": _basic(cred.username, cred.password)}
        elif h.challenge == "bearer":
            scopes = a.scopes
            now = time.monotonic()
            for granted, (token, expires) in h.tokens.items():
                if expires > now and scopes <= granted:
                    return {"Authorization": f"Bearer {token}"}
            return {"Authorization": f"Bearer {self._fetch_token(a, scopes)}"}
        return {}

    def _answer_challenge(self, a: _Access, response: httpx.Response) -> None:
        """Learn from a 401 how to authenticate, and get what is needed (RFC 7235)."""
        h = a.host
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if h.challenge == "basic" or self._credential(a) is None:
                raise self._auth_error(a, response)
            h.challenge = "basic"
        elif scheme == "bearer" and params.get("realm"):
            if h.challenge == "bearer":
                # We sent a token and it was refused: expired, or short of a scope.
                h.tokens = {k: v for k, v in h.tokens.items() if not a.scopes <= k}
            h.challenge, h.realm, h.service = "bearer", params["realm"], params.get("service")
            # Ask for what we need plus whatever the registry named.
            self._fetch_token(a, a.scopes | _parse_scopes(params.get("scope", "")))
        else:
            raise RegistryError(
                f"{h.name} asks for authentication we cannot answer "
                f"({scheme or 'no WWW-Authenticate challenge'}); it must offer Basic or Bearer"
            )

    def _fetch_token(self, a: _Access, scopes: Scopes) -> str:
        """A Bearer token for `scopes` from the realm (distribution docs/spec/auth/token.md)."""
        h = a.host
        realm = httpx.URL(h.realm or "")
        realm_host = realm.netloc.decode()
        if realm.scheme != "https" and not (h.insecure or realm_host in self.insecure):
            raise RegistryError(
                f"{h.name}: its token service {realm.copy_with(query=None)} is not HTTPS; "
                f"refusing to send credentials in clear. Name {realm_host} with "
                f"--insecure-registry if that is intended"
            )
        client = self._realm_clients.get(str(realm.copy_with(path="/", query=None)))
        if client is None:
            client = self._new_client(realm_host if realm.scheme == "https" else None)
            self._realm_clients[str(realm.copy_with(path="/", query=None))] = client
        cred = self._credential(a)
        ordered = _format_scopes(scopes)
        self.requests += 1
        try:
            if cred is not None and cred.identity_token:
                # OAuth2 refresh-token grant (distribution docs/spec/auth/oauth.md).
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": cred.identity_token,
                    "service": h.service or "",
                    "scope": " ".join(ordered),
                    "client_id": "reconciler",
                }
                r = client.post(realm, data=form)
            else:
                pairs: list[tuple[str, str | int | float | bool | None]] = [
                    ("scope", s) for s in ordered
                ]
                if h.service:
                    pairs.insert(0, ("service", h.service))
                query = httpx.QueryParams(pairs)
                auth = (cred.username, cred.password) if cred is not None else None
                r = client.get(realm, params=query, auth=auth)
        except httpx.HTTPError as exc:
            raise self._transport_error(h, exc, f"token service {realm_host}") from None
        if r.status_code in (401, 403):
            who = f"the credentials {cred.describe()}" if cred else "anonymous access"
            raise RegistryError(
                f"{h.name}: the token service refused {who} ({r.status_code}); "
                f"log in again with `skopeo login {h.name}` or fix the auth file"
            )
        if r.status_code == 429 or r.status_code >= 500:
            raise _Unavailable(f"{h.name}: token service answered {r.status_code}", None)
        token: str | None = None
        expires_in = 60.0
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            body = r.json()
            token = body.get("token") or body.get("access_token")
            expires_in = float(body.get("expires_in") or 60)
        if r.status_code != 200 or not isinstance(token, str) or not token:
            raise RegistryError(
                f"{h.name}: token service {realm.copy_with(query=None)} gave no token "
                f"({r.status_code}); check the registry's auth configuration"
            )
        # Renew 10 s early (the spec's minimum lifetime is 60 s).
        h.tokens[scopes] = (token, time.monotonic() + max(expires_in - 10, 5))
        return token

    def _credential(self, a: _Access) -> Credential | None:
        """The login for this repository (auth files may key by namespace)."""
        if self.credentials is None:
            return None
        return self.credentials.lookup(a.host.name, a.path)

    def _auth_error(self, a: _Access, response: httpx.Response) -> RegistryError:
        h = a.host
        cred = self._credential(a)
        _, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if cred is None:
            if self.credentials is None:
                where = "no auth file given"
            else:
                where = "in " + self.credentials.describe_checked()
                where += "".join(f"; {n}" for n in self.credentials.notes_for(h.name))
            return RegistryError(
                f"{h.name}: authentication required for {a.action} on {a.path} (no "
                f"credentials found for {h.name} {where}); log in with "
                f"`skopeo login {h.name}` or pass --authfile"
            )
        if params.get("error") == "insufficient_scope":
            return RegistryError(
                f"{h.name}: the credentials {cred.describe()} do not allow {a.action} on "
                f"{a.path}; ask the registry's admin for {a.action} access"
            )
        return RegistryError(
            f"{h.name}: the credentials {cred.describe()} were rejected for {a.action} on "
            f"{a.path} (401 unauthorized); log in again with `skopeo login {h.name}`"
        )

    def _error(self, h: _Host, r: httpx.Response, what: str) -> RegistryError:
        text = _error_text(r)
        detail = f"{r.status_code} {r.reason_phrase}" + (f": {text}" if text else "")
        if r.status_code == 429 or r.status_code >= 500:
            return _Unavailable(
                f"{h.name} failed {what} ({detail})", _retry_after(r.headers.get("Retry-After"))
            )
        if r.status_code == 403:
            return RegistryError(
                f"{h.name}: access denied {what} ({detail}); check the account's permissions"
            )
        return RegistryError(f"{h.name} refused {what} ({detail})")

    def _transport_error(self, h: _Host, exc: httpx.HTTPError, what: str = "") -> RegistryError:
        target = what or f"registry {h.name}"
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            reason = text.rpartition("certificate verify failed:")[2].split("(_ssl")[0].strip()
            return RegistryError(
                f"{target}: TLS certificate not trusted ({reason or 'verify failed'}); pass "
                f"its CA with --registry-ca FILE or put it in "
                f"/etc/containers/certs.d/{h.name}/ca.crt"
            )
        if "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER_FAILURE" in text:
            return RegistryError(
                f"{target} does not speak TLS (a plain-HTTP registry?); if it is, name it "
                f"with --insecure-registry {h.name}"
            )
        if isinstance(exc, httpx.TimeoutException):
            return RegistryError(
                f"{target} did not answer within {self.timeout_s:g} s; check the host and port",
                transient=True,
            )
        if isinstance(exc, httpx.ConnectError):
            low = text.lower()
            if "refused" in low:
                reason = "connection refused"
            elif "name or service not known" in low or "name resolution" in low:
                reason = "host name not found"
            else:
                reason = text or type(exc).__name__
            return RegistryError(
                f"{target} is unreachable ({reason}); check the host and port", transient=True
            )
        return RegistryError(f"{target}: {type(exc).__name__}: {text}", transient=True)


class _Unavailable(RegistryError):
    """429 or 5xx: transient, maybe with the registry's `Retry-After` in seconds."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message, transient=True)
        self.retry_after = retry_after


# --- helpers ---------------------------------------------------------------------------

_ACCEPT = ", ".join(MANIFEST_TYPES)


def _is_tls_refusal(r: httpx.Response) -> bool:
    """Go's TLS server answers a plain-HTTP request with a bare HTTP/1.0 400 and the
    body "Client sent an HTTP request to an HTTPS server." (net/http server.go); a HEAD
    has no body, so the bare status line is the sign."""
    if r.http_version != "HTTP/1.0" or "content-type" in r.headers:
        return False
    if r.request.method == "HEAD":
        return True
    r.read()
    return b"HTTPS server" in r.content


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _name(a: _Access, ref: str) -> str:
    return f"{a.name}{'@' if reference.is_digest(ref) else ':'}{ref}"


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


def _parse_scopes(text: str) -> Scopes:
    """`repository:a/b:pull,push repository:c:pull` → {(resource, action), ...}."""
    atoms = set()
    for scope in text.split():
        resource, _, actions = scope.rpartition(":")
        atoms |= {(resource, a) for a in actions.split(",") if a and resource}
    return frozenset(atoms)


def _format_scopes(scopes: Scopes) -> list[str]:
    """The inverse: one `type:name:actions` string per resource, sorted."""
    by_resource: dict[str, set[str]] = {}
    for resource, action in scopes:
        by_resource.setdefault(resource, set()).add(action)
    return [f"{r}:{','.join(sorted(a))}" for r, a in sorted(by_resource.items())]


_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` → ("bearer", {...}) (RFC 7235)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def _error_text(r: httpx.Response) -> str:
    """`message {detail}` from a distribution error body (OCI spec "Error Codes")."""
    try:
        errors = r.json().get("errors") or []
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return ""
    parts = []
    for e in errors[:3]:
        if not isinstance(e, dict):
            continue
        msg = str(e.get("message") or e.get("code") or "")
        detail = e.get("detail")
        if detail and len(json.dumps(detail)) <= 200:
            msg += f" {json.dumps(detail, sort_keys=True)}"
        parts.append(msg)
    return "; ".join(parts)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(float(value), 0.0)
    with contextlib.suppress(ValueError, TypeError):
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    return None
