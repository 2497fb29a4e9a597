"""The fake Kubernetes API (tests/fixtures/kubeapi.py) answers the official client the
way a real API server does, for what it claims to enforce."""

from __future__ import annotations

import json
import threading

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.fixtures.kubeapi import FakeKube, node, pod


@pytest.fixture
def api(kubeapi: FakeKube) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeapi.kubeconfig))


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_crud_with_resource_versions_and_server_metadata(kubeapi: FakeKube, api) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map(
        "apps", {"metadata": {"name": "cfg", "labels": {"app": "x"}}, "data": {"a": "1"}}
    )
    assert created.metadata.namespace == "apps"
    assert created.metadata.uid
    rv1 = int(created.metadata.resource_version)
    patched = core.patch_namespaced_config_map("cfg", "apps", {"data": {"b": "2"}})
    assert patched.data == {"a": "1", "b": "2"}
    assert int(patched.metadata.resource_version) > rv1
    assert patched.metadata.uid == created.metadata.uid
    # PUT with the stale resourceVersion: 409 Conflict, as the real server answers
    created.data = {"c": "3"}
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map("cfg", "apps", created)
    assert info.value.status == 409
    body = status_of(info.value)
    assert (body["kind"], body["reason"]) == ("Status", "Conflict")
    assert "the object has been modified" in body["message"]
    core.delete_namespaced_config_map("cfg", "apps")
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("cfg", "apps")
    assert info.value.status == 404
    assert status_of(info.value)["message"] == 'configmaps "cfg" not found'
    assert [c.type for c in kubeapi.changes("configmaps")] == ["ADDED", "MODIFIED", "DELETED"]


def test_create_twice_is_already_exists_and_generate_name_works(api) -> None:
    coord = client.CoordinationV1Api(api)
    body = {"metadata": {"name": "slot-0"}, "spec": {"holderIdentity": "n1"}}
    coord.create_namespaced_lease("ns", body)
    with pytest.raises(ApiException) as info:
        coord.create_namespaced_lease("ns", body)
    assert info.value.status == 409
    assert status_of(info.value)["reason"] == "AlreadyExists"
    assert status_of(info.value)["message"] == (
        'leases.coordination.k8s.io "slot-0" already exists'
    )
    event = client.CoreV1Api(api).create_namespaced_event(
        "default",
        {"metadata": {"generateName": "n1."}, "involvedObject": {"kind": "Node", "name": "n1"}},
    )
    assert event.metadata.name.startswith("n1.")


def test_selectors(kubeapi: FakeKube, api) -> None:
    kubeapi.create("nodes", node("a", {"pool": "edge", "zone": "z1"}))
    kubeapi.create("nodes", node("b", {"pool": "edge", "zone": "z2"}))
    kubeapi.create("nodes", node("c", {"pool": "core"}))
    kubeapi.create("pods", pod("p1", "a"))
    kubeapi.create("pods", pod("p2", "b", namespace="other"))
    core = client.CoreV1Api(api)

    def names(**kw: str) -> list[str]:
        return [n.metadata.name for n in core.list_node(**kw).items]

    assert names(label_selector="pool=edge") == ["a", "b"]
    assert names(label_selector="pool=edge,zone!=z1") == ["b"]
    assert names(label_selector="zone in (z1,z3)") == ["a"]
    assert names(label_selector="!zone") == ["c"]
    assert names(field_selector="metadata.name=c") == ["c"]
    on_b = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=b").items
    assert [(p.metadata.namespace, p.metadata.name) for p in on_b] == [("other", "p2")]


def test_patch_flavours_and_status_subresource(kubeapi: FakeKube, api) -> None:
    kubeapi.create("nodes", node("n1"))
    core = client.CoreV1Api(api)
    # the client sends a dict as strategic merge; null deletes (merge semantics)
    core.patch_node(
        "n1", {"spec": {"unschedulable": True}, "metadata": {"annotations": {"k": "v"}}}
    )
    core.patch_node("n1", {"spec": {"unschedulable": None}})
    got = kubeapi.get("nodes", "n1")
    assert "unschedulable" not in got["spec"]
    assert got["metadata"]["annotations"] == {"k": "v"}
    core.patch_node("n1", [{"op": "add", "path": "/metadata/labels/role", "value": "edge"}])
    assert kubeapi.get("nodes", "n1")["metadata"]["labels"] == {"role": "edge"}
    # a resourceVersion in a merge patch is a precondition
    with pytest.raises(ApiException) as info:
        core.patch_node("n1", {"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}})
    assert info.value.status == 409
    # status subresource changes status only
    job = client.BatchV1Api(api).create_namespaced_job(
        "ci", {"metadata": {"name": "build"}, "spec": {"template": {"spec": {"containers": []}}}}
    )
    client.BatchV1Api(api).patch_namespaced_job_status(
        "build", "ci", {"status": {"succeeded": 1}, "spec": {"parallelism": 9}}
    )
    stored = kubeapi.get("jobs", "build", "ci")
    assert stored["status"] == {"succeeded": 1}
    assert "parallelism" not in stored["spec"]
    assert job.metadata.name == "build"


def test_eviction_honours_pod_disruption_budgets(kubeapi: FakeKube, api) -> None:
    for i, n in enumerate(["n1", "n2", "n3"]):
        kubeapi.create("pods", pod(f"web-{i}", n, labels={"app": "web"}))
    kubeapi.create("pods", pod("lonely", "n1"))
    kubeapi.create(
        "poddisruptionbudgets",
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        },
    )
    core = client.CoreV1Api(api)

    def evict(name: str) -> None:
        core.create_namespaced_pod_eviction(
            name,
            "default",
            {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}},
        )

    evict("lonely")  # no budget covers it
    # 2 of 3 left healthy; maxUnavailable 1 of 2 expected still allows one more
    evict("web-0")
    # now one pod is NotReady: the budget is spent
    kubeapi.patch(
        "pods",
        "web-1",
        {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        "default",
    )
    with pytest.raises(ApiException) as info:
        evict("web-2")
    assert info.value.status == 429
    body = status_of(info.value)
    assert body["reason"] == "TooManyRequests"
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert kubeapi.find("pods", "web-2", "default") is not None
    evicted = [c.name for c in kubeapi.history if c.verb == "evict"]
    assert evicted == ["lonely", "web-0"]


def test_watch_streams_changes_to_the_official_client(kubeapi: FakeKube, api) -> None:
    kubeapi.create("nodes", node("n1"))
    core = client.CoreV1Api(api)
    seen: list[tuple[str, str, bool]] = []

    def later() -> None:
        kubeapi.patch("nodes", "n1", {"spec": {"unschedulable": True}})
        kubeapi.delete("nodes", "n1")

    timer = threading.Timer(0.3, later)
    timer.start()
    w = watch.Watch()
    for event in w.stream(core.list_node, timeout_seconds=5):
        obj = event["object"]
        seen.append((event["type"], obj.metadata.name, bool(obj.spec.unschedulable)))
        if event["type"] == "DELETED":
            w.stop()
    timer.join()
    assert seen == [("ADDED", "n1", False), ("MODIFIED", "n1", True), ("DELETED", "n1", True)]


def test_history_answers_how_many_at_once(kubeapi: FakeKube) -> None:
    for name in "abc":
        kubeapi.create("nodes", node(name))
    down = {"spec": {"unschedulable": True}}
    up = {"spec": {"unschedulable": None}}
    kubeapi.patch("nodes", "a", down)
    kubeapi.patch("nodes", "b", down)
    kubeapi.patch("nodes", "a", up)
    kubeapi.patch("nodes", "c", down)
    assert kubeapi.max_concurrent("nodes", lambda n: bool(n["spec"].get("unschedulable"))) == 2


def test_reactors_inject_failures(kubeapi: FakeKube, api) -> None:
    kubeapi.add_reactor(
        lambda verb, res, ns, name, body: (
            (503, {"kind": "Status", "code": 503}) if verb == "list" and res == "nodes" else None
        )
    )
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(api).list_node()
    assert info.value.status == 503
