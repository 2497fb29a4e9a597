"""`reconciler agent --once` end to end: pins read from a real Git server (smart HTTP
with a token, tests/fixtures/gitservers.py), bootc answered by the stand-in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli.agent import agent_command
from tests.fixtures.bootc import FakeHost, pin_text
from tests.fixtures.edgepool import POOL, REPO, A, B, booted_on_a
from tests.fixtures.gitservers import GitServer
from tests.fixtures.kubeapi import FakeKube, node


@pytest.fixture
def host(bootc_host: FakeHost) -> FakeHost:
    return booted_on_a(bootc_host)


def agent(
    host: FakeHost, server: GitServer, tmp_path: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    token = tmp_path / "token"
    token.write_text(f"{server.token}\n")
    argv = [
        sys.executable, "-m", "reconciler", "agent", "--once",
        "--repo", server.url,
        "--git-token-file", str(token),
        "--bootc", str(host.bootc),
        "--systemctl", str(host.systemctl),
        "--state-dir", str(tmp_path / "state"),
        "--reboot-command", " ".join(host.reboot_command),
        "--boot-id-file", str(host.boot_id_file),
        *extra,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.git
def test_agent_once_follows_the_pin_in_git(host: FakeHost, git_http: GitServer, tmp_path) -> None:
    git_http.commit_files(
        {"machineconfigpools/edge.yaml": POOL, "pins/edge.yaml": pin_text("edge", f"{REPO}@{A}")},
        "pool edge pinned to A",
    )
    first = agent(host, git_http, tmp_path, "--pool", "edge")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"edge: done: booted {A}")

    git_http.commit_files({"pins/edge.yaml": pin_text("edge", f"{REPO}@{B}")}, "pin edge to B")
    # the pool is found from the node's labels and the pools' nodeSelectors
    by_node = ("--node", "edge-1", "--node-label", "node-role.kubernetes.io/edge=")
    step = agent(host, git_http, tmp_path, *by_node)
    assert step.returncode == 0, step.stderr
    assert step.stdout.startswith(f"edge: rebooting: rebooting into {B}")
    step = agent(host, git_http, tmp_path, *by_node)
    assert step.stdout.startswith("edge: done: booted")
    assert host.booted_digest == B
    switches = [c for c in host.calls() if c[:1] == ["switch"]]
    assert switches == [["switch", "--quiet", "--", f"{REPO}@{B}"]]
    assert git_http.token not in step.stdout + step.stderr


@pytest.mark.git
def test_a_broken_pin_exits_1_with_the_file_and_switches_nothing(
    host: FakeHost, git_http: GitServer, tmp_path
) -> None:
    bad = pin_text("edge", f"{REPO}@{B}").replace(f"@{B}", ":latest")
    git_http.commit_files({"machineconfigpools/edge.yaml": POOL, "pins/edge.yaml": bad}, "oops")
    result = agent(host, git_http, tmp_path, "--pool", "edge")
    assert result.returncode == 1
    assert result.stdout.startswith("edge: degraded: pins/edge.yaml at ")
    assert "spec.image" in result.stdout
    assert "fix or revert the pin" in result.stdout
    assert [c for c in host.calls() if c[:1] == ["switch"]] == []


@pytest.mark.git
def test_a_node_in_no_pool_is_told_how_to_fix_it(
    host: FakeHost, git_http: GitServer, tmp_path
) -> None:
    git_http.commit_files({"machineconfigpools/edge.yaml": POOL}, "pool edge")
    result = agent(host, git_http, tmp_path, "--node", "n9", "--node-label", "zone=a")
    assert result.returncode == 1
    assert "error: node n9: no pool's nodeSelector matches this node (zone=a)" in result.stderr
    assert "pass --pool" in result.stderr


@pytest.mark.git
def test_no_pin_yet_is_idle_not_an_error(host: FakeHost, git_http: GitServer, tmp_path) -> None:
    git_http.commit_files({"machineconfigpools/edge.yaml": POOL}, "pool edge")
    result = agent(host, git_http, tmp_path, "--pool", "edge")
    assert result.returncode == 0, result.stderr
    assert "edge: idle:" in result.stdout
    assert "no pin yet" in result.stdout


def test_the_systemd_units_call_options_the_agent_has() -> None:
    known = {opt for p in agent_command.params for opt in p.opts}
    units = Path(__file__).parents[2] / "deploy" / "systemd"
    service = (units / "reconciler-agent.service").read_text()
    exec_start = next(ln for ln in service.splitlines() if ln.startswith("ExecStart="))
    env = (units / "agent.env.example").read_text()
    args = [
        w
        for ln in env.splitlines()
        if "RECONCILER_AGENT_ARGS=" in ln
        for w in ln.lstrip("# ").split()
    ]
    words = [w.removeprefix("RECONCILER_AGENT_ARGS=") for w in [*exec_start.split(), *args]]
    used = {w.split("=")[0] for w in words if w.startswith("--")}
    assert used, "no options found"
    assert used <= known, used - known
    assert "reconciler agent --once" in exec_start
    timer = (units / "reconciler-agent.timer").read_text()
    assert "Conflicts=bootc-fetch-apply-updates.timer" in timer


@pytest.mark.git
def test_agent_once_in_a_cluster_finds_its_pool_from_the_node(
    host: FakeHost, git_http: GitServer, kubeapi: FakeKube, tmp_path
) -> None:
    kubeapi.create("nodes", node("edge-1", {"node-role.kubernetes.io/edge": ""}))
    git_http.commit_files(
        {"machineconfigpools/edge.yaml": POOL, "pins/edge.yaml": pin_text("edge", f"{REPO}@{B}")},
        "pool edge pinned to B",
    )
    in_cluster = (
        "--node", "edge-1", "--coordination", "kubernetes",
        "--kubeconfig", str(kubeapi.kubeconfig), "--lease-namespace", "fleet",
    )  # fmt: skip
    step = agent(host, git_http, tmp_path, *in_cluster)
    assert step.returncode == 0, step.stderr
    assert step.stdout.startswith("edge: rebooting")
    during = kubeapi.get("nodes", "edge-1")
    assert during["spec"]["unschedulable"] is True
    assert during["metadata"]["annotations"]["gitops.bootc.dev/state"] == "rebooting"
    lease = kubeapi.get("leases", "reconciler-agent-edge-0", "fleet")
    assert lease["spec"]["holderIdentity"] == "edge-1"

    step = agent(host, git_http, tmp_path, *in_cluster)
    assert step.stdout.startswith("edge: done")
    after = kubeapi.get("nodes", "edge-1")
    assert not after["spec"].get("unschedulable")
    notes = after["metadata"]["annotations"]
    assert notes["gitops.bootc.dev/current-image"] == f"{REPO}@{B}"
    assert notes["gitops.bootc.dev/state"] == "done"
    assert kubeapi.get("leases", "reconciler-agent-edge-0", "fleet")["spec"].get(
        "holderIdentity"
    ) in (None, "")
    writes = len([r for r in kubeapi.requests if r[0] != "GET"])
    assert agent(host, git_http, tmp_path, *in_cluster).stdout.startswith("edge: done")
    # a run that changes nothing writes nothing (no annotation patch, no lease update)
    assert [r for r in kubeapi.requests if r[0] != "GET"][writes:] == []
