"""Push webhooks: start a pass as soon as the forge says the branch moved.

Stage: a trigger for the loop, nothing more: a verified push to the watched branch sets
an event the loop waits on; the pass itself still asks Git what the head is (a webhook
is a hint, never a source of truth, so a forged or replayed one can at worst cause one
extra `ls-remote`).

What is verified, per forge (all comparisons constant-time, `hmac.compare_digest`):
- GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`;
- Gitea / Forgejo: `X-Gitea-Signature` / `X-Forgejo-Signature`: the hex HMAC-SHA256;
- GitLab: with a signing token, the Standard Webhooks `webhook-signature: v1,<base64
  HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<body>")>` with the timestamp
  within five minutes; else the legacy `X-Gitlab-Token` header, which is the secret
  itself (GitLab's only option before signing tokens).
A request that verifies under none of these is refused with 401 and no detail.

Hand-written on the standard library's `ThreadingHTTPServer`: one POST route, and no
web framework is a project dependency. Bodies are capped at 25 MiB (GitHub's limit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

MAX_BODY = 25 * 1024 * 1024
TIMESTAMP_TOLERANCE_S = 300


def _hex_hmac(secret: bytes, data: bytes) -> str:
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def verify(headers: Mapping[str, str], body: bytes, secret: bytes, now: float) -> str | None:
    """The forge that signed the request, or None if it does not verify."""
    h = {k.lower(): v for k, v in headers.items()}
    github = h.get("x-hub-signature-256", "")
    if github.startswith("sha256=") and hmac.compare_digest(github[7:], _hex_hmac(secret, body)):
        return "github"
    for name, forge in (("x-forgejo-signature", "forgejo"), ("x-gitea-signature", "gitea")):
        if name in h and hmac.compare_digest(h[name], _hex_hmac(secret, body)):
            return forge
    if "webhook-signature" in h:
        msg_id, stamp = h.get("webhook-id", ""), h.get("webhook-timestamp", "")
        try:
            fresh = abs(now - int(stamp)) <= TIMESTAMP_TOLERANCE_S
        except ValueError:
            fresh = False
        expected = base64.b64encode(
            hmac.new(secret, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        ).decode()
        for sig in h["webhook-signature"].split():
            version, _, value = sig.partition(",")
            if fresh and version == "v1" and hmac.compare_digest(value, expected):
                return "gitlab"
    token = h.get("x-gitlab-token")
    if token is not None and hmac.compare_digest(token.encode(), secret):
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
    except ValueError:
        return None
    ref = doc.get("ref") if isinstance(doc, dict) else None
    return ref if isinstance(ref, str) else None


class WebhookServer:
    """Serves `POST /hooks/git` on `host:port`; a verified push to `branch` sets
    `trigger`. Run with `start()`, stop with `stop()`."""

    def __init__(
        self,
        host: str,
        port: int,
        secret: bytes,
        branch: str,
        trigger: threading.Event,
    ) -> None:
        if not secret:
            raise ValueError("a webhook secret is required (an unauthenticated trigger is not)")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path.split("?", 1)[0] != "/hooks/git":
                    self._answer(404, "not found")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._answer(413, "payload too large")
                    return
                body = self.rfile.read(length)
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

            def do_GET(self) -> None:
                self._answer(200 if self.path == "/healthz" else 404, "ok")

            def _answer(self, code: int, text: str) -> None:
                data = (text + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("webhook: " + format, *args)

        self.secret = secret
        self.branch = branch
        self.trigger = trigger
        self.received = 0
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> WebhookServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
