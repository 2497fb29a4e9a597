"""The reconciler as an admin operates it in a cluster: Prometheus metrics and probes
over HTTP, two replicas with leader election, and `reconciler status` read from the
cluster's BootcPools.

Real: Git (file://), the registry, native builds, the `reconciler` process (metrics),
the official Kubernetes client, `prometheus_client`'s text parser. Stand-in: the API
server (tests/fixtures/kubeapi.py) with deploy/'s RBAC enforced and deploy/'s CRD
served; the replicas use the reconciler ServiceAccount's tokens.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.adapters import kube
from reconciler.errors import RegistryError
from reconciler.loop import clusterstatus, controller, runtime
from reconciler.loop.leader import LEASE_NAME, LeaderElector
from reconciler.loop.metrics import LoopMetrics
from tests.e2e.test_loop import Fleet, change_chrony
from tests.e2e.test_run import (
    fleet,
    free_port,
    pinned_lines,
    process,
    reconciler_cmd,
    start,
    wait_for,
)
from tests.fixtures.kubeapi import FakeKube
from tests.helpers import deploy_docs

pytestmark = [pytest.mark.registry, pytest.mark.git]
__all__ = ["fleet", "process"]  # fixtures, used by name

NS = "bootc-gitops"


def scrape(port: int) -> dict[str, Any]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], name: str, **labels: str) -> float | None:
    """The sum of the samples `name` with these labels (None: there are none)."""
    found = [
        float(s.value)
        for family in families.values()
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(found) if found else None


def test_metrics_and_probes_over_http(
    fleet: Fleet, tmp_path: Path, process: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    log = tmp_path / "reconciler.log"
    cmd = reconciler_cmd(fleet, fleet.server.url, tmp_path / "work",
                         "--metrics-addr", f"127.0.0.1:{port}", "--interval", "1")  # fmt: skip
    proc = start(cmd, log)
    process.append(proc)
    wait_for(lambda: len(pinned_lines(fleet)) == 1, log=log)

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, log=log)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    families = scrape(port)
    # Prometheus conventions: one prefix, snake case, counters end in _total, units in names
    for name, family in families.items():
        assert re.fullmatch(r"reconciler_[a-z_]+", name), name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
        if family.type == "histogram":
            assert name.endswith("_seconds"), name
    assert families["reconciler_pass_duration_seconds"].type == "histogram"
    assert (sample(families, "reconciler_pass_duration_seconds_count", result="ok") or 0) >= 1
    assert sample(families, "reconciler_pin_commits_total") == 1
    assert sample(families, "reconciler_builds_total", builder="native", result="success") == 2
    worker = fleet.pin("worker").spec
    assert sample(families, "reconciler_pool_condition", pool="worker", type="Ready",
                  status="True") == 1  # fmt: skip
    assert sample(families, "reconciler_pool_condition", pool="worker", type="Stalled",
                  status="True") == 0  # fmt: skip
    assert sample(families, "reconciler_pool_pinned_image_info", pool="worker",
                  image=worker.image, digest=worker.digest,
                  source_commit=worker.source_commit) == 1  # fmt: skip

    # Git errors by kind: the remote goes away for a while
    bare = Path(fleet.server.path)
    aside = bare.with_name(bare.name + ".away")
    bare.rename(aside)
    try:
        wait_for(lambda: (sample(scrape(port), "reconciler_git_errors_total",
                                 operation="fetch") or 0) >= 1, log=log)  # fmt: skip
    finally:
        aside.rename(bare)
    after = scrape(port)
    assert sample(after, "reconciler_pass_duration_seconds_count", result="error") >= 1
    assert sample(after, "reconciler_pool_condition", pool="worker", type="Ready",
                  status="True") == 1  # fmt: skip


def test_registry_errors_are_counted_by_operation_and_kind(fleet: Fleet) -> None:
    metrics = LoopMetrics()
    client = metrics.instrument(fleet.registry.client(), "registry")
    with pytest.raises(RegistryError):  # the real registry: no such blob
        client.get_blob(f"{fleet.registry.host}/{fleet.prefix}/worker", "sha256:" + "0" * 64)
    text = prometheus_client.generate_latest(metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert sample(families, "reconciler_registry_errors_total", operation="get_blob") == 1
    # a worker thread's clone (loop/parallel.py) counts into the same metric
    clone = client.clone()
    with pytest.raises(RegistryError):
        clone.get_blob(f"{fleet.registry.host}/{fleet.prefix}/worker", "sha256:" + "1" * 64)
    text = prometheus_client.generate_latest(metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert sample(families, "reconciler_registry_errors_total", operation="get_blob") == 2


class Recorder:
    """Each replica's passes, as the loop reports them."""

    def __init__(self) -> None:
        self.passes: list[controller.PassReport] = []

    def pass_started(self) -> None:
        pass

    def pass_finished(self, outcome: controller.PassOutcome) -> None:
        if outcome.report is not None and not outcome.report.skipped:
            self.passes.append(outcome.report)

    def builds(self) -> list[str]:
        return [p for r in self.passes for p, pool in r.pools.items() if pool.builder]


class Replica:
    def __init__(self, fleet: Fleet, kubeapi: FakeKube, name: str) -> None:
        self.name = name
        self.url = fleet.server.url
        self.reconciler = fleet.reconciler(name)
        self.recorder = Recorder()
        api = kube.Kube.connect(kubeapi.kubeconfig_for(NS, "reconciler"))
        rollouts = clusterstatus.RolloutsInGit(self.reconciler.mirror)
        self.reconciler.observers += [self.recorder, clusterstatus.ClusterStatus(api, NS, rollouts)]
        self.elector = LeaderElector(
            api, NS, f"reconciler-{name}", lease_duration=3, renew_deadline=2, retry_period=0.25
        )
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            runtime.run_forever(
                self.reconciler, self.url, "main", 0.3, None, None,
                elector=self.elector, stop=self.stop,
            )  # fmt: skip
        except BaseException as exc:
            self.errors.append(exc)


@pytest.mark.slow
def test_two_replicas_one_leader_builds_and_the_other_takes_over(
    fleet: Fleet, kubeapi: FakeKube, tmp_path: Path
) -> None:
    for crd in (d for d in deploy_docs() if d["kind"] == "CustomResourceDefinition"):
        kubeapi.create("customresourcedefinitions", crd)
    kubeapi.enforce_rbac(deploy_docs())
    replicas = [Replica(fleet, kubeapi, "r1"), Replica(fleet, kubeapi, "r2")]
    for r in replicas:
        r.thread.start()
    try:
        wait_for(lambda: len(pinned_lines(fleet)) == 1, timeout=60)
        wait_for(lambda: any(r.elector.leading for r in replicas))
        time.sleep(1.5)  # several lease renewals and poll intervals
        (leader,) = [r for r in replicas if r.elector.leading]
        (standby,) = [r for r in replicas if r is not leader]
        assert sorted(leader.recorder.builds()) == ["master", "worker"]
        assert standby.recorder.passes == []  # it never ran a pass, so never built
        assert len(pinned_lines(fleet)) == 1  # one pin commit
        lease = kubeapi.get("leases", LEASE_NAME, NS)
        assert lease["spec"]["holderIdentity"] == f"reconciler-{leader.name}"
        assert lease["spec"]["leaseDurationSeconds"] == 3
        assert lease["spec"]["leaseTransitions"] == 0
        # the pools' status is in the cluster, and `reconciler status` reads it there
        wait_for(
            lambda: (
                {"master", "worker"}
                <= {b["metadata"]["name"] for b in kubeapi.list("bootcpools", NS)}
            )
        )
        kubeconfig = kubeapi.kubeconfig_for(NS, "reconciler")
        shown = subprocess.run(
            [sys.executable, "-m", "reconciler", "status", "--repo", fleet.server.url,
             "--work-dir", str(tmp_path / "elsewhere"), "--kubeconfig", str(kubeconfig),
             "--namespace", NS, "-o", "json"],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert doc["recordedIn"] == "cluster"
        assert doc["statusIsCurrent"] is True
        worker = doc["pools"]["worker"]
        assert worker["conditions"]["Ready"]["status"] is True
        assert worker["pin"] == fleet.pin("worker").spec.image
        assert worker["fleet"]["machineCount"] == 0  # no agent reports this pool yet

        # the leader dies (no release: a crash); the standby takes over within the lease
        leader.elector.release = lambda: None  # type: ignore[method-assign]
        leader.stop.set()
        stopped = time.monotonic()
        leader.thread.join(30)
        took = wait_for(lambda: standby.elector.leading, timeout=10)
        assert took <= 3 + 1.0, f"took over after {took:.1f}s"
        since = len(leader.recorder.passes)
        change_chrony(fleet, "ntp7.example.internal")
        wait_for(lambda: len(pinned_lines(fleet)) == 2, timeout=30)
        # the new leader built what the commit changed (its observer hears of the pass
        # just after the push)
        wait_for(lambda: bool(standby.recorder.builds()), timeout=10)
        assert len(leader.recorder.passes) == since  # the old leader did nothing more
        lease = kubeapi.get("leases", LEASE_NAME, NS)
        assert lease["spec"]["holderIdentity"] == f"reconciler-{standby.name}"
        assert lease["spec"]["leaseTransitions"] == 1
        assert time.monotonic() - stopped < 40
    finally:
        for r in replicas:
            r.stop.set()
        for r in replicas:
            r.thread.join(30)
    assert not [e for r in replicas for e in r.errors]
    # a clean stop gives the Lease back at once
    assert not kubeapi.get("leases", LEASE_NAME, NS)["spec"]["holderIdentity"]
    shutil.rmtree(tmp_path / "elsewhere", ignore_errors=True)


def test_a_push_race_counts_a_retry_and_a_rejected_push(fleet: Fleet) -> None:
    metrics = LoopMetrics()
    r = fleet.reconciler("racer")
    plain = r.mirror
    original = plain.push
    pushes = []

    def push_after_someone_else(*args: Any, **kw: Any) -> None:
        if not pushes:  # another writer lands first: this push is rejected (CAS)
            fleet.commit({"NOTES.md": "someone else\n"}, "docs: a note")
        pushes.append(args)
        original(*args, **kw)

    plain.push = push_after_someone_else  # type: ignore[method-assign]
    r.mirror = metrics.instrument(plain, "git")
    stop, trigger = threading.Event(), threading.Event()

    class StopAfterOne:
        def pass_started(self) -> None:
            pass

        def pass_finished(self, outcome: controller.PassOutcome) -> None:
            stop.set()

    r.observers += [metrics, StopAfterOne()]
    r.run(stop, trigger, 0.1)
    assert len(pushes) == 2
    newest, before = fleet.log()[:2]
    assert newest.startswith("pin ")
    assert before == "docs: a note"  # the pins went on top of the other writer's commit
    text = prometheus_client.generate_latest(metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert sample(families, "reconciler_push_retries_total") == 1
    assert sample(families, "reconciler_git_errors_total", operation="push", kind="rejected") == 1
    assert sample(families, "reconciler_pin_commits_total") == 1
