"""The reconcile loop end to end, against real servers: a bare Git repository (file://,
`git daemon`, smart HTTP with Basic auth) and the real registry. Builds here are native
(config-only pools); the `infra` pool of the examples needs a Containerfile build and
is left unmanaged (its MachineOSConfig removed) except where a test says otherwise.

What a user would notice is asserted on what they would look at: the remote's
history (`git log`), the pin files, and what the registry holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.adapters import git
from reconciler.core import history, pins
from reconciler.loop import controller
from tests.fixtures.gitservers import GitServer, GitServers, files_from_dir, run_git
from tests.fixtures.registry import BaseImage, RunningRegistry
from tests.helpers import example_repo

pytestmark = [pytest.mark.registry, pytest.mark.git]


@dataclass
class Fleet:
    server: GitServer
    registry: RunningRegistry
    root: Path
    prefix: str

    def reconciler(self, name: str = "r1", **settings) -> controller.Reconciler:  # type: ignore[no-untyped-def]
        work = self.root / name
        mirror = git.Mirror(self.server.url, work / "mirror", self.server.auth)
        client = self.registry.client()
        return controller.Reconciler(mirror, client, work, controller.RunSettings(**settings))

    def log(self) -> list[str]:
        """Subjects on the remote's main branch, newest first."""
        return self.server.git("log", "--format=%s", "main").splitlines()

    def pin(self, pool: str) -> pins.Pin:
        text = self.server.git("show", f"main:pins/{pool}.yaml")
        return pins.parse_pin(text)

    def file(self, path: str) -> str:
        return self.server.git("show", f"main:{path}")

    def commit(self, files: dict[str, str | None], message: str) -> str:
        return self.server.commit_files(files, message)

    def tags(self, pool: str) -> list[str]:
        out = subprocess.run(
            ["skopeo", "list-tags", *self.registry.skopeo_args(),
             f"docker://{self.registry.host}/{self.prefix}/{pool}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return sorted(yaml.safe_load(out.stdout)["Tags"]) if out.returncode == 0 else []


def seed_repo(tmp: Path, registry: RunningRegistry, base: str, prefix: str) -> dict[str, bytes]:
    repo = example_repo(tmp / "seed", registry.host, base, prefix=prefix)
    (repo / "machineosconfigs" / "infra.yaml").unlink()  # needs a Containerfile build
    return files_from_dir(repo)


def make_fleet(
    git_servers: GitServers, transport: str, registry: RunningRegistry, base: BaseImage, tmp: Path
) -> Fleet:
    prefix = f"loop-{tmp.name}"[:60].lower().replace("_", "-")
    server = git_servers.new_repo(transport, seed_repo(tmp, registry, base.ref, prefix))
    return Fleet(server, registry, tmp, prefix)


@pytest.fixture
def fleet(
    git_servers: GitServers, registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> Fleet:
    return make_fleet(git_servers, "file", registry, base_image, tmp_path)


CHRONY = "machineconfigs/50-chrony.yaml"


def change_chrony(fleet: Fleet, server: str) -> str:
    text = fleet.file(CHRONY)
    import base64
    import re

    def swap(m: re.Match[str]) -> str:
        data = base64.b64decode(m.group(1)).decode()
        return (
            "source: data:;base64,"
            + base64.b64encode(data.replace("ntp1.example.internal", server).encode()).decode()
        )

    new = re.sub(r"source: data:;base64,([A-Za-z0-9+/=]+)", swap, text)
    return fleet.commit({CHRONY: new}, f"chrony: use {server}")


# --- the basic cycle ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["file", "daemon", "http"])
def test_first_pins_in_one_commit_then_nothing(
    transport: str,
    git_servers: GitServers,
    registry: RunningRegistry,
    base_image: BaseImage,
    tmp_path: Path,
) -> None:
    fleet = make_fleet(git_servers, transport, registry, base_image, tmp_path)
    config_head = fleet.server.head()
    r = fleet.reconciler()
    report = r.reconcile_once()
    assert report.changed == ["master", "worker"]
    assert report.pools["infra"].state == "unmanaged"
    assert report.commit == fleet.server.head()
    assert fleet.log()[0] == f"pin 2 pools: master, worker (config {config_head[:10]})"
    # the commit touches only pins/
    changed = fleet.server.git("show", "--name-only", "--format=", "main").split()
    assert changed == ["pins/master.yaml", "pins/worker.yaml"]
    worker = fleet.pin("worker")
    assert worker.spec.source_commit == config_head
    assert worker.spec.build.builder == "native"
    assert worker.spec.build.base_image_digest == base_image.digest
    assert registry.skopeo_digest(worker.spec.image) == worker.spec.digest
    # trailers, so `git log` alone is an audit trail
    trailers = fleet.server.git("log", "-1", "--format=%(trailers:only,unfold)", "main")
    assert f"Image: {worker.spec.image}" in trailers
    assert f"Source-Commit: {config_head}" in trailers
    assert "Reconciled-By: reconciler" in trailers

    # nothing changed: a second pass is skipped after one ls-remote, and makes no commit
    again = r.reconcile_once()
    assert again.skipped
    assert fleet.server.head() == report.commit
    # forced, it plans everything again and still commits nothing
    forced = r.reconcile_once(force=True)
    assert forced.commit is None
    assert {p.state for p in forced.pools.values() if p.pool != "infra"} == {"unchanged"}
    if transport == "http":
        # the idle pass cost exactly one ls-remote (GET info/refs + POST upload-pack)
        before = len(fleet.server.requests)
        assert r.reconcile_once().skipped
        assert [m for m, _ in fleet.server.requests[before:]] == ["GET", "POST"]


def test_config_change_moves_only_affected_pools_in_one_commit(fleet: Fleet) -> None:
    r = fleet.reconciler()
    r.reconcile_once()
    master_before, worker_before = fleet.pin("master"), fleet.pin("worker")
    worker_kargs = "machineconfigs/05-worker-kernelargs.yaml"
    fleet.commit({worker_kargs: fleet.file(worker_kargs).replace("audit=1", "audit=0")},
                 "worker: audit off")  # fmt: skip
    report = r.reconcile_once()
    assert report.changed == ["worker"]
    assert fleet.log()[0].startswith("pin worker to ")
    assert fleet.pin("master") == master_before
    worker = fleet.pin("worker")
    assert worker.spec.digest != worker_before.spec.digest
    assert worker.spec.inputs_digest != worker_before.spec.inputs_digest


def test_config_revert_returns_to_the_earlier_image_without_a_build(fleet: Fleet) -> None:
    r = fleet.reconciler()
    r.reconcile_once()
    first = fleet.pin("worker")
    change = change_chrony(fleet, "ntp2.example.internal")
    r.reconcile_once()
    second = fleet.pin("worker")
    assert second.spec.digest != first.spec.digest
    # git revert of the config commit, by an admin
    fleet.server.commit_files({CHRONY: fleet.server.git("show", f"{change}~1:{CHRONY}")},
                              'Revert "chrony: use ntp2.example.internal"')  # fmt: skip
    uploaded = r.registry.bytes_uploaded
    report = r.reconcile_once()
    assert report.changed == ["master", "worker"]
    back = fleet.pin("worker")
    assert back.spec.digest == first.spec.digest
    assert back.spec.build.builder == "reused"
    assert r.registry.bytes_uploaded == uploaded  # nothing was built or pushed


def test_a_hand_reverted_pin_holds_the_pool_until_its_inputs_change(fleet: Fleet) -> None:
    r = fleet.reconciler()
    r.reconcile_once()
    old = fleet.pin("master")
    change_chrony(fleet, "ntp3.example.internal")
    r.reconcile_once()
    pin_commit = fleet.server.head()
    assert fleet.pin("master").spec.digest != old.spec.digest
    # an admin reverts the pin commit (git revert): master goes back and is held
    work = fleet.server.scratch
    run_git("fetch", "-q", "origin", cwd=work)
    run_git("checkout", "-q", "-f", "-B", "main", "origin/main", cwd=work)
    run_git("-c", "user.name=Admin", "-c", "user.email=admin@example.com", "revert",
            "--no-edit", pin_commit, cwd=work)  # fmt: skip
    run_git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=work)
    report = r.reconcile_once()
    assert report.commit is None
    assert report.pools["master"].state == "held"
    assert fleet.pin("master").spec.digest == old.spec.digest
    assert r.status.pools["master"].is_true("Held")
    # a later input change for master ends the hold
    masters = "machineconfigs/99-master-ssh.yaml"
    fleet.commit({masters: fleet.file(masters).replace("oncall@", "pager@")}, "master: keys")
    report = r.reconcile_once()
    assert "master" in report.changed
    assert not r.status.pools["master"].is_true("Held")


def test_two_reconcilers_racing_end_with_one_commit(fleet: Fleet) -> None:
    a, b = fleet.reconciler("a"), fleet.reconciler("b")
    start = fleet.server.head()
    barrier = threading.Barrier(2)
    original = a.mirror.push

    def slow_push(*args, **kw):  # type: ignore[no-untyped-def]
        barrier.wait(10)  # both have committed locally on the same parent
        return original(*args, **kw)

    reports: dict[str, controller.PassReport] = {}

    def run(name: str, r: controller.Reconciler) -> None:
        if name == "a":
            r.mirror.push = slow_push  # type: ignore[method-assign]
        else:
            original_b = r.mirror.push

            def push_b(*args, **kw):  # type: ignore[no-untyped-def]
                barrier.wait(10)
                return original_b(*args, **kw)

            r.mirror.push = push_b  # type: ignore[method-assign]
        reports[name] = r.reconcile_once()

    threads = [threading.Thread(target=run, args=(n, r)) for n, r in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    log = fleet.server.git("log", "--format=%H %s", f"{start}..main").splitlines()
    assert len(log) == 1, log  # one pin commit, no conflict, nothing lost
    head = fleet.server.head()
    # Both end at the one commit. Either the second push was rejected, and that
    # reconciler fetched, re-planned and found nothing to do; or both made the very same
    # commit (same parent, pins, message, author and second) and its push was a no-op.
    assert {rep.head for rep in reports.values()} == {head}
    for rep in reports.values():
        assert rep.commit in (None, head)
        if rep.commit is None:
            assert rep.attempts == 2


# --- failures -----------------------------------------------------------------------------


def test_one_broken_pool_keeps_its_pin_while_others_pin(fleet: Fleet) -> None:
    r = fleet.reconciler()
    r.reconcile_once()
    master_pin = fleet.pin("master")
    bad = (
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\n"
        "metadata:\n  name: 99-master-bad\n  labels:\n"
        "    machineconfiguration.openshift.io/role: master\n"
        "spec:\n  config:\n    ignition: {version: 3.2.0}\n    storage:\n"
        "      files: [{path: etc/oops, contents: {source: 'data:,x'}}]\n"
    )
    fleet.commit({"machineconfigs/99-master-bad.yaml": bad}, "master: a broken file")
    change_chrony(fleet, "ntp4.example.internal")
    report = r.reconcile_once()
    assert report.changed == ["worker"]
    assert report.pools["master"].state == "stalled"
    assert "etc/oops" in report.pools["master"].message
    assert fleet.pin("master") == master_pin
    assert r.status.pools["master"].is_true("Stalled")
    # a config error is not retried on the same commit
    assert r.status.pools["master"].retry_at is None
    assert r.reconcile_once().skipped


def test_registry_down_is_retried_and_pins_nothing(
    git_servers: GitServers, registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> None:
    fleet = make_fleet(git_servers, "file", registry, base_image, tmp_path)
    # the worker's images now go to a registry that is not there
    mosc = "machineosconfigs/worker.yaml"
    fleet.commit(
        {mosc: fleet.file(mosc).replace(registry.host, "127.0.0.1:9")}, "worker: new registry"
    )
    work = tmp_path / "down"
    mirror = git.Mirror(fleet.server.url, work / "mirror")
    client = registry.client(insecure={registry.host, "127.0.0.1:9"}, retry_deadline_s=1)
    r = controller.Reconciler(mirror, client, work)
    report = r.reconcile_once()
    assert report.pools["worker"].state == "failed"
    assert report.pools["worker"].transient
    assert "127.0.0.1:9" in report.pools["worker"].message
    assert report.changed == ["master"]
    assert "pins/worker.yaml" not in fleet.server.git("ls-tree", "-r", "--name-only", "main")
    status = r.status.pools["worker"]
    assert status.retry_at is not None
    assert status.failures == 1
    # the retry is due even though Git did not move
    r.clock = lambda: status.retry_at + 1  # type: ignore[method-assign,operator]
    again = r.reconcile_once()
    assert not again.skipped
    assert r.status.pools["worker"].failures == 2


# --- crash safety -------------------------------------------------------------------------


def run_once(
    fleet: Fleet, work: Path, failpoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("RECONCILER_FAILPOINT", None)
    if failpoint:
        env["RECONCILER_FAILPOINT"] = failpoint
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "run", "--once", "--repo", fleet.server.url,
         "--work-dir", str(work), "--insecure-registry", fleet.registry.host],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "failpoint",
    ["after-load", "after-plan", "mid-build", "after-build", "after-commit", "after-push"],
)
def test_a_pass_killed_at_any_step_converges_on_restart(fleet: Fleet, failpoint: str) -> None:
    work = fleet.root / "work"
    start = fleet.server.head()
    killed = run_once(fleet, work, failpoint)
    assert killed.returncode == 137, killed.stderr
    restarted = run_once(fleet, work)
    assert restarted.returncode == 0, restarted.stderr
    commits = fleet.server.git("log", "--format=%s", f"{start}..main").splitlines()
    assert len(commits) == 1, commits  # exactly one pin commit: none lost, none doubled
    for pool in ("master", "worker"):
        pin = fleet.pin(pool)
        assert fleet.registry.skopeo_digest(pin.spec.image) == pin.spec.digest
    # one image per pool: the restart found what the killed pass had pushed
    assert len(fleet.tags("worker")) == 1
    third = run_once(fleet, work)
    assert "nothing due" in third.stdout  # the restarted pass recorded it all
    assert fleet.server.git("log", "--format=%s", f"{start}..main").splitlines() == commits


def test_the_reconciler_never_reacts_to_its_own_commits(fleet: Fleet) -> None:
    r = fleet.reconciler()
    first = r.reconcile_once()
    assert first.commit
    follow = r.reconcile_once()
    assert follow.skipped
    # another replica sees our commit as a move, plans, and commits nothing
    other = fleet.reconciler("other")
    seen = other.reconcile_once()
    assert seen.commit is None
    assert not seen.skipped
    head = other.mirror.log(seen.head, max_count=1)[0]
    assert history.is_reconciler_commit(head)


# --- Containerfile builds in the loop -------------------------------------------------------


@pytest.mark.buildah
def test_a_failed_containerfile_build_is_a_pool_condition_never_a_pin(
    git_servers: GitServers,
    registry: RunningRegistry,
    dnf_base,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    prefix = f"cf-{tmp_path.name}"[:60].lower().replace("_", "-")
    seed = example_repo(tmp_path / "seed", registry.host, dnf_base.ref, prefix=prefix)
    mosc = seed / "machineosconfigs" / "infra.yaml"
    mosc.write_text(mosc.read_text() + "  containerFile:\n    - content: |\n"
                    "        RUN echo about to fail && exit 3\n")  # fmt: skip
    server = git_servers.new_repo("file", files_from_dir(seed))
    fleet = Fleet(server, registry, tmp_path, prefix)
    work = tmp_path / "work"
    mirror = git.Mirror(server.url, work / "mirror")
    client = registry.client()
    from reconciler.adapters import builders

    r = controller.Reconciler(mirror, client, work, controller.RunSettings(),
                              builders.available(client, work_dir=work))  # fmt: skip
    first = r.reconcile_once()
    assert first.changed == ["master", "worker"]  # the others go on, not waiting
    assert first.building == ["infra"]  # built in the background
    assert r.builds.wait(120)
    report = r.reconcile_once()  # the pass after the build ends reports it
    assert report.commit is None
    infra = report.pools["infra"]
    assert infra.state == "stalled"
    assert "about to fail" in infra.message  # the log tail is in the pool's condition
    assert "pins/infra.yaml" not in server.git("ls-tree", "-r", "--name-only", "main")
    status = r.status.pools["infra"]
    assert status.is_true("Stalled")
    assert not status.is_true("Building")
    assert fleet.tags("infra") == []  # nothing pushed that a pin could point to
    # a commit elsewhere does not rebuild the same failing inputs
    builds_before = len(list((work / "build-logs").glob("infra-*.log")))
    masters = "machineconfigs/99-master-ssh.yaml"  # reaches master only
    fleet.commit({masters: fleet.file(masters).replace("oncall@", "pager@")}, "master: keys")
    again = r.reconcile_once()
    assert again.changed == ["master"]
    assert again.pools["infra"].state == "stalled"
    assert "about to fail" in again.pools["infra"].message
    assert len(list((work / "build-logs").glob("infra-*.log"))) == builds_before


# --- changes without a reboot (issue 12) ------------------------------------------------------


def git_agent(fleet: Fleet, bootc_host: Any, tmp_path: Path, pin: pins.Pin) -> Any:
    """An agent of pool worker reading Git, on a stand-in host booted from `pin`'s image;
    live settings go under `tmp_path/hostroot`."""
    from reconciler.adapters.bootc import Bootc, Timeouts
    from reconciler.agent import health
    from reconciler.agent.agent import Agent, AgentConfig
    from reconciler.agent.coordination import NoCoordination
    from reconciler.agent.live import LiveApplier
    from reconciler.agent.source import GitPinSource
    from reconciler.agent.state import StateStore

    repo = pin.spec.image.partition("@")[0]
    bootc_host.add_image(repo, pin.spec.digest)
    bootc_host.install(pin.spec.image)
    return Agent(
        config=AgentConfig(pool="worker"),
        source=GitPinSource(fleet.server.url, tmp_path / "agent-git", auth=fleet.server.auth),
        bootc=Bootc([str(bootc_host.bootc)], timeouts=Timeouts(status=10, switch=30, rollback=10)),
        coordinator=NoCoordination(),
        store=StateStore(tmp_path / "agent-state"),
        health_checks=[health.UnitActive(systemctl=str(bootc_host.systemctl))],
        reboot_command=bootc_host.reboot_command,
        boot_id=lambda: health.read_boot_id(bootc_host.boot_id_file),
        live=LiveApplier(root=tmp_path / "hostroot", owner=None),
    )


NEW_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINewKeyForTheE2eTestOnly0000000000000 new@example.com"
)


def add_worker_key(fleet: Fleet) -> str:
    ssh = "machineconfigs/99-worker-ssh.yaml"
    return fleet.commit({ssh: fleet.file(ssh) + f"            - {NEW_KEY}\n"},
                        "worker: one more SSH key")  # fmt: skip


def test_an_ssh_key_only_commit_repins_the_same_image_and_reaches_the_node_without_a_reboot(
    fleet: Fleet, bootc_host: Any, tmp_path: Path
) -> None:
    from reconciler.agent.live import CORE_KEYS
    from reconciler.agent.state import Phase

    r = fleet.reconciler()
    r.reconcile_once()
    before = fleet.pin("worker")
    assert before.spec.live_config_digest is not None  # the examples give core two keys
    tags, uploaded = fleet.tags("worker"), r.registry.bytes_uploaded

    # a node booted from the pinned image (the bootc stand-in; the agent reads Git)
    agent = git_agent(fleet, bootc_host, tmp_path, before)
    first = agent.step()
    assert first.phase == Phase.DONE, first.reason
    assert "applied core's SSH keys (2) live" in first.reason  # the agent's first run
    keys_file = tmp_path / "hostroot" / CORE_KEYS
    assert len(keys_file.read_text().splitlines()) == 2
    boot_id = bootc_host.boot_id_file.read_text()

    # an admin adds a key: nothing else changes
    add_worker_key(fleet)
    report = r.reconcile_once()
    assert report.changed == ["worker"]
    after = fleet.pin("worker")
    assert (after.spec.image, after.spec.digest) == (before.spec.image, before.spec.digest)
    assert after.spec.inputs_digest == before.spec.inputs_digest
    assert after.spec.build == before.spec.build  # how the image came to be: unchanged
    assert after.spec.live_config_digest not in (None, before.spec.live_config_digest)
    changed = {k for k, v in after.spec.model_dump().items() if v != before.spec.model_dump()[k]}
    assert changed == {"live_config_digest", "rendered_config", "source_commit"}
    assert fleet.tags("worker") == tags  # no new image ...
    assert r.registry.bytes_uploaded == uploaded  # ... nothing built or pushed
    assert "no reboot" in fleet.server.git("log", "-1", "--format=%B", "main")

    state = agent.step()
    assert state.phase == Phase.DONE, state.reason
    assert state.reason == (
        f"booted {before.spec.digest}; applied core's SSH keys (3) live, without a reboot"
    )
    assert keys_file.read_text().splitlines()[-1] == NEW_KEY
    assert bootc_host.boot_id_file.read_text() == boot_id  # no reboot
    assert not [c for c in bootc_host.calls() if c[:1] == ["switch"]]


def test_a_node_applies_the_keys_of_its_pin_while_the_branch_has_moved_on(
    fleet: Fleet, bootc_host: Any, tmp_path: Path
) -> None:
    # The agent reads the live settings at the pin's sourceCommit: a key commit the
    # reconciler has not pinned (yet, or ever: a held or stalled pool) changes nothing
    # on a node, and no node goes degraded over it.
    from reconciler.agent.live import CORE_KEYS
    from reconciler.agent.state import Phase

    r = fleet.reconciler()
    r.reconcile_once()
    pinned = fleet.pin("worker")
    head = add_worker_key(fleet)  # not reconciled: the pin still names the older commit
    assert pinned.spec.source_commit != head

    agent = git_agent(fleet, bootc_host, tmp_path, pinned)
    state = agent.step()

    assert state.phase == Phase.DONE, state.reason
    assert "applied core's SSH keys (2) live" in state.reason  # the pin's two, not three
    keys = (tmp_path / "hostroot" / CORE_KEYS).read_text().splitlines()
    assert len(keys) == 2
    assert NEW_KEY not in keys
    # the agent's mirror stays shallow: it fetched the pin's source commit alone
    mirror = tmp_path / "agent-git"
    assert set((mirror / "shallow").read_text().split()) >= {pinned.spec.source_commit}

    # once pinned, the new key arrives, without a reboot
    r.reconcile_once()
    assert fleet.pin("worker").spec.source_commit == head
    state = agent.step()
    assert state.phase == Phase.DONE, state.reason
    assert "applied core's SSH keys (3) live, without a reboot" in state.reason
    assert (tmp_path / "hostroot" / CORE_KEYS).read_text().splitlines()[-1] == NEW_KEY
