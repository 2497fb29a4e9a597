"""The fake API enforces deploy/'s RBAC and the agent's node fence, so a verb missing
from a Role, or a write to another node, fails a test as it would fail in a cluster.

Real: the official client, the agent's Kubernetes adapter, deploy/ built by `kubectl
kustomize`. Stand-in: the API server (tests/fixtures/kubeapi.py), its RBAC authorizer
and the ValidatingAdmissionPolicy (written from their upstream rules)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from reconciler.adapters import kube
from reconciler.agent.kubernetes import KubernetesCoordinator
from reconciler.agent.source import PoolPolicy
from reconciler.core import model
from tests.fixtures.kubeapi import FakeKube, node
from tests.helpers import AGENT_NS, deploy_docs

POLICY = PoolPolicy("edge", 1, False, model.LabelSelector(match_labels={"pool": "edge"}))


def agent_on(kubeapi: FakeKube, name: str) -> KubernetesCoordinator:
    config = kubeapi.kubeconfig_for(AGENT_NS, "reconciler-agent", name)
    return KubernetesCoordinator(kube.Kube.connect(config), name, AGENT_NS)


def without_verb(docs: list[dict[str, Any]], role: str, verb: str) -> list[dict[str, Any]]:
    out = copy.deepcopy(docs)
    for d in out:
        if d["kind"] in ("Role", "ClusterRole") and d["metadata"]["name"] == role:
            for rule in d["rules"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    return out


def test_the_shipped_roles_let_an_agent_take_a_slot_and_cordon(kubeapi: FakeKube) -> None:
    kubeapi.create("nodes", node("n0", {"pool": "edge"}))
    kubeapi.enforce_rbac(deploy_docs(), node_fence=True)
    agent = agent_on(kubeapi, "n0")
    assert agent.acquire(POLICY).granted
    assert agent.cordon()
    assert kubeapi.get("nodes", "n0")["spec"]["unschedulable"] is True


def test_a_verb_missing_from_a_role_is_forbidden(kubeapi: FakeKube) -> None:
    kubeapi.create("nodes", node("n0", {"pool": "edge"}))
    kubeapi.enforce_rbac(without_verb(deploy_docs(), "reconciler-agent-leases", "create"))
    with pytest.raises(kube.KubeError) as info:
        agent_on(kubeapi, "n0").acquire(POLICY)
    assert info.value.status == 403
    assert (
        'User "system:serviceaccount:bootc-gitops-agent:reconciler-agent" cannot create '
        'resource "leases" in API group "coordination.k8s.io" in the namespace '
        '"bootc-gitops-agent"' in str(info.value)
    )


def test_the_node_fence_keeps_an_agent_to_its_own_node(kubeapi: FakeKube) -> None:
    for name in ("n0", "n1"):
        kubeapi.create("nodes", node(name, {"pool": "edge"}))
    kubeapi.enforce_rbac(deploy_docs(), node_fence=True)
    api = kube.Kube.connect(kubeapi.kubeconfig_for(AGENT_NS, "reconciler-agent", "n0"))
    api.patch_node("n0", {"spec": {"unschedulable": True}})
    with pytest.raises(kube.KubeError, match="may only change its own node, not n1"):
        api.patch_node("n1", {"spec": {"unschedulable": True}})
    with pytest.raises(kube.KubeError, match="may not change node labels"):
        api.patch_node("n0", {"metadata": {"labels": {"pool": "core"}}})
    assert kubeapi.get("nodes", "n1")["spec"] == {}
    assert kubeapi.get("nodes", "n0")["metadata"]["labels"] == {"pool": "edge"}


def test_an_unknown_token_is_unauthorized(kubeapi: FakeKube) -> None:
    kubeapi.enforce_rbac(deploy_docs())
    path = kubeapi.kubeconfig_for(AGENT_NS, "reconciler-agent", "n0")
    path.write_text(path.read_text().replace("sa-", "forged-", 1))
    with pytest.raises(kube.KubeError) as info:
        kube.Kube.connect(path).get_node("n0")
    assert info.value.status == 401
