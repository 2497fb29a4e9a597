"""FleetLock coordination: the agent speaks the protocol Zincati speaks
(coreos/zincati docs/development/fleetlock/protocol.md) to a small in-test lock server
modelled on airlock (a re-entrant counting semaphore per group, slots from config)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.bootc import Bootc
from reconciler.agent import health
from reconciler.agent.agent import Agent, AgentConfig
from reconciler.agent.coordination import FleetLock
from reconciler.agent.source import MemoryPinSource, PoolPolicy
from reconciler.agent.state import Phase, StateStore
from tests.fixtures.bootc import FakeHost, pin_text

REPO = "127.0.0.1:5000/pools/kiosk"
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


class LockServer:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.holders: dict[str, set[str]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, doc: dict[str, Any] | None = None) -> None:
                body = json.dumps(doc or {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.calls.append((self.path, body))
                if self.headers.get("fleet-lock-protocol") != "true":
                    self._answer(400, {"kind": "missing_header", "value": "fleet-lock-protocol"})
                    return
                params = body["client_params"]
                with lock:
                    held = server.holders.setdefault(params["group"], set())
                    if self.path == "/v1/pre-reboot":
                        if params["id"] in held or len(held) < server.slots:
                            held.add(params["id"])
                            self._answer(200)
                        else:
                            self._answer(
                                409,
                                {"kind": "failed_lock", "value": f"all {server.slots} slots held"},
                            )
                    elif self.path == "/v1/steady-state":
                        held.discard(params["id"])
                        self._answer(200)
                    else:
                        self._answer(404, {"kind": "not_found", "value": self.path})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def lock_server() -> Iterator[LockServer]:
    server = LockServer(slots=1)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def make(tmp_path: Path, name: str, url: str, source: MemoryPinSource) -> tuple[Agent, FakeHost]:
    host = FakeHost(tmp_path / name)
    for digest in (A, B):
        host.add_image(REPO, digest)
    host.install(f"{REPO}@{A}")
    agent = Agent(
        config=AgentConfig(pool="kiosk"),
        source=source,
        bootc=Bootc([str(host.bootc)]),
        coordinator=FleetLock(url, node_id=name),
        store=StateStore(tmp_path / name / "state"),
        health_checks=[health.UnitActive(systemctl=str(host.systemctl))],
        reboot_command=host.reboot_command,
        boot_id=lambda: health.read_boot_id(host.boot_id_file),
    )
    return agent, host


def test_one_slot_serialises_two_machines(lock_server: LockServer, tmp_path: Path) -> None:
    source = MemoryPinSource()
    source.publish("kiosk", pin_text("kiosk", f"{REPO}@{B}"), PoolPolicy("kiosk", push_spec=REPO))
    first, first_host = make(tmp_path, "kiosk-1", lock_server.url, source)
    second, second_host = make(tmp_path, "kiosk-2", lock_server.url, source)

    assert first.step().phase == Phase.REBOOTING
    waiting = second.step()
    assert waiting.phase == Phase.IDLE
    assert "FleetLock /v1/pre-reboot answered 409 (failed_lock: all 1 slots held)" in waiting.reason
    assert second_host.booted_digest == A

    assert first.step().phase == Phase.DONE  # verified: steady-state releases the slot
    assert second.step().phase == Phase.REBOOTING
    assert second.step().phase == Phase.DONE
    assert (first_host.booted_digest, second_host.booted_digest) == (B, B)

    # the wire format Zincati uses: group = pool, id = node, both calls in order
    paths = [(p, b["client_params"]["id"]) for p, b in lock_server.calls]
    # (pre-reboot is re-entrant: the holder calls it again to confirm before draining)
    assert paths == [
        ("/v1/steady-state", "kiosk-1"),  # startup: release anything left from before
        ("/v1/pre-reboot", "kiosk-1"),
        ("/v1/pre-reboot", "kiosk-1"),
        ("/v1/steady-state", "kiosk-2"),
        ("/v1/pre-reboot", "kiosk-2"),  # refused: kiosk-1 holds the only slot
        ("/v1/steady-state", "kiosk-1"),  # verified: unlock
        ("/v1/pre-reboot", "kiosk-2"),
        ("/v1/pre-reboot", "kiosk-2"),
        ("/v1/steady-state", "kiosk-2"),
    ]
    assert all(b["client_params"]["group"] == "kiosk" for _, b in lock_server.calls)
    assert lock_server.holders["kiosk"] == set()


def test_an_unreachable_lock_server_means_no_update(tmp_path: Path) -> None:
    source = MemoryPinSource()
    source.publish("kiosk", pin_text("kiosk", f"{REPO}@{B}"), PoolPolicy("kiosk", push_spec=REPO))
    agent, host = make(tmp_path, "kiosk-1", "http://127.0.0.1:9", source)
    state = agent.step()
    assert state.phase == Phase.IDLE
    assert "FleetLock http://127.0.0.1:9/v1/pre-reboot: ConnectError" in state.reason
    assert [c for c in host.calls() if c[:1] == ["switch"]] == []
