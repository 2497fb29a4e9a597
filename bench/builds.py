"""Build bench: a slow Containerfile build must not hold another pool's config change.

Targets (issue 13): with one pool whose RUN step is slow, a config-only change to
another pool, committed just after, is pinned within 2 s of its commit while the build
runs; the slow pool is pinned when its build is done.

Real parts, as the other loop benches: a `docker-registry` on 127.0.0.1 holding a small
bootc base (busybox with a `bootc` shim, `tests/fixtures/buildbase.py`), a bare Git
remote, the real buildah builder (`bud --isolation chroot`, vfs) and the reconcile loop
(`Reconciler.run`, in a thread; each admin push sets its trigger, as a webhook would).
Two pools: `slow` (a MachineOSConfig `containerFile` whose RUN step sleeps `--sleep`
seconds) and `fast` (config-only: a file in /etc, built natively). Per round, the admin
pushes a change of `slow`'s RUN step and, `--gap` seconds later, a change of `fast`'s
file; the clock runs from each push until the remote has the pin with the new inputs.

Side by side in one run: `--builds 2` (builds in the background, the default) and
`--builds 0` (builds inside the pass: the behaviour before issue 13).

    .venv/bin/python bench/builds.py [--sleep 20 --rounds 2 --gap 0.5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loop import Remote, start_base_registry
from reconciler.adapters import git
from reconciler.adapters.builders import buildlock
from reconciler.adapters.builders.buildah import BuildahBuilder
from reconciler.adapters.registry import RegistryClient
from reconciler.core import pins
from reconciler.loop import controller
from tests.fixtures.buildbase import PackageRepo, build_image
from tests.fixtures.gitservers import run_git

POOL = """apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigPool
metadata:
  name: {pool}
spec:
  machineConfigSelector:
    matchLabels: {{machineconfiguration.openshift.io/role: {pool}}}
---
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineOSConfig
metadata:
  name: {pool}
spec:
  machineConfigPool: {{name: {pool}}}
  renderedImagePushSpec: {registry}/bench-builds/{pool}:latest
  baseImagePullSpec: {base}
"""
FILE = """apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 50-{pool}-motd
  labels: {{machineconfiguration.openshift.io/role: {pool}}}
spec:
  config:
    ignition: {{version: 3.4.0}}
    storage:
      files:
        - path: /etc/motd
          mode: 420
          contents: {{source: "data:,{text}"}}
"""
CONTAINERFILE = """  containerFile:
    - containerfileArch: NoArch
      content: |
        RUN sleep {sleep} && echo {text} > /etc/bench-round
"""


def write_pool(repo: Path, pool: str, registry: str, base: str, text: str,
               sleep: float | None = None) -> None:  # fmt: skip
    spec = POOL.format(pool=pool, registry=registry, base=base)
    if sleep is not None:
        spec += CONTAINERFILE.format(sleep=sleep, text=text)
    (repo / "pools").mkdir(parents=True, exist_ok=True)
    (repo / "machineconfigs").mkdir(parents=True, exist_ok=True)
    (repo / f"pools/{pool}.yaml").write_text(spec)
    (repo / f"machineconfigs/{pool}.yaml").write_text(FILE.format(pool=pool, text=text))


@dataclass
class Figures:
    fast_s: list[float] = field(default_factory=list)
    slow_s: list[float] = field(default_factory=list)
    fast_pinned_while_building: list[bool] = field(default_factory=list)


def pinned_inputs(bare: Path, pool: str, at: str = "main") -> str | None:
    try:
        text = run_git(f"--git-dir={bare}", "show", f"{at}:pins/{pool}.yaml")
    except RuntimeError:
        return None
    return pins.parse_pin(text).spec.inputs_digest


def run_mode(root: Path, host: str, base: str, builds: int, rounds: int, sleep: float,
             gap: float) -> Figures:  # fmt: skip
    root.mkdir()
    seed = root / "seed"
    write_pool(seed, "slow", host, base, "r0", sleep=0)
    write_pool(seed, "fast", host, base, "r0")
    files = {str(p.relative_to(seed)): p.read_bytes() for p in seed.rglob("*.yaml")}
    remote = Remote(root, files)
    work = root / "work"
    client = RegistryClient(insecure={host})
    builder = BuildahBuilder(client, work / "buildah", locks=buildlock.BuildLocks(root / "locks"),
                             storages=max(1, builds))  # fmt: skip
    mirror = git.Mirror(str(remote.bare), work / "mirror")
    settings = controller.RunSettings(builds=builds)
    r = controller.Reconciler(mirror, client, work, settings, {"buildah": builder})
    r.reconcile_until_built()  # both pools pinned, the base pulled into the storage
    stop, trigger = threading.Event(), threading.Event()
    loop = threading.Thread(target=r.run, args=(stop, trigger, 60.0), daemon=True)
    loop.start()
    out = Figures()
    try:
        for n in range(1, rounds + 1):
            before = {p: pinned_inputs(remote.bare, p) for p in ("slow", "fast")}
            write_pool(remote.work, "slow", host, base, f"r{n}-{builds}", sleep=sleep)
            remote.push(f"slow: round {n}")
            t_slow = time.monotonic()
            trigger.set()
            time.sleep(gap)
            write_pool(remote.work, "fast", host, base, f"r{n}-{builds}")
            remote.push(f"fast: round {n}")
            t_fast = time.monotonic()
            trigger.set()
            done: dict[str, float] = {}
            commit: dict[str, str] = {}
            deadline = time.monotonic() + sleep * 4 + 300
            seen = ""
            while len(done) < 2 and time.monotonic() < deadline:
                head = remote.head()
                if head != seen:  # both pins read at one commit
                    seen = head
                    for pool in ("slow", "fast"):
                        now = pinned_inputs(remote.bare, pool, head)
                        if pool not in done and now != before[pool]:
                            done[pool], commit[pool] = time.monotonic(), head
                time.sleep(0.05)
            if len(done) < 2:
                raise SystemExit(f"builds={builds} round {n}: not pinned in time: {done}")
            out.fast_pinned_while_building.append(commit["fast"] != commit["slow"]
                                                  and done["fast"] < done["slow"])  # fmt: skip
            out.fast_s.append(done["fast"] - t_fast)
            out.slow_s.append(done["slow"] - t_slow)
    finally:
        stop.set()
        trigger.set()
        loop.join(timeout=sleep * 4 + 300)
        r.builds.stop()
        r.workers.close()
        client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sleep", type=float, default=20.0, help="seconds of the slow RUN step")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gap", type=float, default=0.5,
                        help="seconds between the slow pool's push and the fast one's")  # fmt: skip
    parser.add_argument("--no-baseline", action="store_true", help="skip --builds 0")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-builds-"))
    packages = PackageRepo(root / "packages")
    registry, base = start_base_registry(root, build_image(packages.url), name="bench-builds")
    results: dict[str, Figures] = {}
    try:
        modes = [("background (--builds 2)", 2)]
        if not args.no_baseline:
            modes.append(("inline (--builds 0, before)", 0))
        for label, builds in modes:
            results[label] = run_mode(root / f"builds-{builds}", registry.host, base, builds,
                                      args.rounds, args.sleep, args.gap)  # fmt: skip
    finally:
        registry.stop()
        packages.stop()
        shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()
    print(f"One pool with `RUN sleep {args.sleep:g}` (buildah, vfs) and a config-only change "
          f"to another pool pushed {args.gap:g} s after it; {args.rounds} rounds, median (max); "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")  # fmt: skip
    print("| builds | config-only pool pinned after its push (target ≤ 2 s) "
          "| pinned before the slow pool, in a commit of its own "
          "| slow pool pinned after its push |")  # fmt: skip
    print("|---|---|---|---|")
    med = statistics.median
    for label, f in results.items():
        while_building = sum(f.fast_pinned_while_building)
        print(f"| {label} | {med(f.fast_s):.2f} s ({max(f.fast_s):.2f}) "
              f"| {while_building}/{len(f.fast_s)} "
              f"| {med(f.slow_s):.1f} s ({max(f.slow_s):.1f}) |")  # fmt: skip
    if len(results) == 2:
        bg, inline = results.values()
        print(f"\nconfig-only pool: {med(inline.fast_s) / med(bg.fast_s):.0f}× sooner with "
              "background builds; the slow pool is pinned as soon as its build is done "
              f"({med(bg.slow_s) - args.sleep:.1f} s over its RUN step, against "
              f"{med(inline.slow_s) - args.sleep:.1f} s inline)")  # fmt: skip


if __name__ == "__main__":
    main()
