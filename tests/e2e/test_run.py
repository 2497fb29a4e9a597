"""`reconciler run` as a long-running process: a commit is picked up at once when it
arrives by webhook or lands in a watched local repository (the poll interval is an
hour, so only the trigger can explain a quick pin), SIGTERM stops it cleanly, and
`reconciler status` reports pools, pins and conditions."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_loop import Fleet, change_chrony, make_fleet
from tests.fixtures.gitservers import GitServers
from tests.fixtures.registry import BaseImage, RunningRegistry

pytestmark = [pytest.mark.registry, pytest.mark.git]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reconciler_cmd(fleet: Fleet, url: str, work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", "run", "--repo", url, "--work-dir", str(work),
            "--insecure-registry", fleet.registry.host, "--interval", "3600", *extra]  # fmt: skip


def start(cmd: list[str], log: Path) -> subprocess.Popen[str]:
    """Start the reconciler with its stderr in `log` (the child keeps the only handle)."""
    with log.open("w") as out:
        return subprocess.Popen(cmd, stderr=out, text=True)


def wait_for(predicate, timeout: float = 20.0, log: Path | None = None) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    detail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"condition not met in {timeout}s; reconciler log:\n{detail}")


@pytest.fixture
def fleet(
    git_servers: GitServers, registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> Fleet:
    return make_fleet(git_servers, "file", registry, base_image, tmp_path)


@pytest.fixture
def process() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def pinned_lines(fleet: Fleet) -> list[str]:
    return [s for s in fleet.log() if s.startswith("pin ")]


def test_a_webhook_starts_a_pass_at_once(
    fleet: Fleet, tmp_path: Path, process: list[subprocess.Popen[str]]
) -> None:
    secret = tmp_path / "hook-secret"
    secret.write_text("hook-secret-value\n")
    port = free_port()
    cmd = reconciler_cmd(fleet, fleet.server.url, tmp_path / "work",
                         "--webhook-listen", f"127.0.0.1:{port}", "--webhook-secret-file",
                         str(secret))  # fmt: skip
    log = tmp_path / "reconciler.log"
    proc = start(cmd, log)
    process.append(proc)
    wait_for(lambda: len(pinned_lines(fleet)) == 1, log=log)  # the first pass at start-up
    wait_for(lambda: _healthy(port))
    change_chrony(fleet, "ntp9.example.internal")
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    sig = hmac.new(b"hook-secret-value", body, hashlib.sha256).hexdigest()
    answer = httpx.post(f"http://127.0.0.1:{port}/hooks/git", content=body,
                        headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sig}"})  # fmt: skip
    assert answer.status_code == 202
    wait_for(lambda: len(pinned_lines(fleet)) == 2, timeout=15, log=log)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert "hook-secret-value" not in log.read_text()
    assert "webhook from github" in log.read_text()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_commit_in_a_watched_local_repository_is_picked_up_at_once(
    fleet: Fleet, tmp_path: Path, process: list[subprocess.Popen[str]]
) -> None:
    log = tmp_path / "reconciler.log"
    proc = start(reconciler_cmd(fleet, str(fleet.server.path), tmp_path / "work"), log)
    process.append(proc)
    wait_for(lambda: len(pinned_lines(fleet)) == 1, log=log)
    time.sleep(0.3)  # the watcher is up
    change_chrony(fleet, "ntp8.example.internal")
    took = wait_for(lambda: len(pinned_lines(fleet)) == 2, timeout=15, log=log)
    assert took < 15
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def test_status_shows_pins_conditions_and_errors(fleet: Fleet, tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = dict(os.environ)
    ran = subprocess.run(reconciler_cmd(fleet, fleet.server.url, work, "--once"),
                         capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    bad = (
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\n"
        "metadata:\n  name: 99-master-bad\n  labels:\n"
        "    machineconfiguration.openshift.io/role: master\nspec:\n  kernelType: rt\n"
    )
    fleet.commit({"machineconfigs/99-master-bad.yaml": bad}, "master: typo")
    ran = subprocess.run(reconciler_cmd(fleet, fleet.server.url, work, "--once"),
                         capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert ran.returncode == 1  # a pool is stalled
    assert "master: stalled" in ran.stdout
    status = subprocess.run(
        [sys.executable, "-m", "reconciler", "status", "--repo", fleet.server.url,
         "--work-dir", str(work), "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["statusIsCurrent"]
    worker, master = doc["pools"]["worker"], doc["pools"]["master"]
    assert worker["conditions"]["Ready"]["status"] is True
    assert worker["pin"] == fleet.pin("worker").spec.image
    assert master["conditions"]["Stalled"]["status"] is True
    assert "'rt' is not allowed" in master["conditions"]["Stalled"]["message"]
    assert master["pin"] == fleet.pin("master").spec.image  # the last good pin stays
    text = subprocess.run(
        [sys.executable, "-m", "reconciler", "status", "--repo", fleet.server.url,
         "--work-dir", str(work)],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    lines = text.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("POOL")) + 1 :]
    rows = {line.split()[0]: line.split()[1:3] for line in table if line.strip()}
    assert rows["master"] == ["False", "Stalled"]
    assert rows["worker"][0] == "True"
