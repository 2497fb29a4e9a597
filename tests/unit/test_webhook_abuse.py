"""What an abusive client gets from the webhook server, over raw sockets to 127.0.0.1.

Real: the server, its threads and the loopback TCP stack. Each test runs a server with a
0.5 s request timeout and room for 4 requests at once, and the `serve` fixture fails the
test if any request left a traceback in the log, on stderr or in a thread's excepthook.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from reconciler.loop.webhook import MAX_BODY, WebhookServer

SECRET = b"s3cret-hook-key"
BODY = json.dumps({"ref": "refs/heads/main", "after": "ab" * 20}).encode()
TIMEOUT = 0.5
LIMIT = 4

Serve = Callable[..., WebhookServer]
Headers = list[tuple[bytes, bytes]]


@pytest.fixture
def serve(
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Serve]:
    caplog.set_level(logging.DEBUG, logger="reconciler.webhook")
    escaped: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    servers: list[WebhookServer] = []

    def start(secret: bytes = SECRET, timeout: float = TIMEOUT) -> WebhookServer:
        server = WebhookServer(
            "127.0.0.1",
            0,
            secret,
            "main",
            threading.Event(),
            timeout=timeout,
            max_connections=LIMIT,
        )
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()
    assert "Traceback" not in capfd.readouterr().err
    assert not escaped
    assert "Traceback" not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= 40] == []


def signed(body: bytes = BODY, secret: bytes = SECRET) -> Headers:
    sig = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return [
        (b"X-GitHub-Event", b"push"),
        (b"X-Hub-Signature-256", f"sha256={sig}".encode()),
        (b"Content-Length", str(len(body)).encode()),
    ]


def post(headers: Headers, body: bytes = BODY) -> bytes:
    lines = [b"POST /hooks/git HTTP/1.1", b"Host: 127.0.0.1", *(k + b": " + v for k, v in headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def connect(server: WebhookServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.address[1]), timeout=3)


def read_answer(sock: socket.socket, wait: float = 3.0) -> bytes:
    """All the server sends until it closes, or what came within `wait` seconds."""
    deadline, chunks = time.monotonic() + wait, []
    sock.settimeout(wait)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(server: WebhookServer, request: bytes) -> bytes:
    with connect(server) as sock:
        sock.sendall(request)
        return read_answer(sock)


def status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), f"no HTTP answer: {answer[:80]!r}"
    return int(answer.split(b" ", 2)[1])


def test_a_signed_push_triggers_a_pass(serve: Serve) -> None:
    server = serve()
    answer = exchange(server, post(signed()))
    assert status(answer) == 202
    assert answer.endswith(b"pass triggered\n")
    assert server.trigger.is_set()
    assert server.received == 1


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(b"-1", id="negative"),
        pytest.param(b"abc", id="non-numeric"),
        pytest.param(b"0x10", id="hex"),
        pytest.param(b"1e3", id="float"),
        pytest.param(b"+61", id="signed"),
        pytest.param(b"", id="empty"),
        pytest.param("٦١".encode(), id="non-ascii-digits"),
        pytest.param(b"61, 62", id="conflicting-list"),
    ],
)
def test_an_invalid_content_length_is_answered_400_at_once(serve: Serve, length: bytes) -> None:
    # 400, not 408: answered from the headers, without waiting on a body
    server = serve()
    headers = [*signed()[:2], (b"Content-Length", length)]
    with connect(server) as sock:
        sock.sendall(post(headers))
        assert status(read_answer(sock)) == 400
    assert not server.trigger.is_set()


def test_two_different_content_lengths_are_answered_400(serve: Serve) -> None:
    server = serve()
    headers = [*signed(), (b"Content-Length", b"5")]
    assert status(exchange(server, post(headers))) == 400
    assert not server.trigger.is_set()


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(str(MAX_BODY + 1).encode(), id="one-above-the-cap"),
        pytest.param(b"1" + b"0" * 12, id="a-terabyte"),
        pytest.param(b"9" * 5000, id="5000-digits"),
    ],
)
def test_a_body_above_the_cap_is_answered_413_unread(serve: Serve, length: bytes) -> None:
    # the client is still uploading when the answer comes: it gets the 413, not a reset
    server = serve()
    headers = [*signed()[:2], (b"Content-Length", length)]
    with connect(server) as sock:
        sock.sendall(post(headers))
        for _ in range(10):
            time.sleep(0.01)
            sock.sendall(b"x" * 65536)
        assert status(read_answer(sock)) == 413


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(signed()[:2], id="missing"),
        pytest.param([*signed()[:2], (b"Transfer-Encoding", b"chunked")], id="chunked"),
    ],
)
def test_a_post_without_a_length_is_answered_411(serve: Serve, headers: Headers) -> None:
    server = serve()
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    assert status(exchange(server, post(headers, body))) == 411
    assert not server.trigger.is_set()


def test_a_body_shorter_than_promised_times_out_408(serve: Serve) -> None:
    server = serve()
    headers = [*signed()[:2], (b"Content-Length", b"100")]
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(post(headers, b"x" * 10))
        answer = read_answer(sock)
        assert status(answer) == 408
        assert time.monotonic() - started < TIMEOUT + 1.5


def test_a_body_cut_short_by_the_client_is_answered_400(serve: Serve) -> None:
    server = serve()
    headers = [*signed()[:2], (b"Content-Length", b"100")]
    with connect(server) as sock:
        sock.sendall(post(headers, b"x" * 10))
        sock.shutdown(socket.SHUT_WR)
        assert status(read_answer(sock)) == 400


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"X-Hub-Signature-256", "sha256=é".encode() + b"0" * 62)], id="github"),
        pytest.param([(b"X-Hub-Signature-256", b"sha256=\xff\xfe")], id="github-not-utf8"),
        pytest.param([(b"X-Gitea-Signature", "ä".encode() * 32)], id="gitea"),
        pytest.param([(b"X-Forgejo-Signature", "ö".encode() * 32)], id="forgejo"),
        pytest.param([(b"webhook-signature", "v1,ü".encode())], id="gitlab-signature"),
        pytest.param(
            [
                (b"webhook-id", "ß".encode()),
                (b"webhook-timestamp", "١".encode()),
                (b"webhook-signature", b"v1,AAAA"),
            ],
            id="gitlab-id-and-stamp",
        ),
        pytest.param([(b"X-Gitlab-Token", "s3cret-hook-kéy".encode())], id="gitlab-token"),
    ],
)
def test_a_non_ascii_signature_is_answered_401(serve: Serve, headers: Headers) -> None:
    server = serve()
    request = post([(b"X-GitHub-Event", b"push"), *headers, signed()[2]])
    assert status(exchange(server, request)) == 401
    assert not server.trigger.is_set()


def test_a_non_ascii_gitlab_token_matches_its_utf8_secret(serve: Serve) -> None:
    secret = "sëcret-Ω".encode()
    server = serve(secret=secret)
    headers = [(b"X-Gitlab-Event", b"Push Hook"), (b"X-Gitlab-Token", secret), signed()[2]]
    assert status(exchange(server, post(headers))) == 202
    assert server.trigger.is_set()


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(b"sha256=" + b"0" * 64, id="wrong-hex"),
        pytest.param(b"sha256=", id="empty"),
        pytest.param(b"sha1=" + b"0" * 40, id="sha1"),
    ],
)
def test_a_wrong_signature_is_answered_401(serve: Serve, signature: bytes) -> None:
    server = serve()
    headers = [(b"X-GitHub-Event", b"push"), (b"X-Hub-Signature-256", signature), signed()[2]]
    answer = exchange(server, post(headers))
    assert status(answer) == 401
    assert answer.endswith(b"signature does not verify\n")
    assert not server.trigger.is_set()


def test_a_slow_client_is_cut_off_while_a_good_one_is_served(serve: Serve) -> None:
    server = serve()
    with connect(server) as slow:
        slow.sendall(b"POST /hooks/git HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started, answer, served = time.monotonic(), b"", 0
        for drip in range(40):  # a byte every 0.1 s, never ending the header
            if select.select([slow], [], [], 0.1)[0]:
                answer = read_answer(slow)
                break
            slow.sendall(b"X")
            if drip == 1:
                served = status(exchange(server, post(signed())))
        elapsed = time.monotonic() - started
    assert served == 202
    assert server.trigger.is_set()
    assert status(answer) == 408
    assert elapsed < TIMEOUT + 1.5


def test_a_flood_of_half_open_connections_is_bounded(serve: Serve) -> None:
    baseline = threading.active_count()
    server = serve()
    flood: list[socket.socket] = []
    peak = 0
    try:
        opening = time.monotonic()
        for n in range(200):
            flood.append(connect(server))
            if n % 10 == 0:
                peak = max(peak, threading.active_count())
        # each TIMEOUT that passes while opening frees LIMIT slots for the next ones
        holdable = LIMIT * (1 + int((time.monotonic() - opening) / TIMEOUT))
        # the good client retries on 503 (or a reset) until the held ones time out
        started, answer = time.monotonic(), b""
        while time.monotonic() - started < 5 and not answer.startswith(b"HTTP/1.0 202"):
            peak = max(peak, threading.active_count())
            try:
                answer = exchange(server, post(signed()))
            except ConnectionResetError:
                answer = b""
            if not answer.startswith(b"HTTP/1.0 202"):
                time.sleep(0.05)
        waited = time.monotonic() - started
        answers = [read_answer(s, 1) for s in flood]
    finally:
        for s in flood:
            s.close()
    assert status(answer) == 202
    assert server.trigger.is_set()
    assert waited < TIMEOUT + 2.5
    # each was refused at once or held until its timeout, and none is left hanging
    assert {a if a == b"" else a.split(b"\r\n", 1)[0] for a in answers} <= {
        b"",
        b"HTTP/1.0 503 Service Unavailable",
    }
    assert sum(a == b"" for a in answers) <= holdable
    assert peak <= baseline + 1 + LIMIT  # the accepting thread and one per request served


def test_stop_is_prompt_while_clients_hold_connections(serve: Serve) -> None:
    server = serve(timeout=30)
    held = [connect(server) for _ in range(LIMIT)]
    try:
        for sock in held:
            sock.sendall(b"POST /hooks/git HTTP/1.1\r\n")
        assert status(exchange(server, b"GET /healthz HTTP/1.1\r\n\r\n")) == 503
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
        for sock in held:  # cut, not left waiting out their 30 s
            assert select.select([sock], [], [], 1)[0]
    finally:
        for sock in held:
            sock.close()
    with pytest.raises(ConnectionRefusedError):
        connect(server)


def test_a_client_that_resets_mid_request_does_not_disturb_the_next(serve: Serve) -> None:
    server = serve()
    sock = connect(server)
    sock.sendall(post([*signed()[:2], (b"Content-Length", b"100")], b"x" * 10))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset, not a close
    assert status(exchange(server, post(signed()))) == 202
    assert server.trigger.is_set()


@pytest.mark.parametrize(
    ("request_bytes", "says"),
    [
        # one word is an HTTP/0.9 request to http.server: an answer without a status line
        pytest.param(b"GARBAGE\r\n\r\n", b"Error code: 400", id="no-method"),
        pytest.param(b"\xff\xfe /hooks/git HTTP/1.1\r\n\r\n", b"HTTP/1.0 501", id="binary-method"),
        pytest.param(
            b"POST /hooks/git HTTP/1.1\r\n" + b"X: " + b"y" * 70000 + b"\r\n\r\n",
            b"HTTP/1.0 431",
            id="huge-header",
        ),
    ],
)
def test_garbage_is_answered_without_a_traceback(
    serve: Serve, request_bytes: bytes, says: bytes
) -> None:
    server = serve()
    assert says in exchange(server, request_bytes)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="above 0"):
        WebhookServer("127.0.0.1", 0, SECRET, "main", threading.Event(), timeout=0)
    with pytest.raises(ValueError, match="1 or more"):
        WebhookServer("127.0.0.1", 0, SECRET, "main", threading.Event(), max_connections=0)
