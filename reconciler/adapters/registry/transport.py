"""Transport: one connection per registry host (TLS from system CAs, `--registry-ca`
and certs.d, or plain HTTP for named hosts), requests with auth hooks, retries with
backoff until a deadline, and failures translated into `RegistryError`s.

Stage: edge. The auth hooks are answered by `auth.Authentication`.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TypeVar

import httpx

from reconciler.adapters.registry.credentials import Credentials
from reconciler.core import reference
from reconciler.core.reference import ImageRef
from reconciler.errors import ConfigError, ConfigProblem, RegistryError

log = logging.getLogger("reconciler.adapters.registry")  # one logger for the client

DEFAULT_CERTS_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")
_API_HOSTS = {"docker.io": "registry-1.docker.io"}
_USER_AGENT = "reconciler (bootc GitOps)"

T = TypeVar("T")
# Token scopes as (resource, action) atoms, e.g. ("repository:fleet/worker", "push"), so
# that a cached pull,push token is known to cover a later pull.
Scopes = frozenset[tuple[str, str]]


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

    def __post_init__(self) -> None:
        self.url = httpx.URL(self.base_url)


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


class Transport:
    """Hosts, connections, requests and retries; the base of `RegistryClient`."""

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
        self._clones: list[Transport] = []
        self._down = _Unreachable()

    def clone(self) -> Self:
        """A client with the same settings and nothing shared but the credentials (read
        only): its own connections, tokens and counters, for another thread. Closing
        this client closes its clones too."""
        clone = type(self)(
            self.credentials,
            self.insecure,
            self.ca_file,
            self.timeout_s,
            self.retry_deadline_s,
            certs_dirs=self.certs_dirs,
        )
        clone._down = self._down  # a host one thread found unreachable is so for all
        self._clones.append(clone)
        return clone

    def close(self) -> None:
        for clone in self._clones:
            clone.close()
        self._clones.clear()
        for h in self._hosts.values():
            h.client.close()
        for c in self._realm_clients.values():
            c.close()
        self._hosts.clear()
        self._realm_clients.clear()

    # --- reading --------------------------------------------------------------------------

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run one operation; repeat it on transient failures until the deadline. A host
        that stayed unreachable until then is not tried again by any operation of this
        client or its clones for as long (`_Unreachable`): a pass with a dead registry
        reports it after one deadline, not one deadline per pool in turn."""
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
                if isinstance(exc, _StillUnreachable):
                    raise
                if not exc.transient or remaining <= 0:
                    if exc.transient and attempts > 1:
                        final = RegistryError(
                            f"{exc} (gave up after {attempts} attempts in {elapsed:.1f} s)",
                            transient=True,
                        )
                        if isinstance(exc, _HostError):
                            self._down.mark(exc.host, str(final), self.retry_deadline_s)
                        raise final from exc
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
        base = h.url
        # a path is appended (one parse; `join` parses three times: this is a good part
        # of a request's CPU, and the registry work of a pass runs under one GIL)
        if url.startswith("/"):
            full = httpx.URL(h.base_url + url)
        elif url.startswith(f"{h.base_url}/"):  # an upload session's Location, made absolute
            full = httpx.URL(url)
        else:
            full = base.join(url)
        if params:
            full = full.copy_merge_params(dict(params))
        all_headers = dict(headers or {})
        # Credentials go to the registry only, never to another host a Location names.
        if full.netloc == base.netloc:
            all_headers.update(self._auth_header(a))
        down = self._down.get(h.name)
        if down is not None:
            raise _StillUnreachable(
                f"{down}; not retried (an earlier request just gave up)", transient=True
            )
        request = h.client.build_request(method, full, headers=all_headers, content=content)
        self.requests += 1
        try:
            # Blob GETs may redirect to storage (S3, CDN); httpx drops Authorization
            # when the origin changes.
            response = h.client.send(request, stream=stream, follow_redirects=method == "GET")
        except httpx.HTTPError as exc:
            raise self._transport_error(h, exc) from None
        if log.isEnabledFor(logging.DEBUG):  # (copy_with parses the URL again)
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

    # --- auth hooks (auth.Authentication) -------------------------------------------

    def _auth_header(self, a: _Access) -> dict[str, str]:
        raise NotImplementedError

    def _answer_challenge(self, a: _Access, response: httpx.Response) -> None:
        raise NotImplementedError

    def _auth_error(self, a: _Access, response: httpx.Response) -> RegistryError:
        raise NotImplementedError

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
            return _HostError(
                h.name,
                f"{target} did not answer within {self.timeout_s:g} s; check the host and port",
            )
        if isinstance(exc, httpx.ConnectError):
            low = text.lower()
            if "refused" in low:
                reason = "connection refused"
            elif "name or service not known" in low or "name resolution" in low:
                reason = "host name not found"
            else:
                reason = text or type(exc).__name__
            return _HostError(
                h.name, f"{target} is unreachable ({reason}); check the host and port"
            )
        return _HostError(h.name, f"{target}: {type(exc).__name__}: {text}")


class _HostError(RegistryError):
    """A transient failure to reach `host` at all (refused, timed out, reset)."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(message, transient=True)
        self.host = host


class _StillUnreachable(RegistryError):
    """Not tried: the host was unreachable until a retry deadline moments ago."""


class _Unreachable:
    """Hosts that stayed unreachable until a retry deadline, with that failure, for as
    long again; shared by a client and its clones (so thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hosts: dict[str, tuple[str, float]] = {}

    def mark(self, host: str, message: str, for_s: float) -> None:
        with self._lock:
            self._hosts[host] = (message, time.monotonic() + for_s)

    def get(self, host: str) -> str | None:
        """The failure that makes `host` not worth trying now, if any."""
        with self._lock:
            found = self._hosts.get(host)
            if found is not None and found[1] <= time.monotonic():
                del self._hosts[host]
                return None
        return found[0] if found else None


class _Unavailable(RegistryError):
    """429 or 5xx: transient, maybe with the registry's `Retry-After` in seconds."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message, transient=True)
        self.retry_after = retry_after


# --- helpers ---------------------------------------------------------------------------


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
