"""The agent's metrics and probes over HTTP: what `reconciler agent --metrics-addr`
serves, scraped and parsed with prometheus_client's parser while two agents (bootc
stand-in hosts, the fake Kubernetes API with deploy/'s RBAC) update to a new pin."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from reconciler.adapters.metrics import Heartbeat, MetricsServer
from reconciler.agent.metrics import AgentMetrics
from reconciler.agent.source import MemoryPinSource
from reconciler.agent.state import Phase
from tests.fixtures.bootc import pin_text
from tests.fixtures.kubeapi import FakeKube
from tests.integration.test_agent_kubernetes import REPO, B, Fleet, policy


def samples(port: int) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text)
            for s in f.samples]  # fmt: skip


def test_agent_phase_and_images_are_scraped(kubeapi: FakeKube, tmp_path: Path) -> None:
    source = MemoryPinSource()
    source.publish("edge", pin_text("edge", f"{REPO}@{'sha256:' + 'a' * 64}"), policy(2))
    fleet = Fleet(kubeapi, tmp_path, 2, source)
    agent = fleet.agents["edge-0"]
    metrics = AgentMetrics("edge-0")
    agent.coordinator = metrics.wrap(agent.coordinator)
    beat = Heartbeat(idle_max=60, busy_max=600)
    server = MetricsServer("127.0.0.1:0", metrics.registry, beat).start()
    try:
        agent.step()
        source.publish("edge", pin_text("edge", f"{REPO}@{B}"))
        for _ in range(10):
            if agent.step().phase == Phase.DONE and fleet.hosts["edge-0"].booted_digest == B:
                break
        beat.ready()
        found = samples(server.port)
        phases = {s[1]["phase"]: s[2] for s in found if s[0] == "reconciler_agent_phase"}
        assert phases["done"] == 1
        assert sum(phases.values()) == 1  # exactly one phase at a time
        assert set(phases) == {p.value for p in Phase}
        booted = [s for s in found if s[0] == "reconciler_agent_booted_image_info"]
        assert [(s[1]["node"], s[1]["pool"], s[1]["digest"]) for s in booted] == [
            ("edge-0", "edge", B)
        ]  # the old image's series is gone
        desired = [s[1]["image"] for s in found if s[0] == "reconciler_agent_desired_image_info"]
        assert desired == [f"{REPO}@{B}"]
        entered = {s[1]["phase"]: s[2] for s in found
                   if s[0] == "reconciler_agent_phase_transitions_total"}  # fmt: skip
        # reported once per step: the step that switches ends in rebooting
        assert entered == {"done": 2, "rebooting": 1}
        assert httpx.get(f"http://127.0.0.1:{server.port}/healthz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{server.port}/readyz").status_code == 200
    finally:
        server.stop()


def test_probes_fail_when_the_loop_stops_beating() -> None:
    now = [0.0]
    beat = Heartbeat(idle_max=60, busy_max=600, clock=lambda: now[0])
    server = MetricsServer("127.0.0.1:0", AgentMetrics("n").registry, beat).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz")
        assert (ready.status_code, ready.text) == (503, "the first pass has not ended\n")
        beat.ready()
        assert httpx.get(f"{url}/readyz").status_code == 200
        beat.beat(busy=True)
        now[0] += 300  # a long step (a build, a bootc switch) is still alive
        assert httpx.get(f"{url}/healthz").status_code == 200
        now[0] += 301
        dead = httpx.get(f"{url}/healthz")
        assert dead.status_code == 503
        assert "no heartbeat for 601s in a pass (limit 600s)" in dead.text
        assert httpx.get(f"{url}/readyz").status_code == 503
        beat.beat()
        now[0] += 61
        assert "between passes (limit 60s)" in httpx.get(f"{url}/healthz").text
        assert httpx.get(f"{url}/nothing").status_code == 404
    finally:
        server.stop()
