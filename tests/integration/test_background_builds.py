"""Containerfile builds off the critical path (issue 13): passes pin what is ready while
a slow build runs, and the pass after it ends pins it.

Real: Git (file://), the registry, buildah (`bud --isolation chroot`, run by the
buildah builder or, for Jobs, by the fake kubelet on this machine), the build lock
files. Stand-ins, said plainly: the Kubernetes API server and kubelet
(`tests/fixtures/kubeapi.py`, `kubelet.py`), and `dnf`/`bootc` in the base image
(`tests/fixtures/buildbase.py`). A slow RUN step is a gate, not a sleep: it waits
while the test's package source serves a marker file, and ends when the test removes
it.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from reconciler.adapters import builders, git
from reconciler.adapters.builders import buildlock, kubejob
from reconciler.adapters.kube import Kube
from reconciler.cli import cli
from reconciler.core import pins
from reconciler.loop import controller
from tests.fixtures.buildbase import BuildBase
from tests.fixtures.gitservers import GitServer, GitServers, files_from_dir
from tests.fixtures.kubeapi import FakeKube
from tests.fixtures.kubelet import FakeKubelet
from tests.fixtures.registry import RunningRegistry
from tests.helpers import RECONCILER_NS, deploy_docs, example_repo

pytestmark = [pytest.mark.buildah, pytest.mark.registry, pytest.mark.git]

MASTER_MC = "machineconfigs/99-master-ssh.yaml"  # reaches master only
WAIT_S = 240.0


@dataclass
class Setup:
    server: GitServer
    registry: RunningRegistry
    root: Path
    gate: Path
    """While this file exists, infra's RUN step waits."""

    def change_worker(self, n: int) -> str:
        """A config-only change of a worker config (infra selects it too)."""
        doc = yaml.safe_load(
            self.server.git("show", "main:machineconfigs/60-worker-node-exporter.yaml")
        )
        doc["metadata"].setdefault("annotations", {})["change"] = str(n)
        files = doc["spec"]["config"].setdefault("storage", {}).setdefault("files", [])
        files.append({"path": f"/etc/change-{n}", "mode": 0o644,
                      "contents": {"source": "data:,x%0A"}})  # fmt: skip
        return self.server.commit_files(
            {"machineconfigs/60-worker-node-exporter.yaml": yaml.safe_dump(doc)}, f"worker: {n}"
        )

    def reconciler(
        self, name: str, available: dict[str, Any] | None = None, **settings: Any
    ) -> controller.Reconciler:
        work = self.root / name
        mirror = git.Mirror(self.server.url, work / "mirror")
        client = self.registry.client()
        if available is None:
            locks = buildlock.BuildLocks(self.root / "build-locks")  # shared by all here
            available = {"buildah": builders.buildah.BuildahBuilder(client, work, locks=locks)}
        return controller.Reconciler(mirror, client, work, controller.RunSettings(**settings),
                                     available)  # fmt: skip

    def pin(self, pool: str) -> pins.Pin:
        return pins.parse_pin(self.server.git("show", f"main:pins/{pool}.yaml"))

    def pinned(self) -> list[str]:
        names = self.server.git("ls-tree", "--name-only", "main", "pins/").split()
        return sorted(Path(n).stem for n in names)

    def change_master(self, n: int) -> str:
        """A config-only change (a file in /etc: a new native image) of master only."""
        doc = yaml.safe_load(self.server.git("show", f"main:{MASTER_MC}"))
        doc["spec"]["config"]["storage"] = {"files": [{
            "path": "/etc/motd.d/change", "mode": 0o644,
            "contents": {"source": f"data:,change%20{n}%0A"},
        }]}  # fmt: skip
        return self.server.commit_files({MASTER_MC: yaml.safe_dump(doc)}, f"master: {n}")


def make_setup(
    git_servers: GitServers,
    registry: RunningRegistry,
    dnf_base: BuildBase,
    root: Path,
    step: str | None = None,
    builder: str | None = None,
) -> Setup:
    gate = dnf_base.repo.directory / f"gate-{root.name}"
    prefix = f"bg-{root.name}"[:60].lower().replace("_", "-")
    seed = example_repo(root / "seed", registry.host, dnf_base.ref, prefix=prefix)
    mosc = seed / "machineosconfigs" / "infra.yaml"
    doc = yaml.safe_load(mosc.read_text())
    run = (
        step
        or f"RUN while wget -q -O /dev/null {dnf_base.repo.url}/{gate.name}; do sleep 0.2; done"
    )
    doc["spec"]["containerFile"] = [{"containerfileArch": "NoArch", "content": run}]
    if builder is not None:
        doc["spec"]["imageBuilder"] = {"imageBuilderType": builder}
        doc["spec"].pop("renderedImagePushSecret", None)
    mosc.write_text(yaml.safe_dump(doc))
    server = git_servers.new_repo("file", files_from_dir(seed))
    return Setup(server, registry, root, gate)


@pytest.fixture
def setup(
    git_servers: GitServers, registry: RunningRegistry, dnf_base: BuildBase, tmp_path: Path
) -> Iterator[Setup]:
    s = make_setup(git_servers, registry, dnf_base, tmp_path)
    s.gate.write_text("wait\n")
    yield s
    s.gate.unlink(missing_ok=True)


def wait_for(what: str, check: Any, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_config_change_is_pinned_while_a_slow_build_runs_and_the_build_after(
    setup: Setup,
) -> None:
    r = setup.reconciler("r1")
    ended = threading.Event()
    r.builds.wake = ended.set  # what `run` does with its trigger

    first = r.reconcile_once()
    assert first.changed == ["master", "worker"]  # the native pools do not wait
    assert first.building == ["infra"]
    infra = first.pools["infra"]
    assert infra.builder == "buildah"
    assert "buildah build of" in infra.message
    assert setup.pinned() == ["master", "worker"]  # committed without infra
    status = r.status.pools["infra"]
    assert status.is_true("Building")
    assert not status.is_true("Ready")
    assert status.recorded_state() == "building"

    # a config-only change while the build runs: pinned by the next pass
    setup.change_master(1)
    master_before = setup.pin("master").spec.digest
    second = r.reconcile_once()
    assert second.changed == ["master"]
    assert second.building == ["infra"]
    assert setup.pin("master").spec.digest != master_before
    assert setup.pin("master").spec.build.builder == "native"
    assert len(r.builds.running()) == 1  # the running build was not started again
    assert not ended.is_set()

    setup.gate.unlink()
    assert ended.wait(WAIT_S)  # the build's end wakes the loop
    third = r.reconcile_once()  # due although Git has not moved
    assert not third.skipped
    assert third.changed == ["infra"]
    pin = setup.pin("infra")
    assert pin.spec.build.builder == "buildah"  # built, not "reused"
    assert pin.spec.image == str(third.pools["infra"].image)
    assert setup.registry.skopeo_digest(pin.spec.image) == pin.spec.digest
    assert not r.status.pools["infra"].is_true("Building")
    assert r.status.pools["infra"].is_true("Ready")
    assert r.reconcile_once().skipped  # and then nothing is due


def test_a_build_whose_pool_moved_on_is_left_to_finish_and_never_pinned(
    setup: Setup,
) -> None:
    r = setup.reconciler("r1")
    first = r.reconcile_once()
    assert first.building == ["infra"]
    [old] = r.builds.running()
    setup.change_worker(1)  # worker's configs reach infra too: new inputs for both
    second = r.reconcile_once()
    assert second.changed == ["worker"]
    assert second.building == ["infra"]
    running = {b.inputs_digest for b in r.builds.running()}
    assert len(running) == 2  # the new inputs' build, beside the obsolete one
    assert old.inputs_digest in running

    setup.gate.unlink()
    assert r.builds.wait(WAIT_S)
    third = r.reconcile_once()
    assert third.changed == ["infra"]
    pin = setup.pin("infra")
    assert pin.spec.inputs_digest != old.inputs_digest  # the current inputs' image
    assert pin.spec.inputs_digest in running
    # the obsolete image is in the registry under its own inputs tag (a revert finds
    # it), and nothing names it
    assert setup.registry.skopeo_digest(old.target) is not None
    assert r.reconcile_once().skipped


def test_builds_beyond_the_limit_wait_for_a_slot_and_say_so(setup: Setup) -> None:
    r = setup.reconciler("r1", builds=1)
    r.reconcile_once()
    setup.change_worker(1)
    second = r.reconcile_once()
    assert second.pools["infra"].state == "building"
    assert " queued" in second.pools["infra"].message  # the new inputs wait for the slot
    started = [b for b in r.builds.running() if b.started_at is not None]
    assert len(started) == 1  # one build at a time
    setup.gate.unlink()
    assert r.builds.wait(WAIT_S)
    assert r.reconcile_once().changed == ["infra"]


def test_a_second_reconciler_finds_the_running_build_and_starts_none(
    setup: Setup,
) -> None:
    r1, r2 = setup.reconciler("r1"), setup.reconciler("r2")
    assert r1.reconcile_once().building == ["infra"]
    wait_for("r1's build to start", lambda: r1.builds.running()[0].started_at is not None)
    time.sleep(0.5)  # r1's build holds the lock by now (it claims it first)

    assert r2.reconcile_once(force=True).pools["infra"].state == "building"
    wait_for("r2 to find r1's lock", lambda: r2.builds.running()[0].by is not None)
    by = r2.builds.running()[0].by or ""
    assert "buildah build of" in by
    assert str(setup.root / "r1") in by  # who builds, and where
    again = r2.reconcile_once(force=True)
    assert again.pools["infra"].state == "building"
    assert str(setup.root / "r1") in again.pools["infra"].message
    assert str(setup.root / "r1") in r2.status.pools["infra"].conditions["Building"].message

    setup.gate.unlink()
    assert r1.builds.wait(WAIT_S)
    assert r2.builds.wait(WAIT_S)
    assert r1.reconcile_once().changed == ["infra"]
    assert setup.pin("infra").spec.build.builder == "buildah"
    assert r2.reconcile_once().pools["infra"].state == "unchanged"
    # r2 never ran buildah: no storage, no build directory, no log of its own
    assert not (setup.root / "r2" / "containers").exists()
    assert not (setup.root / "r2" / "builds").exists()
    assert list((setup.root / "r1" / "containers").iterdir())


def test_a_restarted_reconciler_pins_a_build_that_ended_by_its_tag_without_building(
    setup: Setup,
) -> None:
    r1 = setup.reconciler("r1")
    r1.reconcile_once()
    setup.gate.unlink()
    assert r1.builds.wait(WAIT_S)
    # r1 stops before the pass that would pin infra; its successor knows nothing of
    # the build, and finds its image by the inputs tag (one HEAD)
    restarted = setup.reconciler("r1-restarted")
    report = restarted.reconcile_once()
    assert report.changed == ["infra"]
    assert report.pools["infra"].builder == "reused"
    assert not restarted.builds.running()
    assert not (setup.root / "r1-restarted" / "containers").exists()


def test_a_reconciler_killed_mid_build_leaves_the_lock_to_its_build_and_the_restart_waits(
    setup: Setup,
) -> None:
    work = setup.root / "killed"
    locks = setup.root / "build-locks"
    argv = [sys.executable, "-m", "reconciler", "run", "--repo", setup.server.url,
            "--work-dir", str(work), "--insecure-registry", setup.registry.host,
            "--authfile", str(setup.registry.authfile), "--build-lock-dir", str(locks),
            "--interval", "600"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("the build's RUN step", lambda: "RUN while wget" in build_log(work))
        wait_for("the pass's record", lambda: "infra" in recorded_building(work))
    finally:
        proc.kill()  # SIGKILL: no clean-up of any kind
        proc.wait()
    # `status` says so, from what the pass recorded
    shown = CliRunner().invoke(cli, ["status", "--repo", setup.server.url, "--work-dir", str(work)])
    assert shown.exit_code == 0, shown.output
    [row] = [line for line in shown.stdout.splitlines() if line.startswith("infra ")]
    assert row.split()[1:3] == ["False", "Building"]
    assert "infra: building: buildah build of" in shown.stdout
    [lock] = held(locks)
    assert f"pid {proc.pid} " in lock.read_text()
    time.sleep(1.0)
    assert held(locks) == [lock]  # the orphaned build keeps it

    restarted = setup.reconciler("killed")  # the same work directory and lock directory
    assert restarted.reconcile_once().pools["infra"].state == "building"
    wait_for("the restart to find the lock", lambda: restarted.builds.running()[0].by)
    assert f"pid {proc.pid} " in (restarted.builds.running()[0].by or "")
    assert restarted.reconcile_once(force=True).pools["infra"].state == "building"

    setup.gate.unlink()  # the orphan ends (its log pipe is gone) or finishes: either way,
    assert restarted.builds.wait(WAIT_S)  # the lock goes, and the restart takes over
    report = restarted.reconcile_once()
    if report.pools["infra"].state == "building":  # the orphan died before its push
        assert restarted.builds.wait(WAIT_S)
        report = restarted.reconcile_once()
    assert report.changed == ["infra"], report.pools["infra"]
    assert report.pools["infra"].builder in ("buildah", "reused")
    pin = setup.pin("infra")
    assert setup.registry.skopeo_digest(pin.spec.image) == pin.spec.digest
    assert held(locks) == []


def recorded_building(work: Path) -> list[str]:
    try:
        doc = json.loads((work / "status.json").read_text())
    except (OSError, ValueError):
        return []
    return [n for n, p in doc["pools"].items()
            if p["conditions"].get("Building", {}).get("status")]  # fmt: skip


def build_log(work: Path) -> str:
    return "".join(p.read_text() for p in (work / "build-logs").glob("infra-*.log"))


def held(locks: Path) -> list[Path]:
    """The lock files someone holds now."""
    found = []
    for path in sorted(locks.glob("*.lock")) if locks.is_dir() else []:
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                found.append(path)
            else:
                fcntl.flock(f, fcntl.LOCK_UN)
    return found


def test_a_failed_background_build_is_stalled_with_its_log_tail_and_not_rebuilt(
    git_servers: GitServers, registry: RunningRegistry, dnf_base: BuildBase, tmp_path: Path
) -> None:
    s = make_setup(git_servers, registry, dnf_base, tmp_path,
                   step="RUN echo about to fail && exit 3")  # fmt: skip
    r = s.reconciler("r1")
    assert r.reconcile_once().building == ["infra"]
    assert r.builds.wait(WAIT_S)
    report = r.reconcile_once()
    infra = report.pools["infra"]
    assert infra.state == "stalled"
    assert "about to fail" in infra.message  # the log tail, in the pool's condition
    assert infra.builder == "buildah"
    status = r.status.pools["infra"]
    assert status.is_true("Stalled")
    assert not status.is_true("Building")
    assert infra.inputs_digest is not None
    assert status.failed_inputs == infra.inputs_digest  # not built again for these inputs
    assert "pins/infra.yaml" not in s.server.git("ls-tree", "-r", "--name-only", "main")
    # a commit elsewhere does not build the same failing inputs again
    s.change_master(1)
    later = r.reconcile_once()
    assert later.changed == ["master"]
    assert later.pools["infra"].state == "stalled"
    assert "about to fail" in later.pools["infra"].message
    assert not r.builds.running()
    assert len(list((tmp_path / "r1" / "build-logs").glob("infra-*.log"))) == 1


def test_run_once_cli_waits_for_its_build_and_says_what_each_pass_committed(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    threading.Timer(3.0, lambda: setup.gate.unlink(missing_ok=True)).start()
    args = ["run", "--once", "--repo", setup.server.url, "--work-dir", str(setup.root / "w"),
            "--insecure-registry", setup.registry.host, "--build-lock-dir",
            str(setup.root / "build-locks")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "infra: pinned" in result.stdout
    commits = [line for line in result.stdout.splitlines() if line.startswith("pin commit ")]
    assert len(commits) == 2
    assert setup.pinned() == ["infra", "master", "worker"]
    assert "waiting for 1 build(s): infra (buildah)" in caplog.messages


def test_run_once_waits_for_its_builds_and_pins_them(setup: Setup) -> None:
    r = setup.reconciler("r1")
    threading.Timer(3.0, lambda: setup.gate.unlink(missing_ok=True)).start()
    report = r.reconcile_until_built()
    assert report.changed == ["infra", "master", "worker"]
    assert len(report.commits) == 2  # the ready pools at once, infra after its build
    assert setup.pinned() == ["infra", "master", "worker"]
    assert setup.pin("infra").spec.build.builder == "buildah"
    log = setup.server.git("log", "--format=%H", "main").split()
    assert log[:2] == list(reversed(report.commits))


# --- the Job builder -------------------------------------------------------------------------


@pytest.fixture
def kubelet(kubeapi: FakeKube, tmp_path: Path) -> Iterator[FakeKubelet]:
    fake = FakeKubelet(kubeapi, tmp_path / "kubelet").start()
    yield fake
    fake.stop()


def test_a_second_reconciler_finds_the_running_job_and_creates_none(
    git_servers: GitServers,
    registry: RunningRegistry,
    dnf_base: BuildBase,
    kubeapi: FakeKube,
    kubelet: FakeKubelet,
    tmp_path: Path,
) -> None:
    kubeapi.enforce_rbac(deploy_docs())
    s = make_setup(git_servers, registry, dnf_base, tmp_path, step="RUN true", builder="Job")
    kubelet.hold()  # the build pod is scheduled but does not finish yet

    def job_reconciler(name: str) -> controller.Reconciler:
        client = registry.client()
        api = Kube.connect(kubeapi.kubeconfig_for(RECONCILER_NS, "reconciler"))
        builder = kubejob.JobBuilder(client, api, namespace=RECONCILER_NS, timeout_s=300,
                                     poll_s=0.05)  # fmt: skip
        return s.reconciler(name, {"job": builder})

    r1, r2 = job_reconciler("r1"), job_reconciler("r2")
    first = r1.reconcile_once()
    assert first.changed == ["master", "worker"]
    assert first.pools["infra"].state == "building"
    assert first.pools["infra"].builder == "job"
    wait_for("the Job", lambda: kubeapi.list("jobs", RECONCILER_NS))

    assert r2.reconcile_once().pools["infra"].state == "building"
    wait_for("r2 to find the Job", lambda: r2.builds.running()[0].by is not None)
    by = r2.builds.running()[0].by or ""
    assert by.startswith(f"Job {RECONCILER_NS}/build-infra-")
    assert ", found " in by
    assert r2.reconcile_once(force=True).pools["infra"].message.startswith("job build of")

    kubelet.release()
    assert r1.builds.wait(WAIT_S)
    assert r2.builds.wait(WAIT_S)
    assert r1.reconcile_once().changed == ["infra"]
    assert s.pin("infra").spec.build.builder == "job"
    assert r2.reconcile_once().pools["infra"].state == "unchanged"
    creates = [c for c in kubeapi.changes("jobs") if c.verb == "create"]
    assert len(creates) == 1  # one Job for the two reconcilers
    denied = [a for a in kubeapi.authorizations if not a.allowed]
    assert denied == []
