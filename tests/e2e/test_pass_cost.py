"""Passes that cost what changed (issue 13): the loop keeps the plans and parsed pins of
the last pass, and reuses exactly those whose inputs did not move. What a user would
notice if the reuse were wrong is a stale pin: each test asserts the pins a pass leaves
on the remote, and the reuse counters only say the fast path was taken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.core import pins
from reconciler.loop import controller
from tests.e2e.test_loop import CHRONY, Fleet, change_chrony, make_fleet, seed_repo
from tests.fixtures import registry as reg
from tests.fixtures.gitservers import GitServers
from tests.fixtures.registry import BaseImage, RunningRegistry

pytestmark = [pytest.mark.registry, pytest.mark.git]


@pytest.fixture
def fleet(
    git_servers: GitServers, registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> Fleet:
    return make_fleet(git_servers, "file", registry, base_image, tmp_path)


def test_a_pass_replans_and_reparses_only_the_pools_that_changed(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real_parse = pins.parse_pin

    def counting(text: str | bytes, *, where: str = "pin") -> pins.Pin:
        parsed.append(where)
        return real_parse(text, where=where)

    monkeypatch.setattr(pins, "parse_pin", counting)
    r = fleet.reconciler()
    r.reconcile_once()
    master = fleet.pin("master")
    kargs = "machineconfigs/05-worker-kernelargs.yaml"
    fleet.commit({kargs: fleet.file(kargs).replace("audit=1", "audit=0")}, "worker: audit off")
    hits, parsed[:] = r.plan_cache.hits, []
    assert r.reconcile_once().changed == ["worker"]
    assert r.plan_cache.hits - hits == 1  # master's plan, reused
    assert parsed == []  # both pins are the ones this reconciler wrote: known, not parsed
    # a change both pools take: neither plan is reused, both are pinned anew
    change_chrony(fleet, "ntp9.example.internal")
    hits, parsed[:] = r.plan_cache.hits, []
    assert r.reconcile_once().changed == ["master", "worker"]
    assert r.plan_cache.hits == hits
    assert parsed == []
    assert fleet.pin("master").spec.digest != master.spec.digest
    # and what the cached pass pinned is what a fresh reconciler computes
    fresh = fleet.reconciler("r2").reconcile_once(force=True)
    assert fresh.commit is None
    assert {p.state for p in fresh.pools.values() if p.pool != "infra"} == {"unchanged"}
    # a pin someone else wrote is parsed, once
    fleet.commit({"pins/master.yaml": fleet.file("pins/master.yaml") + "# seen\n"}, "hand edit")
    parsed[:] = []
    r.reconcile_once()
    r.reconcile_once(force=True)
    assert parsed == ["pins/master.yaml"]


def _base(marker: bytes) -> reg.ImageParts:
    entries = reg.usr_merged_skeleton()
    entries.append(("usr/lib/base-version", "file", marker, 0o644))
    return reg._image(entries, "amd64")


def test_a_base_image_that_moves_under_its_tag_is_planned_again(
    git_servers: GitServers, registry: RunningRegistry, tmp_path: Path
) -> None:
    repo = f"{registry.host}/cost-{tmp_path.name[-20:].lower().replace('_', '-')}/base"
    with registry.client() as client:
        reg._push_image(client, repo, _base(b"1\n"), "latest")
    prefix = f"cost-{tmp_path.name}"[:60].lower().replace("_", "-")
    server = git_servers.new_repo("file", seed_repo(tmp_path, registry, f"{repo}:latest", prefix))
    fleet = Fleet(server, registry, tmp_path, prefix)
    r = fleet.reconciler(base_poll_s=0.0)
    r.reconcile_once()
    before = fleet.pin("worker")
    moved = _base(b"2\n")
    with registry.client() as client:
        reg._push_image(client, repo, moved, "latest")
    hits = r.plan_cache.hits
    report = r.reconcile_once()
    assert report.changed == ["master", "worker"]
    assert r.plan_cache.hits == hits
    worker = fleet.pin("worker")
    assert (
        worker.spec.build.base_image_digest == moved.digest != before.spec.build.base_image_digest
    )
    assert worker.spec.digest != before.spec.digest


def test_an_idle_run_once_does_nothing_and_reports_the_last_pass(fleet: Fleet) -> None:
    work = fleet.root / "work"
    argv = [sys.executable, "-m", "reconciler", "run", "--once", "--repo", fleet.server.url,
            "--work-dir", str(work), "--insecure-registry", fleet.registry.host]  # fmt: skip
    first = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    head = fleet.server.head()
    status = (work / "status.json").read_bytes()
    idle = subprocess.run([*argv, "-o", "json"], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert idle.returncode == 0, idle.stderr
    doc = json.loads(idle.stdout)
    assert doc["skipped"] is True
    assert doc["commit"] is None
    assert doc["pools"]["worker"] == {"state": "unchanged", "image": fleet.pin("worker").spec.image,
                                      "message": "", "transient": False}  # fmt: skip
    assert doc["pools"]["infra"]["state"] == "unmanaged"
    assert fleet.server.head() == head
    assert (work / "status.json").read_bytes() == status  # no pass ran
    text = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert text.returncode == 0
    assert f"worker: unchanged {fleet.pin('worker').spec.image}" in text.stdout
    assert f"nothing due: {head[:10]} was reconciled by the last pass" in text.stdout


def _recorded(r: controller.Reconciler) -> dict[str, Any]:
    """What `status` shows of each pool: its state, the conditions that hold and why
    (times left out: they say when a pass ran; a condition that held once and no longer
    does stays recorded as false, which is history, not what the pins are)."""
    out: dict[str, Any] = {}
    for name, pool in r.status.pools.items():
        conditions = {k: (c.status, c.reason, c.message) for k, c in pool.conditions.items()
                      if c.status or k == "Ready"}  # fmt: skip
        out[name] = (pool.recorded_state(), conditions, pool.image, pool.source_commit, pool.inputs_digest,
                     pool.last_error, pool.failed_inputs)  # fmt: skip
    return out


KARGS = "machineconfigs/05-worker-kernelargs.yaml"
MASTER = "machineconfigpools/master.yaml"


def test_pins_and_status_after_passes_with_caches_equal_a_fresh_reconcilers(
    fleet: Fleet,
) -> None:
    """A reconciler that keeps its caches across passes leaves on the remote the pins,
    and in its status what a fresh reconciler finds, after each of a sequence of edits
    that break, duplicate, move and restore what pools take."""
    r = fleet.reconciler()
    r.reconcile_once()
    kargs, master = fleet.file(KARGS), fleet.file(MASTER)
    dup = kargs.replace("role: worker", "role: master")
    steps: list[dict[str, str | None]] = [
        {KARGS: kargs.replace("audit=1", "audit=0")},  # worker moves
        {KARGS: "kind: [unclosed\n"},  # a YAML error: every pool keeps its pin
        {KARGS: kargs.replace("audit=1", "audit=2")},
        {"machineconfigs/06-dup.yaml": dup},  # a second 05-worker-kernelargs
        {"machineconfigs/06-dup.yaml": None},
        {CHRONY: fleet.file(CHRONY).replace("role: worker", "role: master")},
        {MASTER: None},  # a pool's own file gone: master keeps its pin, is stalled
        {MASTER: master},
        {KARGS: kargs},  # back to the start: worker's first inputs again
    ]
    for i, files in enumerate(steps):
        fleet.commit(files, f"step {i}")
        r.reconcile_once()
        head = fleet.server.head()
        fresh = fleet.reconciler(f"fresh{i}")
        again = fresh.reconcile_once(force=True)
        assert again.commit is None, (i, again.changed)  # the pins are what it computes
        assert fleet.server.head() == head
        kept, anew = _recorded(r), _recorded(fresh)
        assert kept.keys() == anew.keys(), i
        for pool in kept:
            assert kept[pool] == anew[pool], (i, pool)
    assert r.load_cache.parsed <= 2  # the last pass parsed the file that moved
