"""The metrics and probe endpoint: `/metrics`, `/healthz`, `/readyz` on `--metrics-addr`.

Stage: edge, for the long-running `run` and `agent`. Inputs: a Prometheus
`CollectorRegistry` and a `Heartbeat` the loop beats. Outputs: the registry in the
Prometheus text format (`prometheus_client.generate_latest`), and probe answers:

- `/healthz` (liveness): 200 while the loop beats: its last beat is younger than
  `idle_max` between passes, or a pass has run for less than `busy_max`; else 503 with
  the age, so the kubelet restarts a loop that hangs;
- `/readyz` (readiness): 200 once the loop says it is ready (the first pass ended, or
  it stands by as a follower) and it is live; else 503.

`prometheus_client` is imported on the first scrape: a command that serves no metrics
does not pay for the import.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)


class Heartbeat:
    """When the loop last showed life, and whether it is in a pass (thread-safe)."""

    def __init__(
        self, idle_max: float, busy_max: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_max = idle_max
        self.busy_max = busy_max
        self.clock = clock
        self._lock = threading.Lock()
        self._beat = clock()
        self._busy = False
        self._ready = False
        self._why_not_ready = "the first pass has not ended"

    def beat(self, *, busy: bool = False) -> None:
        with self._lock:
            self._beat = self.clock()
            self._busy = busy

    def ready(self, ready: bool = True, why_not: str = "") -> None:
        with self._lock:
            self._ready = ready
            self._why_not_ready = why_not

    def live(self) -> tuple[bool, str]:
        with self._lock:
            age = self.clock() - self._beat
            limit = self.busy_max if self._busy else self.idle_max
            what = "in a pass" if self._busy else "between passes"
        if age > limit:
            return False, f"no heartbeat for {age:.0f}s {what} (limit {limit:.0f}s)"
        return True, f"last heartbeat {age:.0f}s ago"

    def is_ready(self) -> tuple[bool, str]:
        live, why = self.live()
        if not live:
            return False, why
        with self._lock:
            return (True, "ready") if self._ready else (False, self._why_not_ready)


def parse_addr(addr: str) -> tuple[str, int]:
    """`HOST:PORT` or `:PORT` (every address) → (host, port); ValueError if not."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{addr!r} is not HOST:PORT (e.g. :8081 or 127.0.0.1:8081)")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - the admin's choice


class MetricsServer:
    """A small threaded HTTP server for the registry and the probes."""

    def __init__(self, addr: str, registry: CollectorRegistry, heartbeat: Heartbeat) -> None:
        host, port = parse_addr(addr)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass  # a scrape every few seconds is not worth a log line

            def do_GET(self) -> None:
                server._answer(self)

        self.registry = registry
        self.heartbeat = heartbeat
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            from prometheus_client import exposition  # noqa: PLC0415 - see the docstring

            body = exposition.generate_latest(self.registry)
            code, ctype = 200, exposition.CONTENT_TYPE_LATEST
        elif path in ("/healthz", "/readyz"):
            ok, why = self.heartbeat.live() if path == "/healthz" else self.heartbeat.is_ready()
            code, ctype, body = (200 if ok else 503), "text/plain", f"{why}\n".encode()
        else:
            code, ctype, body = 404, "text/plain", b"not found: /metrics, /healthz, /readyz\n"
        request.send_response(code)
        request.send_header("Content-Type", ctype)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def start(self) -> MetricsServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz on port %d", self.port)
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
