"""Push webhooks: start a pass as soon as the forge says the branch moved.

Stage: a trigger for the loop, nothing more: a verified push to the watched branch sets
an event the loop waits on; the pass itself still asks Git what the head is (a webhook
is a hint, never a source of truth, so a forged or replayed one can at worst cause one
extra `ls-remote`).

What is verified, per forge (all comparisons constant-time, `hmac.compare_digest` on the
header's bytes as they came off the wire):
- GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`;
- Gitea / Forgejo: `X-Gitea-Signature` / `X-Forgejo-Signature`: the hex HMAC-SHA256;
- GitLab: with a signing token, the Standard Webhooks `webhook-signature: v1,<base64
  HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<body>")>` with the timestamp
  within five minutes; else the legacy `X-Gitlab-Token` header, which is the secret
  itself (GitLab's only option before signing tokens).
A request that verifies under none of these is refused with 401 and no detail.

Hand-written on the standard library's `ThreadingHTTPServer`: one POST route, and no
web framework is a project dependency. Anyone who can reach the port can talk to it, so
what a client can cost is bounded before anything is verified:
- the body: at most 25 MiB (GitHub's limit); a POST without a valid `Content-Length` is
  refused before a byte of body is read: 411 when it is missing or the body is chunked
  (RFC 9110 §15.5.12: the server needs a length), 400 when it is not one plain number
  (RFC 9112 §6.3), 413 above the cap;
- the time: the whole request must arrive within `timeout` seconds of the connection
  (408 if it started and did not finish), so a slow client cannot hold a thread;
- the threads: at most `max_connections` requests are served at once; one more
  connection is answered 503 and closed by the accepting thread, which never blocks.
One request per connection; no client input ends in a traceback (the server's error
hook logs one line).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger("reconciler.webhook")  # the logger keeps its name across moves

MAX_BODY = 25 * 1024 * 1024
TIMESTAMP_TOLERANCE_S = 300
# GitHub gives up on a delivery after 10 s, so a request slower than that is lost anyway.
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 16
# What is read and dropped after an answer to a request not read to its end, so a client
# still sending gets the answer rather than a reset (a "lingering close", as nginx does).
LINGER_BYTES = 1024 * 1024
LINGER_S = 1.0
# How often serve_forever looks for a stop: `stop()` waits up to this long.
POLL_S = 0.1

_Request = socket.socket | tuple[bytes, socket.socket]


def _octets(value: str) -> bytes:
    """A header value as the bytes it arrived as.

    http.server decodes header fields as ISO-8859-1 (field values are octets, RFC 9110
    §5.5), so encoding back recovers them exactly; a wider character cannot have come off
    the wire (a caller's own string), and is taken as UTF-8.
    """
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def _hex_hmac(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.sha256).hexdigest().encode()


def verify(headers: Mapping[str, str], body: bytes, secret: bytes, now: float) -> str | None:
    """The forge that signed the request, or None if it does not verify."""
    h = {k.lower(): _octets(v) for k, v in headers.items()}
    hex_mac = _hex_hmac(secret, body)
    github = h.get("x-hub-signature-256", b"")
    if github.startswith(b"sha256=") and hmac.compare_digest(github[7:], hex_mac):
        return "github"
    for name, forge in (("x-forgejo-signature", "forgejo"), ("x-gitea-signature", "gitea")):
        if name in h and hmac.compare_digest(h[name], hex_mac):
            return forge
    if "webhook-signature" in h:
        msg_id, stamp = h.get("webhook-id", b""), h.get("webhook-timestamp", b"")
        # bytes.isdigit is ASCII-only; the length check keeps int() off a 64 kB number
        fresh = (
            stamp.isdigit() and len(stamp) < 20 and abs(now - int(stamp)) <= TIMESTAMP_TOLERANCE_S
        )
        expected = base64.b64encode(
            hmac.new(secret, msg_id + b"." + stamp + b"." + body, hashlib.sha256).digest()
        )
        for sig in h["webhook-signature"].split():
            version, _, value = sig.partition(b",")
            if fresh and version == b"v1" and hmac.compare_digest(value, expected):
                return "gitlab"
    token = h.get("x-gitlab-token")
    if token is not None and hmac.compare_digest(token, secret):
        return "gitlab"
    return None


def pushed_ref(headers: Mapping[str, str], body: bytes) -> str | None:
    """The ref a push event moved (`refs/heads/main`), None for other events."""
    h = {k.lower(): v for k, v in headers.items()}
    event = (
        h.get("x-github-event")
        or h.get("x-gitea-event")
        or h.get("x-forgejo-event")
        or h.get("x-gitlab-event")
        or ""
    )
    if event not in ("push", "Push Hook"):
        return None
    try:
        doc: Any = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: `[[[[…` nested a million deep
        return None
    ref = doc.get("ref") if isinstance(doc, dict) else None
    return ref if isinstance(ref, str) else None


def _raw_answer(code: int, text: str) -> bytes:
    """A whole response, for where no request was parsed (refused or timed out)."""
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.0 {code} {HTTPStatus(code).phrase}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _RequestTimeout(Exception):
    """The request's deadline passed. Not a TimeoutError: http.server swallows those
    silently, and a client that sent part of a request is owed a 408."""


class _DeadlineReader(io.RawIOBase):
    """Socket reads against one deadline for the whole request.

    A per-read socket timeout alone lets a client that sends a byte a second hold its
    thread forever (slowloris); here every read waits only for what is left.
    """

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._deadline = time.monotonic() + timeout
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _RequestTimeout
        self._sock.settimeout(left)
        try:
            n = self._sock.recv_into(buffer)
        except TimeoutError:
            raise _RequestTimeout from None
        self.received += n
        return n


def _linger(sock: socket.socket, seconds: float) -> None:
    """Half-close, then read and drop what the client still sends, bounded in bytes and time."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        deadline, drained = time.monotonic() + seconds, 0
        while drained < LINGER_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                break
            drained += len(chunk)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a bound on concurrent requests, no tracebacks, and
    connections `stop()` can cut."""

    daemon_threads = True
    block_on_close = False  # close_connections() joins the handlers, with a bound
    request_queue_size = 1024  # a burst waits in the kernel's queue, not in SYN retries

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int,
    ) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._open: dict[_Request, threading.Thread] = {}
        self._refused = 0
        super().__init__(address, handler)

    def process_request(self, request: _Request, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"webhook {client_address[0]}",
            daemon=True,
        )
        with self._lock:
            self._open[request] = thread
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: refused like one over the limit
            with self._lock:
                del self._open[request]
            self._slots.release()
            self._refuse(request)

    def process_request_thread(self, request: _Request, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                del self._open[request]
                idle, refused = not self._open, self._refused
                if idle:
                    self._refused = 0
            self._slots.release()
            if idle and refused:
                log.info("webhook: accepting again after refusing %d connections", refused)

    def _refuse(self, request: _Request) -> None:
        with self._lock:
            self._refused += 1
            first = self._refused == 1
        if first:  # once per busy spell, not once per connection
            log.warning(
                "webhook: %d requests in progress; answering 503 until one ends",
                self._max_connections,
            )
        if isinstance(request, socket.socket):
            with contextlib.suppress(OSError):
                # non-blocking: this is the accepting thread, a client that reads
                # nothing must not stall it
                request.setblocking(False)
                request.send(_raw_answer(503, "busy: too many requests in progress"))
        self.close_request(request)

    def handle_error(self, request: _Request, client_address: Any) -> None:
        # socketserver's default prints a traceback to stderr; a client that resets or
        # vanishes is routine, and anything else is said in one line.
        exc = sys.exception()
        if isinstance(exc, OSError):
            log.debug("webhook: connection from %s ended: %s", client_address[0], exc)
        else:
            log.error(
                "webhook: request from %s failed: %s: %s",
                client_address[0],
                type(exc).__name__,
                exc,
            )

    def close_connections(self, wait: float) -> None:
        """Wake every handler blocked on its client and wait up to `wait` seconds for them."""
        with self._lock:
            open_now = list(self._open.items())
        for request, _ in open_now:
            if isinstance(request, socket.socket):
                with contextlib.suppress(OSError):
                    request.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + wait
        for _, thread in open_now:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))


class WebhookServer:
    """Serves `POST /hooks/git` on `host:port`; a verified push to `branch` sets
    `trigger`. Run with `start()`, stop with `stop()`.

    `timeout`: seconds a client has to send its whole request; `max_connections`: requests
    served at once (more are answered 503).
    """

    def __init__(
        self,
        host: str,
        port: int,
        secret: bytes,
        branch: str,
        trigger: threading.Event,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if not secret:
            raise ValueError("a webhook secret is required (an unauthenticated trigger is not)")
        if not timeout > 0:
            raise ValueError(f"webhook timeout {timeout!r}: give a number of seconds above 0")
        if max_connections < 1:
            raise ValueError(f"webhook max_connections {max_connections!r}: give 1 or more")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            _reader: _DeadlineReader
            _consumed = False  # the whole request was read: nothing left to linger for

            def setup(self) -> None:
                super().setup()
                self.rfile.close()  # its socket reference would delay the socket's close
                self._reader = _DeadlineReader(self.connection, outer.timeout)
                self.rfile = io.BufferedReader(self._reader)

            def finish(self) -> None:
                super().finish()
                # a client that sent nothing gets no answer to protect, and holding its
                # slot longer would only help a flood of them
                if self._reader.received and not self._consumed:
                    _linger(self.connection, min(outer.timeout, LINGER_S))

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except _RequestTimeout:
                    self.close_connection = True
                    log.debug("webhook: %s: request timed out", self.client_address[0])
                    if self._reader.received:  # a client that never spoke is owed nothing
                        self.connection.settimeout(outer.timeout)
                        self.wfile.write(_raw_answer(408, "request timeout"))

            def do_POST(self) -> None:
                if self.path.split("?", 1)[0] != "/hooks/git":
                    self._answer(404, "not found")
                    return
                body = self._read_body()
                if body is None:
                    return
                headers = {k: v for k, v in self.headers.items()}
                forge = verify(headers, body, outer.secret, time.time())
                if forge is None:
                    self._answer(401, "signature does not verify")
                    return
                ref = pushed_ref(headers, body)
                if ref != f"refs/heads/{outer.branch}":
                    self._answer(202, "ignored: not a push to the watched branch")
                    return
                outer.received += 1
                log.info("webhook from %s: push to %s; starting a pass", forge, ref)
                outer.trigger.set()
                self._answer(202, "pass triggered")

            def _read_body(self) -> bytes | None:
                """The body, or None once a refusal is sent; never reads past the cap."""
                if self.headers.get("Transfer-Encoding") is not None:
                    self._answer(411, "length required: send Content-Length, not chunks")
                    return None
                values = self.headers.get_all("Content-Length") or []
                if not values:
                    self._answer(411, "length required")
                    return None
                # RFC 9110 §8.6: 1*DIGIT; repeats of one value (`5, 5`) are that value
                fields = {f.strip(" \t") for value in values for f in value.split(",")}
                if len(fields) != 1 or not all(f.isascii() and f.isdigit() for f in fields):
                    self._answer(400, "bad Content-Length: give one number of bytes")
                    return None
                digits = fields.pop().lstrip("0") or "0"
                # the length check first: int() refuses numbers of over 4300 digits
                if len(digits) > len(str(MAX_BODY)) or int(digits) > MAX_BODY:
                    self._answer(413, f"payload too large: at most {MAX_BODY} bytes")
                    return None
                length = int(digits)
                body = self.rfile.read(length)
                if len(body) < length:
                    self._answer(400, "body shorter than Content-Length")
                    return None
                self._consumed = True
                return body

            def do_GET(self) -> None:
                self._consumed = all(
                    h not in self.headers for h in ("Content-Length", "Transfer-Encoding")
                )
                self._answer(200 if self.path == "/healthz" else 404, "ok")

            def _answer(self, code: int, text: str) -> None:
                data = (text + "\n").encode()
                # the read deadline may be all but spent; an answer gets a full timeout
                self.connection.settimeout(outer.timeout)
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("webhook: " + format, *args)

        self.secret = secret
        self.branch = branch
        self.trigger = trigger
        self.timeout = timeout
        self.received = 0
        self.server = _Server((host, port), Handler, max_connections)
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(POLL_S,), daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> WebhookServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut the connections in progress, and return within about a
        second."""
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        self.server.close_connections(wait=1.0)
        self._thread.join(5)
