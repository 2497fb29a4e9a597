"""Kubernetes coordination against the in-process fake API (tests/fixtures/kubeapi.py;
no kube-apiserver runs here), through the official client; and a simulated fleet of
10 agents, each with its own bootc stand-in host (state mode), converging under
`maxUnavailable: 2`."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.adapters import kube
from reconciler.adapters.bootc import Bootc, Timeouts
from reconciler.agent import health
from reconciler.agent.agent import Agent, AgentConfig
from reconciler.agent.coordination import max_unavailable
from reconciler.agent.kubernetes import ANNOTATION_PREFIX, KubernetesCoordinator
from reconciler.agent.source import MemoryPinSource, PoolPolicy
from reconciler.agent.state import Phase, StateStore
from reconciler.core import model
from reconciler.errors import ConfigError
from tests.fixtures.bootc import FakeHost, pin_text
from tests.fixtures.kubeapi import Change, FakeKube, node, pod
from tests.helpers import AGENT_NS, deploy_docs

NS = "reconciler-system"
REPO = "127.0.0.1:5000/pools/edge"
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
EDGE = model.LabelSelector(match_labels={"pool": "edge"})


def policy(max_unavail: int | str | None = 2, paused: bool = False) -> PoolPolicy:
    return PoolPolicy("edge", max_unavail, paused, EDGE, push_spec=REPO)


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        (None, 10, 1),
        (2, 10, 2),
        ("2", 10, 2),
        ("25%", 10, 2),
        ("5%", 10, 1),
        ("0%", 3, 1),
        (0, 5, 1),
        ("100%", 4, 4),
    ],
)
def test_max_unavailable_as_mco_computes_it(value, size, expected) -> None:
    assert max_unavailable(value, size) == expected


def test_max_unavailable_rejects_nonsense() -> None:
    with pytest.raises(ConfigError, match=r"spec\.maxUnavailable: maxUnavailable 'two'"):
        max_unavailable("two", 3)


def coordinator(kubeapi: FakeKube, name: str, **kw: object) -> KubernetesCoordinator:
    return KubernetesCoordinator(kube.Kube.connect(kubeapi.kubeconfig), name, NS, **kw)  # type: ignore[arg-type]


def test_slots_are_sized_by_max_unavailable_and_reentrant(kubeapi: FakeKube) -> None:
    for i in range(5):
        kubeapi.create("nodes", node(f"n{i}", {"pool": "edge"}))
    kubeapi.create("nodes", node("other", {"pool": "core"}))
    coords = [coordinator(kubeapi, f"n{i}") for i in range(5)]
    pol = policy("40%")  # of 5 nodes: 2
    assert coords[0].acquire(pol).granted
    assert coords[0].acquire(pol).granted  # re-entrant: renews its own slot
    assert coords[1].acquire(pol).granted
    refused = coords[2].acquire(pol)
    assert not refused.granted
    assert "all 2 update slot(s) of pool edge in use" in refused.detail
    assert "updating: n0, n1" in refused.detail
    coords[0].release(pol)
    assert coords[2].acquire(pol).granted
    holders = sorted(le["spec"].get("holderIdentity") or "" for le in kubeapi.list("leases", NS))
    assert holders == ["n1", "n2"]


def test_nodes_down_for_other_reasons_take_capacity(kubeapi: FakeKube) -> None:
    for i in range(4):
        kubeapi.create("nodes", node(f"n{i}", {"pool": "edge"}))
    kubeapi.patch("nodes", "n3", {"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    pol = policy(2)
    assert coordinator(kubeapi, "n0").acquire(pol).granted
    refused = coordinator(kubeapi, "n1").acquire(pol)
    assert not refused.granted
    assert "unavailable: n3" in refused.detail


def test_an_expired_lease_is_taken_over(kubeapi: FakeKube) -> None:
    kubeapi.create("nodes", node("n0", {"pool": "edge"}))
    kubeapi.create("nodes", node("n1", {"pool": "edge"}))
    t = [1000.0]
    dead = coordinator(kubeapi, "n0", lease_duration=60, clock=lambda: t[0])
    assert dead.acquire(policy(1)).granted
    alive = coordinator(kubeapi, "n1", lease_duration=60, clock=lambda: t[0])
    assert not alive.acquire(policy(1)).granted
    t[0] += 61  # n0 died: it stopped renewing
    assert alive.acquire(policy(1)).granted
    lease = kubeapi.get("leases", "reconciler-agent-edge-0", NS)
    assert lease["spec"]["holderIdentity"] == "n1"
    assert lease["spec"]["leaseTransitions"] == 1


def test_drain_evicts_through_the_api_and_waits_for_budgets(kubeapi: FakeKube) -> None:
    kubeapi.create("nodes", node("n0", {"pool": "edge"}))
    kubeapi.create("pods", pod("web-0", "n0", labels={"app": "web"}))
    kubeapi.create("pods", pod("web-1", "n1", labels={"app": "web"}))
    kubeapi.create("pods", pod("batch", "n0"))
    kubeapi.create(
        "pods",
        pod(
            "agent",
            "n0",
            metadata={
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "a", "uid": "u-1"}
                ]
            },
        ),
    )
    kubeapi.create(
        "pods", pod("etcd", "n0", metadata={"annotations": {"kubernetes.io/config.mirror": "x"}})
    )
    kubeapi.create(
        "poddisruptionbudgets",
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
        },
    )
    coord = coordinator(kubeapi, "n0")
    assert coord.cordon()
    assert not coord.cordon()  # already cordoned: not ours to undo twice
    result = coord.drain()
    assert not result.done
    assert "default/web-0" in result.detail
    assert "needs 2 healthy pods and has 2 currently" in result.detail
    left = sorted(
        p["metadata"]["name"] for p in kubeapi.list("pods", field_selector="spec.nodeName=n0")
    )
    assert left == ["agent", "etcd", "web-0"]  # batch evicted; DaemonSet and mirror pods left
    assert not [c for c in kubeapi.history if c.verb == "delete"]  # never a plain delete
    kubeapi.create("pods", pod("web-2", "n2", labels={"app": "web"}))  # replica elsewhere
    assert coord.drain().done
    coord.uncordon()
    assert not kubeapi.get("nodes", "n0")["spec"].get("unschedulable")


# --- the fleet ------------------------------------------------------------------------


class Fleet:
    """Agents with deploy/'s RBAC and node fence in force: each uses its own node-bound
    token of the agent's ServiceAccount, so a verb the Roles lack fails the run."""

    def __init__(self, kubeapi: FakeKube, tmp_path: Path, size: int, source: MemoryPinSource):
        kubeapi.enforce_rbac(deploy_docs(), node_fence=True)
        self.kubeapi = kubeapi
        self.source = source
        self.hosts: dict[str, FakeHost] = {}
        self.agents: dict[str, Agent] = {}
        for i in range(size):
            name = f"edge-{i}"
            kubeapi.create("nodes", node(name, {"pool": "edge"}))
            host = FakeHost(tmp_path / name)
            for digest in (A, B):
                host.add_image(REPO, digest)
            host.install(f"{REPO}@{A}")
            self.hosts[name] = host
            store = StateStore(tmp_path / name / "agent-state")
            self.agents[name] = Agent(
                config=AgentConfig(pool="edge", verify_grace=0),
                source=source,
                bootc=Bootc([str(host.bootc)], timeouts=Timeouts(status=20, switch=20)),
                coordinator=KubernetesCoordinator(
                    kube.Kube.connect(kubeapi.kubeconfig_for(AGENT_NS, "reconciler-agent", name)),
                    name,
                    AGENT_NS,
                ),
                store=store,
                health_checks=[health.UnitActive(systemctl=str(host.systemctl))],
                reboot_command=host.reboot_command,
                boot_id=lambda h=host: health.read_boot_id(h.boot_id_file),
            )
            # one workload pod per node, a budget over them, and a "ReplicaSet" that
            # recreates an evicted pod on a schedulable node
            kubeapi.create("pods", pod(f"web-{i}", name, labels={"app": "web"}))
        kubeapi.create(
            "poddisruptionbudgets",
            {
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"maxUnavailable": 2, "selector": {"matchLabels": {"app": "web"}}},
            },
        )
        self._serial = 0
        kubeapi.add_listener(self._replace_evicted)

    def _replace_evicted(self, change: Change) -> None:
        if change.verb != "evict":
            return
        nodes = [
            n["metadata"]["name"]
            for n in self.kubeapi.list("nodes")
            if not n["spec"].get("unschedulable")
        ]
        self._serial += 1
        self.kubeapi.create(
            "pods", pod(f"web-r{self._serial}", random.choice(nodes), labels={"app": "web"})
        )

    def run_until(self, settled: Callable[[str, Agent], bool], deadline: float = 180) -> None:
        """Every agent in its own thread, stepping until `settled` holds for all."""
        stop = time.monotonic() + deadline
        errors: list[BaseException] = []

        def loop(name: str, agent: Agent) -> None:
            try:
                while time.monotonic() < stop:
                    agent.step()
                    if settled(name, agent):
                        return
                    time.sleep(random.uniform(0.01, 0.1))
            except BaseException as exc:  # surfaced in the test
                errors.append(exc)

        threads = [threading.Thread(target=loop, args=item) for item in self.agents.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        stuck = {n: a.store.load() for n, a in self.agents.items() if not settled(n, a)}
        assert not stuck, {n: (s.phase, s.reason) for n, s in stuck.items()}
        # not one request refused, even those an agent tolerates failing (events)
        denied = [a for a in self.kubeapi.authorizations if not a.allowed]
        assert denied == [], f"deploy/agent/rbac.yaml does not grant: {denied}"

    def annotations(self, name: str) -> dict[str, str]:
        meta = self.kubeapi.get("nodes", name)["metadata"]
        return {
            k.removeprefix(ANNOTATION_PREFIX): v for k, v in (meta.get("annotations") or {}).items()
        }


@pytest.mark.slow
def test_ten_agents_converge_two_at_a_time_roll_back_one_and_follow_a_revert(
    kubeapi: FakeKube, tmp_path: Path
) -> None:
    source = MemoryPinSource()
    source.publish("edge", pin_text("edge", f"{REPO}@{A}"), policy(2))
    fleet = Fleet(kubeapi, tmp_path, 10, source)
    bad = "edge-3"
    fleet.hosts[bad].inject(boot={B: "unhealthy"})

    source.publish("edge", pin_text("edge", f"{REPO}@{B}"))

    def on_b(name: str, agent: Agent) -> bool:
        state = agent.store.load()
        if name == bad:
            return state.phase == Phase.ROLLED_BACK
        return state.phase == Phase.DONE and fleet.hosts[name].booted_digest == B

    fleet.run_until(on_b)

    # never more than 2 nodes out of service, nor 2 slot holders, at any moment
    assert kubeapi.max_concurrent("nodes", lambda n: bool(n["spec"].get("unschedulable"))) == 2
    assert kubeapi.max_concurrent("leases", lambda le: bool(le["spec"].get("holderIdentity"))) == 2
    assert len(kubeapi.list("leases", AGENT_NS)) == 2  # two slots, reused
    # everyone drained through the Eviction API, and the budget held
    assert len([c for c in kubeapi.history if c.verb == "evict"]) >= 10
    # the failing node rolled back, says so, and did not try B again
    assert fleet.hosts[bad].booted_digest == A
    notes = fleet.annotations(bad)
    assert notes["state"] == "rolled-back"
    assert "boot-complete.target is failed" in notes["reason"]
    assert notes["current-image"] == f"{REPO}@{A}"
    assert notes["desired-image"] == f"{REPO}@{B}"
    events = kubeapi.list("events", "default")
    warnings = [
        (e["reason"], e["involvedObject"]["name"]) for e in events if e["type"] == "Warning"
    ]
    assert warnings == [("RolledBack", bad)]
    updated = sorted(e["involvedObject"]["name"] for e in events if e["reason"] == "Updated")
    assert updated == sorted(set(fleet.agents) - {bad})  # one Normal event per node updated
    for _ in range(3):
        fleet.agents[bad].step()
    assert [c for c in fleet.hosts[bad].calls() if c[:1] == ["switch"]] == [
        ["switch", "--quiet", "--", f"{REPO}@{B}"]
    ]
    good = fleet.annotations("edge-0")
    assert (good["state"], good["current-image"]) == ("done", f"{REPO}@{B}")
    assert all(not n["spec"].get("unschedulable") for n in kubeapi.list("nodes"))

    # rollback by revert: the pin goes back to A and every node follows
    source.publish("edge", pin_text("edge", f"{REPO}@{A}"))
    fleet.run_until(
        lambda name, agent: (
            agent.store.load().phase == Phase.DONE and fleet.hosts[name].booted_digest == A
        )
    )
    assert kubeapi.max_concurrent("nodes", lambda n: bool(n["spec"].get("unschedulable"))) == 2
    assert fleet.annotations(bad)["state"] == "done"
    assert all(not (le["spec"].get("holderIdentity")) for le in kubeapi.list("leases", AGENT_NS))


def test_a_paused_pool_takes_no_slot_and_reports_why(kubeapi: FakeKube, tmp_path: Path) -> None:
    source = MemoryPinSource()
    source.publish("edge", pin_text("edge", f"{REPO}@{A}"), policy(2, paused=True))
    fleet = Fleet(kubeapi, tmp_path, 2, source)
    source.publish("edge", pin_text("edge", f"{REPO}@{B}"))
    for agent in fleet.agents.values():
        assert agent.step().phase == Phase.IDLE
    assert kubeapi.list("leases", AGENT_NS) == []
    assert "paused" in fleet.annotations("edge-0")["reason"]
    assert all(h.booted_digest == A for h in fleet.hosts.values())
