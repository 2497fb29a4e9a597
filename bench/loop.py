"""Reconcile-loop benchmarks, with a real registry and real Git (bare repo, git daemon).

1. Latency: a config commit pushed to the remote → the pin commit visible on the remote
   (one pool, native builder, local registry). The loop runs in a thread and is woken
   the way a webhook wakes it. Target: under 1 s.
2. Idle cost: a pass when nothing moved, against a bare `git ls-remote` of the same
   repository over the same transport, side by side. Target: at most 2x.
3. Scale: one shared config change reaching N pools at once (N = 25, 50, 100): one
   commit, time linear in N.

    .venv/bin/python bench/loop.py [--changes 10] [--idle 30]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.adapters import git
from reconciler.loop import controller
from tests.fixtures import registry as reg_fixture
from tests.fixtures.gitservers import files_from_dir, run_git

POOL_TEMPLATE = """apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigPool
metadata:
  name: {pool}
spec:
  machineConfigSelector:
    matchExpressions:
      - {{key: machineconfiguration.openshift.io/role, operator: In, values: [worker, {pool}]}}
---
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineOSConfig
metadata:
  name: {pool}
spec:
  machineConfigPool: {{name: {pool}}}
  renderedImagePushSpec: {registry}/bench/{pool}:latest
  baseImagePullSpec: {base}
"""
SHARED = """apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 50-worker-motd
  labels: {{machineconfiguration.openshift.io/role: worker}}
spec:
  config:
    ignition: {{version: 3.4.0}}
    storage:
      files:
        - path: /etc/motd
          mode: 420
          contents: {{source: "data:,{text}"}}
"""
OWN = """apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 60-{pool}-kargs
  labels: {{machineconfiguration.openshift.io/role: {pool}}}
spec:
  kernelArguments: [pool={pool}]
"""


def write_repo(root: Path, pools: int, registry: str, base: str) -> dict[str, bytes]:
    for i in range(pools):
        pool = f"pool{i:03d}"
        (root / f"pools/{pool}.yaml").parent.mkdir(parents=True, exist_ok=True)
        (root / f"pools/{pool}.yaml").write_text(
            POOL_TEMPLATE.format(pool=pool, registry=registry, base=base)
        )
        (root / f"machineconfigs/{pool}.yaml").parent.mkdir(parents=True, exist_ok=True)
        (root / f"machineconfigs/{pool}.yaml").write_text(OWN.format(pool=pool))
    (root / "machineconfigs/50-worker-motd.yaml").write_text(SHARED.format(text="v0"))
    return files_from_dir(root)


class Remote:
    """A bare repository an admin pushes to (through a scratch clone)."""

    def __init__(self, root: Path, files: dict[str, bytes]) -> None:
        self.bare = root / "remote.git"
        self.work = root / "admin"
        run_git("init", "-q", "--bare", "-b", "main", self.bare)
        run_git("init", "-q", "-b", "main", self.work)
        for path, data in files.items():
            (self.work / path).parent.mkdir(parents=True, exist_ok=True)
            (self.work / path).write_bytes(data)
        self.push("initial config")

    def push(self, message: str) -> None:
        run_git("add", "-A", cwd=self.work)
        run_git("-c", "user.name=Admin", "-c", "user.email=a@example.com", "commit", "-q",
                "-m", message, cwd=self.work)  # fmt: skip
        if run_git(f"--git-dir={self.bare}", "branch", "--list", "main").strip():
            run_git("pull", "-q", "--rebase", str(self.bare), "main", cwd=self.work)
        run_git("push", "-q", str(self.bare), "HEAD:refs/heads/main", cwd=self.work)

    def head(self) -> str:
        return run_git(f"--git-dir={self.bare}", "rev-parse", "refs/heads/main").strip()

    def subject(self) -> str:
        return run_git(f"--git-dir={self.bare}", "log", "-1", "--format=%s", "main").strip()


@contextlib.contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    port = reg_fixture.free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}",
         f"--base-path={base}", "--export-all", "--enable=receive-pack", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            with contextlib.suppress(RuntimeError):
                run_git("ls-remote", f"git://127.0.0.1:{port}/remote.git")
                break
            time.sleep(0.02)
        yield f"git://127.0.0.1:{port}/remote.git"
    finally:
        proc.terminate()
        proc.wait(5)


def make_reconciler(
    url: str, work: Path, registry: reg_fixture.RunningRegistry
) -> controller.Reconciler:
    mirror = git.Mirror(url, work / "mirror")
    return controller.Reconciler(mirror, registry.client(), work)


def bench_latency(
    root: Path, registry: reg_fixture.RunningRegistry, base: str, changes: int
) -> list[float]:
    remote = Remote(root / "latency", write_repo(root / "latency" / "seed", 1, registry.host, base))
    r = make_reconciler(remote.bare.as_uri(), root / "latency" / "work", registry)
    r.reconcile_once()  # first pins
    stop, trigger = threading.Event(), threading.Event()
    loop = threading.Thread(target=r.run, args=(stop, trigger, 3600.0), daemon=True)
    loop.start()
    times = []
    motd = remote.work / "machineconfigs/50-worker-motd.yaml"
    for i in range(changes):
        motd.write_text(SHARED.format(text=f"change-{i}"))
        remote.push(f"motd {i}")
        start = time.perf_counter()
        trigger.set()  # what the webhook does
        while not remote.subject().startswith("pin "):
            time.sleep(0.002)
        times.append(time.perf_counter() - start)
    stop.set()
    trigger.set()
    loop.join(10)
    r.registry.close()
    return times


def bench_idle(
    root: Path, registry: reg_fixture.RunningRegistry, base: str, rounds: int
) -> dict[str, tuple[float, float]]:
    remote = Remote(root / "idle", write_repo(root / "idle" / "seed", 3, registry.host, base))
    out = {}
    with git_daemon(root / "idle") as daemon_url:
        for name, url in (("file://", remote.bare.as_uri()), ("git://", daemon_url)):
            r = make_reconciler(url, root / "idle" / f"work-{name[:-3]}", registry)
            r.reconcile_once()
            r.reconcile_once()
            idle, lsr = [], []
            for _ in range(rounds):
                t = time.perf_counter()
                assert r.reconcile_once().skipped
                idle.append(time.perf_counter() - t)
                t = time.perf_counter()
                subprocess.run(["git", "ls-remote", url, "refs/heads/main"], check=True,
                               capture_output=True)  # fmt: skip
                lsr.append(time.perf_counter() - t)
            out[name] = (statistics.median(lsr), statistics.median(idle))
            r.registry.close()
    return out


def bench_scale(
    root: Path, registry: reg_fixture.RunningRegistry, base: str, sizes: list[int]
) -> list[tuple[int, float, int]]:
    rows = []
    for n in sizes:
        where = root / f"scale{n}"
        remote = Remote(where, write_repo(where / "seed", n, registry.host, base))
        r = make_reconciler(remote.bare.as_uri(), where / "work", registry)
        r.reconcile_once()
        before = remote.head()
        (remote.work / "machineconfigs/50-worker-motd.yaml").write_text(SHARED.format(text="new"))
        remote.push("motd for every pool")
        start = time.perf_counter()
        report = r.reconcile_once()
        took = time.perf_counter() - start
        commits = (
            len(run_git(f"--git-dir={remote.bare}", "rev-list", f"{before}..main").split()) - 1
        )
        assert len(report.changed) == n, report.changed
        rows.append((n, took, commits))
        r.registry.close()
    return rows


def start_base_registry(
    root: Path, image: reg_fixture.ImageParts | None = None, name: str = "bench"
) -> tuple[reg_fixture.RunningRegistry, str]:
    """A plain-HTTP registry under `root` holding a small bootc base image, and the
    base's `host/base/bootc:latest` reference (every loop bench starts here)."""
    (root / "registry").mkdir()
    proc, host, log = reg_fixture.start_registry(name, root / "registry")
    (root / "auth.json").write_text('{"auths": {}}')
    registry = reg_fixture.RunningRegistry(name, host, "http", root, root / "auth.json", proc, log)
    with registry.client() as client:
        reg_fixture._push_image(
            client, f"{host}/base/bootc", image or reg_fixture.build_bootc_image(), "latest"
        )
    return registry, f"{host}/base/bootc:latest"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--idle", type=int, default=30)
    parser.add_argument("--sizes", default="25,50,100")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    registry, base = start_base_registry(root)
    try:
        latency = bench_latency(root, registry, base, args.changes)
        idle = bench_idle(root, registry, base, args.idle)
        scale = bench_scale(root, registry, base, [int(s) for s in args.sizes.split(",")])
    finally:
        registry.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"1. config commit -> pin commit on the remote (1 pool, native, {args.changes} changes)")
    print("| median | max | target |")
    print("|---|---|---|")
    print(
        f"| {statistics.median(latency) * 1000:.0f} ms | {max(latency) * 1000:.0f} ms | < 1000 ms |"
    )
    print(f"\n2. idle pass vs bare `git ls-remote` (median of {args.idle})")
    print("| transport | git ls-remote | idle pass | ratio | target |")
    print("|---|---|---|---|---|")
    for name, (lsr, idle_s) in idle.items():
        ratio = idle_s / lsr
        print(f"| {name} | {lsr * 1000:.1f} ms | {idle_s * 1000:.1f} ms | {ratio:.2f} | <= 2.00 |")
    print("\n3. one shared change reaching N pools")
    print("| pools | pass (plan, build, commit, push) | per pool | pin commits |")
    print("|---|---|---|---|")
    for n, took, commits in scale:
        print(f"| {n} | {took:.2f} s | {took / n * 1000:.0f} ms | {commits} |")


if __name__ == "__main__":
    main()
