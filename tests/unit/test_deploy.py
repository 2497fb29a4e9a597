"""`deploy/` is what an admin applies: every manifest must be one a cluster accepts
(validated strictly against the Kubernetes OpenAPI schemas, so a misspelt field fails),
the kustomizations must name files that exist, and the commands the manifests run must
be commands and options the CLI has."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from reconciler.cli import cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# 1.30: ValidatingAdmissionPolicy v1 and appArmorProfile (the agent's node fence needs
# the token's node name: ServiceAccountTokenPodNodeInfo, beta 1.30, GA 1.32)
K8S_VERSIONS = ("1.30.0", "1.37.0")
ROOT = DEPLOY.parent


# The Prometheus Operator's kinds (deploy/monitoring/) are not Kubernetes': their schema is
# the operator's CRD, which we do not ship; test_the_service_monitors_find_the_metrics
# checks what they must get right.
OPERATOR_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def manifests(*, kubernetes_only: bool = True) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") == "Kustomization":
                continue
            if kubernetes_only and (doc.get("apiVersion"), doc.get("kind")) in OPERATOR_KINDS:
                continue
            out.append((f"{path.relative_to(DEPLOY)}:{doc['kind']}", doc))
    return out


@pytest.mark.parametrize(("where", "doc"), manifests(), ids=[w for w, _ in manifests()])
def test_every_manifest_is_valid_kubernetes(where: str, doc: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomizations_name_existing_files() -> None:
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        doc = yaml.safe_load(kustomization.read_text())
        for resource in doc["resources"]:
            assert (kustomization.parent / resource).exists(), f"{kustomization}: {resource}"


def containers() -> list[tuple[str, list[str]]]:
    out = []
    for where, doc in manifests():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            out.append((f"{where}/{c['name']}", c["args"]))
    return out


@pytest.mark.parametrize(("where", "args"), containers(), ids=[w for w, _ in containers()])
def test_container_args_parse_with_the_cli(where: str, args: list[str]) -> None:
    command = cli.commands[args[0]]
    # Kubernetes expands $(VAR) from the container's env; a placeholder value parses.
    expanded = [
        a.replace("$(NODE_NAME)", "node-a").replace("$(POD_NAMESPACE)", "ns") for a in args[1:]
    ]
    ctx = command.make_context(args[0], [a for a in expanded], resilient_parsing=True)
    given = {p.name for p in command.params if ctx.params.get(p.name) not in (None, (), False)}
    assert given, where
    for arg in expanded:
        if arg.startswith("--") and "=" in arg:
            name = arg[2:].split("=", 1)[0]
            assert any(
                f"--{name}" in p.opts for p in command.params if isinstance(p, click.Option)
            ), f"{where}: {args[0]} has no option --{name}"
    # commands given as one string are split the way the agent splits them
    for arg in expanded:
        if arg.startswith(("--bootc=", "--systemctl=", "--reboot-command=")):
            assert shlex.split(arg.split("=", 1)[1])[0] == "nsenter"


# -- what `kubectl kustomize` builds, as a cluster admin applies it --


def built(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


OVERLAYS = (".", "openshift")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_output_validates_strictly(overlay: str) -> None:
    docs = built(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "DaemonSet", "ValidatingAdmissionPolicy", "Namespace"} <= kinds
    assert "CustomResourceDefinition" in kinds  # BootcPool
    for doc in docs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_agent_runs_as_root_with_only_the_capabilities_bootc_needs(overlay: str) -> None:
    docs = built(overlay)
    ds = _one(docs, "DaemonSet", "reconciler-agent")
    pod = ds["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    sc = agent["securityContext"]
    # the image says USER 65532: a root-less container has no effective capabilities
    assert (sc["runAsUser"], sc["runAsNonRoot"]) == (0, False)
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {
        "SYS_ADMIN", "SYS_CHROOT", "SYS_PTRACE", "DAC_OVERRIDE", "DAC_READ_SEARCH",
        "FOWNER", "CHOWN", "FSETID", "SETFCAP",
    }  # fmt: skip
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork")
    readme = (DEPLOY / "README.md").read_text()
    for cap in sc["capabilities"]["add"]:
        assert f"`CAP_{cap}`" in readme, f"deploy/README.md does not say why {cap}"
    ns = _one(docs, "Namespace", ds["metadata"]["namespace"])
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_reconciler_is_restricted_without_a_fixed_uid(overlay: str) -> None:
    docs = built(overlay)
    dep = _one(docs, "Deployment", "reconciler")
    pod = dep["spec"]["template"]["spec"]
    assert "runAsUser" not in pod.get("securityContext", {})  # restricted-v2 picks one
    assert "fsGroup" not in pod.get("securityContext", {})
    for c in pod["containers"]:
        assert "runAsUser" not in c.get("securityContext", {})
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    ns = _one(docs, "Namespace", dep["metadata"]["namespace"])
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_openshift_grants_the_agent_the_privileged_scc_and_nothing_else() -> None:
    docs = built("openshift")
    bindings = [
        d
        for d in docs
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and d["roleRef"]["name"].startswith("system:openshift:scc:")
    ]
    granted = {
        (s["namespace"], s["name"], b["roleRef"]["name"]) for b in bindings for s in b["subjects"]
    }
    assert granted == {
        ("bootc-gitops-agent", "reconciler-agent", "system:openshift:scc:privileged"),
        ("bootc-gitops", "reconciler", "system:openshift:scc:restricted-v2"),
    }
    assert all(b["kind"] == "RoleBinding" for b in bindings)  # namespaced, not cluster-wide


def test_the_node_fence_names_the_agents_service_account() -> None:
    docs = built(".")
    policy = _one(docs, "ValidatingAdmissionPolicy", "reconciler-agent-node-fence")
    sa = _one(docs, "ServiceAccount", "reconciler-agent")
    user = f"system:serviceaccount:{sa['metadata']['namespace']}:reconciler-agent"
    assert f"'{user}'" in policy["spec"]["matchConditions"][0]["expression"]
    binding = _one(docs, "ValidatingAdmissionPolicyBinding", "reconciler-agent-node-fence")
    assert binding["spec"]["validationActions"] == ["Deny"]


# -- the Roles cover every API call the code makes --

_CALL = re.compile(
    r"\b(read|list|create|replace|patch|delete)_(namespaced_)?([a-z_]+?)"
    r"(_for_all_namespaces)?\b"
)
_VERB = {"read": "get", "list": "list", "create": "create", "replace": "update",
         "patch": "patch", "delete": "delete"}  # fmt: skip
_RESOURCE = {
    "node": "nodes", "pod": "pods", "pod_eviction": "pods/eviction", "pod_log": "pods/log",
    "event": "events", "lease": "leases", "config_map": "configmaps", "secret": "secrets",
    "job": "jobs",
}  # fmt: skip


def calls_in(*paths: str) -> set[tuple[str, str]]:
    """(resource, verb) of every official-client call in the given modules, e.g.
    `create_namespaced_secret` -> (secrets, create)."""
    found = set()
    for rel in paths:
        for m in _CALL.finditer((ROOT / rel).read_text()):
            resource = _RESOURCE.get(m.group(3))
            if resource is not None:
                found.add((resource, _VERB[m.group(1)]))
    return found


def granted(docs: list[dict[str, Any]], service_account: str) -> set[tuple[str, str]]:
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"].endswith("Role")}
    out = set()
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s.get("name") == service_account for s in b["subjects"]):
            continue
        role = roles.get((b["roleRef"]["kind"], b["roleRef"]["name"]))
        for rule in (role or {}).get("rules", []):
            out |= {(r, v) for r in rule["resources"] for v in rule["verbs"]}
    return out


def used_by_agent() -> set[tuple[str, str]]:
    used = calls_in("reconciler/adapters/kube.py")
    # kube.py wraps every call the agent makes; get_lease is the one the agent never uses
    assert "get_lease" not in (ROOT / "reconciler/agent/kubernetes.py").read_text()
    return used - {("leases", "get")}


def test_the_agents_roles_cover_every_call_it_makes() -> None:
    used = used_by_agent()
    assert ("pods/eviction", "create") in used  # the scan sees the calls
    assert used <= granted(built("."), "reconciler-agent")


def test_the_reconcilers_role_covers_every_job_builder_call() -> None:
    used = calls_in("reconciler/adapters/builders/kubejob.py")
    assert {("secrets", "create"), ("secrets", "update"), ("secrets", "delete")} <= used
    have = granted(built("."), "reconciler")
    assert used <= have, f"missing: {sorted(used - have)}"
    assert ("secrets", "list") not in have  # least privilege: no verb the code never uses


def test_the_reconcilers_status_and_leader_rights_are_exactly_what_it_uses() -> None:
    # reconciler/loop/clusterstatus.py, leader.py and adapters/bootcpools.py, call by call;
    # the fake API enforces these in tests/integration/test_cluster_status.py
    have = granted(built("."), "reconciler")
    assert {
        ("bootcpools", "get"), ("bootcpools", "list"), ("bootcpools", "create"),
        ("bootcpools", "delete"), ("bootcpools/status", "update"), ("events", "create"),
        ("leases", "create"), ("leases", "get"), ("leases", "update"), ("nodes", "list"),
    } <= have  # fmt: skip
    assert ("nodes", "patch") not in have
    assert ("bootcpools", "update") not in have
    role = _one(built("."), "Role", "reconciler-status")
    named = [r for r in role["rules"] if "get" in r["verbs"] and r["resources"] == ["leases"]]
    assert named[0]["resourceNames"] == ["reconciler-leader"]  # not the agents' slot Leases


def test_the_reconciler_runs_two_replicas_with_leader_election_and_probes() -> None:
    docs = built(".")
    dep = _one(docs, "Deployment", "reconciler")
    assert dep["spec"]["replicas"] == 2
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--leader-elect" in container["args"]
    assert "--cluster-status" in container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert f"--metrics-addr=:{ports['metrics']}" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = {e["name"] for e in container["env"]}
    assert {"POD_NAME", "POD_NAMESPACE"} <= env


def test_the_service_monitors_find_the_metrics() -> None:
    docs = built(".")
    monitors = [d for _, d in manifests(kubernetes_only=False) if d["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"reconciler", "reconciler-agent"}
    for monitor in monitors:
        ns = monitor["metadata"]["namespace"]
        want = monitor["spec"]["selector"]["matchLabels"]
        services = [
            d for d in docs
            if d["kind"] == "Service" and d["metadata"]["namespace"] == ns
            and want.items() <= d["metadata"].get("labels", {}).items()
        ]  # fmt: skip
        assert len(services) == 1, monitor["metadata"]["name"]
        (service,) = services
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
        assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
        # the Service reaches a container port of that name
        pods = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")
                and d["metadata"]["namespace"] == ns]  # fmt: skip
        target = {p["targetPort"] for p in service["spec"]["ports"]}
        container_ports = {
            p["name"] for d in pods for c in d["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }  # fmt: skip
        assert target <= container_ports
