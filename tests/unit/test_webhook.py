"""Webhook verification for every forge we accept, and the server's answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time

import httpx
import pytest

from reconciler.loop.webhook import WebhookServer, pushed_ref, verify

SECRET = b"s3cret-hook-key"
BODY = json.dumps({"ref": "refs/heads/main", "after": "ab" * 20}).encode()


def github(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    sig = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sig}"}


def gitea(body: bytes, header: str = "X-Gitea-Signature") -> dict[str, str]:
    event = header.replace("Signature", "Event")
    return {event: "push", header: hmac.new(SECRET, body, hashlib.sha256).hexdigest()}


def gitlab_signed(body: bytes, stamp: int, secret: bytes = SECRET) -> dict[str, str]:
    msg_id = "msg_2Lh9KBhUWKQ"
    mac = hmac.new(secret, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "X-Gitlab-Event": "Push Hook",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": f"v1,{base64.b64encode(mac).decode()}",
    }


NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("headers", "forge"),
    [
        (github(BODY), "github"),
        (gitea(BODY), "gitea"),
        (gitea(BODY, "X-Forgejo-Signature"), "forgejo"),
        (gitlab_signed(BODY, NOW - 10), "gitlab"),
        ({"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET.decode()}, "gitlab"),
    ],
)
def test_each_forge_verifies(headers: dict[str, str], forge: str) -> None:
    assert verify(headers, BODY, SECRET, NOW) == forge
    assert pushed_ref(headers, BODY) == "refs/heads/main"


@pytest.mark.parametrize(
    "headers",
    [
        github(BODY, secret=b"other"),
        github(BODY + b" "),  # signed another body
        {"X-Hub-Signature-256": "sha1=" + "0" * 40},
        gitlab_signed(BODY, NOW - 3600),  # replayed an hour later
        gitlab_signed(BODY, NOW, secret=b"other"),
        {"X-Gitlab-Token": "wrong"},
        {},
    ],
)
def test_forged_stale_or_unsigned_requests_are_refused(headers: dict[str, str]) -> None:
    assert verify(headers, BODY, SECRET, NOW) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Hub-Signature-256": "sha256=é" + "0" * 63},
        {"X-Gitea-Signature": "ä" * 64},
        {"X-Forgejo-Signature": "\udcff" * 64},  # a lone surrogate: not even UTF-8
        {"webhook-id": "ß", "webhook-timestamp": "١٢٣", "webhook-signature": "v1,ü"},
        {"X-Gitlab-Token": "Ω"},
    ],
)
def test_non_ascii_signatures_are_refused_not_raised(headers: dict[str, str]) -> None:
    assert verify(headers, BODY, SECRET, NOW) is None


def test_only_push_events_name_a_ref() -> None:
    assert pushed_ref({"X-GitHub-Event": "ping"}, BODY) is None
    assert pushed_ref({"X-GitHub-Event": "push"}, b"not json") is None
    assert pushed_ref({"X-GitHub-Event": "push"}, b"\xff\xfe") is None
    assert pushed_ref({"X-GitHub-Event": "push"}, b"[" * 1_000_000) is None


def post(port: int, headers: dict[str, str], body: bytes = BODY) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/hooks/git", content=body, headers=headers)


def test_server_triggers_only_on_a_verified_push_to_the_branch() -> None:
    trigger = threading.Event()
    server = WebhookServer("127.0.0.1", 0, SECRET, "main", trigger).start()
    try:
        _, port = server.address
        assert post(port, github(BODY, secret=b"forged")).status_code == 401
        assert not trigger.is_set()
        other = json.dumps({"ref": "refs/heads/feature"}).encode()
        assert post(port, github(other), other).status_code == 202
        assert not trigger.is_set()
        assert post(port, github(BODY)).status_code == 202
        assert trigger.wait(2)
        assert server.received == 1
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        signed_now = gitlab_signed(BODY, int(time.time()))
        trigger.clear()
        assert post(port, signed_now).status_code == 202
        assert trigger.is_set()
    finally:
        server.stop()


def test_a_server_without_a_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret is required"):
        WebhookServer("127.0.0.1", 0, b"", "main", threading.Event())
