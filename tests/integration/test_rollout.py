"""A progressive rollout across a 10-node fleet, and the pool's status in the cluster.

Real: the agents (each with its own bootc stand-in host), their Kubernetes coordination
and the reconciler's cluster-status writer, through the official client, with
deploy/'s RBAC and the agent's node fence in force (every agent and the reconciler use
their own ServiceAccount's token); deploy/'s BootcPool CRD, created in the API.
Stand-in: the API server (tests/fixtures/kubeapi.py), which serves the CRD with its
status subresource, schema validation and printer columns as the apiextensions
server does. The agents step in turn (round-robin), so every count can be checked
against the hosts themselves after each round.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from reconciler.adapters import kube
from reconciler.agent.source import MemoryPinSource, PoolPolicy
from reconciler.agent.state import Phase
from reconciler.core import model, rollout
from reconciler.loop.clusterstatus import ClusterStatus
from reconciler.loop.status import Condition, Status
from tests.fixtures.bootc import pin_text
from tests.fixtures.kubeapi import FakeKube
from tests.helpers import deploy_docs
from tests.integration.test_agent_kubernetes import EDGE, REPO, A, B, Fleet

NS = "bootc-gitops"  # deploy/reconciler's namespace
C = "sha256:" + "c" * 64


def rollout_policy(**kw: Any) -> PoolPolicy:
    return PoolPolicy("edge", 2, False, EDGE, push_spec=REPO, rollout=model.Rollout(**kw))


class Cluster:
    """The fleet, plus the reconciler's view: its Status for pool edge and a
    ClusterStatus writing BootcPool/edge with the reconciler's own token."""

    def __init__(self, kubeapi: FakeKube, tmp_path: Path, policy: PoolPolicy) -> None:
        docs = deploy_docs()
        for crd in (d for d in docs if d["kind"] == "CustomResourceDefinition"):
            kubeapi.create("customresourcedefinitions", crd)
        self.source = MemoryPinSource()
        self.source.publish("edge", pin_text("edge", f"{REPO}@{A}"), policy)
        self.fleet = Fleet(kubeapi, tmp_path, 10, self.source)
        for host in self.fleet.hosts.values():
            host.add_image(REPO, C)
        self.kubeapi = kubeapi
        self.policy = policy
        self.kubeconfig = kubeapi.kubeconfig_for(NS, "reconciler")
        api = kube.Kube.connect(self.kubeconfig)
        self.writer = ClusterStatus(api, NS, lambda head: {"edge": self.policy.rollout})
        self.status = Status(observed_head="1" * 40)
        self.pin(A)

    def pin(self, digest: str, policy: PoolPolicy | None = None) -> None:
        self.policy = policy or self.policy
        self.source.publish("edge", pin_text("edge", f"{REPO}@{digest}"), self.policy)
        pool = self.status.pool("edge")
        pool.image = f"{REPO}@{digest}"
        pool.source_commit = "2" * 40
        pool.conditions["Ready"] = Condition(True, "Pinned", f"pinned to {pool.image}", 1.0)

    def round(self) -> dict[str, Any]:
        """Every agent steps once, then the reconciler publishes; BootcPool/edge."""
        for agent in self.fleet.agents.values():
            agent.step()
        self.writer.publish(self.status)
        return self.kubeapi.get("bootcpools", "edge", NS)

    def expected_counts(self, digest: str) -> dict[str, int]:
        """The counts from the hosts and the agents' own state files (not annotations)."""
        states = {n: a.store.load() for n, a in self.fleet.agents.items()}
        updated = [
            n for n, s in states.items()
            if s.phase == Phase.DONE and self.fleet.hosts[n].booted_digest == digest
        ]  # fmt: skip
        nodes = {n["metadata"]["name"]: n for n in self.kubeapi.list("nodes")}
        return {
            "machineCount": len(states),
            "updatedMachineCount": len(updated),
            "readyMachineCount": sum(not nodes[n]["spec"].get("unschedulable") for n in updated),
            "unavailableMachineCount": sum(
                bool(nodes[n]["spec"].get("unschedulable"))
                or s.phase.value in rollout.IN_FLIGHT_PHASES
                for n, s in states.items()
            ),
            "degradedMachineCount": sum(
                s.phase in (Phase.DEGRADED, Phase.ROLLED_BACK) for s in states.values()
            ),
        }

    def started(self, digest: str) -> list[str]:
        """Nodes whose host ever ran `bootc switch` to `digest`, in name order."""
        return sorted(
            n for n, h in self.fleet.hosts.items()
            if any(c[:1] == ["switch"] and c[-1].endswith(digest) for c in h.calls())
        )  # fmt: skip


def counts(obj: dict[str, Any]) -> dict[str, int]:
    keys = ("machineCount", "updatedMachineCount", "readyMachineCount",
            "unavailableMachineCount", "degradedMachineCount")  # fmt: skip
    return {k: obj["status"][k] for k in keys}


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


@pytest.mark.slow
def test_a_canary_of_one_updates_first_and_the_counts_follow_the_fleet(
    kubeapi: FakeKube, tmp_path: Path
) -> None:
    cluster = Cluster(kubeapi, tmp_path, rollout_policy(canary=1, soak_seconds=0))
    first = cluster.round()
    assert counts(first) == cluster.expected_counts(A) == {
        "machineCount": 10, "updatedMachineCount": 10, "readyMachineCount": 10,
        "unavailableMachineCount": 0, "degradedMachineCount": 0,
    }  # fmt: skip
    cluster.pin(B)
    seen_canary_only = False
    for _ in range(40):
        obj = cluster.round()
        assert counts(obj) == cluster.expected_counts(B)  # after every round
        started = cluster.started(B)
        if started and len(started) == 1:
            assert started == ["edge-0"]  # the canary: first by name
            assert obj["status"]["rollout"]["phase"] in (rollout.CANARY, rollout.PROGRESSING)
            seen_canary_only = True
        if obj["status"]["updatedMachineCount"] == 10:
            break
    assert seen_canary_only

    # nobody else began before the canary was done on B
    def notes(change: Any) -> dict[str, str]:
        return change.object["metadata"].get("annotations") or {}

    done_at = min(c.rv for c in kubeapi.changes("nodes") if c.name == "edge-0"
                  and notes(c).get(rollout.STATE) == "done"
                  and notes(c).get(rollout.CURRENT_IMAGE) == f"{REPO}@{B}")  # fmt: skip
    others = [c.rv for c in kubeapi.changes("nodes") if c.name != "edge-0"
              and notes(c).get(rollout.DESIRED_IMAGE) == f"{REPO}@{B}"]  # fmt: skip
    assert others
    assert min(others) > done_at
    final = kubeapi.get("bootcpools", "edge", NS)
    assert final["status"]["rollout"]["phase"] == rollout.COMPLETE
    assert final["status"]["image"] == f"{REPO}@{B}"
    assert condition(final, "Ready")["status"] == "True"
    assert condition(final, "Degraded")["status"] == "False"
    # every node says which pool it is in
    assert {n["metadata"]["annotations"][rollout.POOL] for n in kubeapi.list("nodes")} == {"edge"}


@pytest.mark.slow
def test_a_failing_canary_pauses_the_pool_with_the_reason_until_a_new_pin(
    kubeapi: FakeKube, tmp_path: Path
) -> None:
    cluster = Cluster(kubeapi, tmp_path, rollout_policy(canary=1, max_degraded=0))
    cluster.round()
    cluster.fleet.hosts["edge-0"].inject(boot={B: "unhealthy"})
    cluster.pin(B)
    for _ in range(15):
        obj = cluster.round()
        assert counts(obj) == cluster.expected_counts(B)
    assert cluster.started(B) == ["edge-0"]  # nobody followed the failed canary
    assert all(cluster.fleet.hosts[n].booted_digest == A for n in cluster.fleet.hosts)
    state = obj["status"]["rollout"]
    assert state["phase"] == rollout.PAUSED
    assert "canary node edge-0 failed" in state["reason"]
    assert "resume with a new pin or a rollout change in Git" in state["reason"]
    assert state["failedMachines"] == ["edge-0"]
    assert counts(obj)["degradedMachineCount"] == 1
    degraded = condition(obj, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "NodeDegraded")
    assert "edge-0: rolled-back" in degraded["message"]
    # the others say why they wait, on their nodes
    waiting = cluster.fleet.annotations("edge-5")
    assert waiting["state"] == "idle"
    assert "canary node edge-0 failed" in waiting["reason"]
    events = [e for e in kubeapi.list("events", NS) if e["involvedObject"]["kind"] == "BootcPool"]
    paused = [e for e in events if e["reason"] == "RolloutPaused"]
    assert len(paused) == 1
    assert paused[0]["type"] == "Warning"
    assert "edge-0" in paused[0]["message"]

    # resuming is a Git change: a new pin (the fix) rolls out, canary first again
    cluster.pin(C)
    for _ in range(40):
        obj = cluster.round()
        if obj["status"]["updatedMachineCount"] == 10:
            break
    assert counts(obj) == cluster.expected_counts(C)
    assert obj["status"]["rollout"]["phase"] == rollout.COMPLETE
    assert all(h.booted_digest == C for h in cluster.fleet.hosts.values())
    assert condition(obj, "Degraded")["status"] == "False"
    reasons = [e["reason"] for e in kubeapi.list("events", NS)]
    assert "RolloutComplete" in reasons


def test_the_bootcpool_is_what_kubectl_get_shows(kubeapi: FakeKube, tmp_path: Path) -> None:
    cluster = Cluster(kubeapi, tmp_path, rollout_policy(canary="10%", soak_seconds=3600))
    cluster.round()
    cluster.pin(B)
    for _ in range(10):
        obj = cluster.round()
    assert obj["status"]["rollout"]["phase"] == rollout.SOAKING  # the canary waits out an hour
    assert cluster.started(B) == ["edge-0"]
    # kubectl sends no token over the fake's plain HTTP: let the anonymous user read
    # BootcPools, as a viewer's binding would
    viewer = [
        {"kind": "ClusterRole", "metadata": {"name": "bootcpool-viewer"},
         "rules": [{"apiGroups": ["gitops.bootc.dev"], "resources": ["bootcpools"],
                    "verbs": ["get", "list"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "bootcpool-viewer"},
         "roleRef": {"kind": "ClusterRole", "name": "bootcpool-viewer"},
         "subjects": [{"kind": "User", "name": "system:anonymous"}]},
    ]  # fmt: skip
    kubeapi.enforce_rbac(deploy_docs() + viewer, node_fence=True)
    env = {**os.environ, "KUBECACHEDIR": str(tmp_path / "kube-cache")}
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "get", "bootcpools", "-n", NS],
        capture_output=True, text=True, check=False, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split() == ["NAME", "READY", "REASON", "MACHINES", "UPDATED",
                              "READY-MACHINES", "DEGRADED", "ROLLOUT", "PIN", "AGE"]  # fmt: skip
    assert row.split()[:9] == ["edge", "True", "Pinned", "10", "1", "1", "0", "Soaking",
                               B[:19]]  # fmt: skip
    # the status subresource: a write to the main resource cannot change .status
    tampered = {**obj, "status": {**obj["status"], "machineCount": 99}}
    api = kube.Kube.connect(kubeapi.kubeconfig)
    objects = client.CustomObjectsApi(api.api)
    objects.replace_namespaced_custom_object(
        "gitops.bootc.dev", "v1alpha1", NS, "bootcpools", "edge", tampered
    )
    assert kubeapi.get("bootcpools", "edge", NS)["status"]["machineCount"] == 10
    # and the schema holds: a count that is not an integer is refused
    bad = kubeapi.get("bootcpools", "edge", NS)
    bad["status"]["machineCount"] = "ten"
    with pytest.raises(client.ApiException) as refused:
        objects.replace_namespaced_custom_object_status(
            "gitops.bootc.dev", "v1alpha1", NS, "bootcpools", "edge", bad
        )
    assert refused.value.status == 422
    assert "status.machineCount" in json.loads(refused.value.body)["message"]


def test_a_cluster_without_the_crd_is_reported_once_not_every_pass(
    kubeapi: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    from reconciler.loop.controller import PassOutcome

    writer = ClusterStatus(kube.Kube.connect(kubeapi.kubeconfig), NS, lambda head: {})
    status = Status(observed_head="1" * 40)
    status.pool("edge").image = f"{REPO}@{B}"
    for _ in range(3):
        writer.pass_finished(PassOutcome(None, None, 0.1, status))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "cannot write the pools' status to the cluster" in warnings[0]
    assert "404" in warnings[0]
    assert "is the BootcPool CRD applied (kubectl apply -k deploy/crds/)?" in warnings[0]
