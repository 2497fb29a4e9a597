"""Fleet benchmark: passes of a 300-pool repository against a bare client, side by side.

Two docker-registry processes on 127.0.0.1, seeded alike (every pool pinned once, the
base image's layers in every pool's repository), and two bare Git repositories. Per
round, one config change is pushed to both remotes:

- `reconciler`: one `reconcile_once()` on remote A against registry A, in process;
- `bare client`: the same registry requests the pass makes for the changed pools, on
  registry B, over `--connections` HTTP connections (the same number as the reconciler's
  `--registry-connections`) (one thread each; http.client, no
  auth, no checks; the request bodies computed before the clock starts), then one
  `git commit` of the new pin files and one `git push` to remote B.

Scenarios: 100 of 300 pools changed (a MachineConfig their role selects; target within
1.5× of the bare client) and 1 of 300 (the pool's own config; target within 0.3 s of an
idle pass, the pass that finds nothing moved).

    .venv/bin/python bench/fleet.py [--pools 300 --changed 100 --rounds 3 --connections 8]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loop import Remote, start_base_registry
from reconciler.adapters import git
from reconciler.core import load, pins, reference
from reconciler.core.poolplan import PoolPlan
from reconciler.loop import controller, parallel, planning
from tests.fixtures import registry as reg_fixture
from tests.fixtures.gitservers import files_from_dir, run_git

POOL = """apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigPool
metadata:
  name: {pool}
spec:
  machineConfigSelector:
    matchExpressions:
      - {{key: machineconfiguration.openshift.io/role, operator: In, values: [{group}, {pool}]}}
---
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineOSConfig
metadata:
  name: {pool}
spec:
  machineConfigPool: {{name: {pool}}}
  renderedImagePushSpec: {registry}/fleet/{pool}:latest
  baseImagePullSpec: {base}
"""
GROUP = """apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 50-{group}-motd
  labels: {{machineconfiguration.openshift.io/role: {group}}}
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
  kernelArguments: [pool={pool}, {text}]
"""


def pool_name(i: int) -> str:
    return f"pool{i:03d}"


def write_repo(root: Path, pools: int, group_size: int, registry: str, base: str) -> None:
    (root / "pools").mkdir(parents=True)
    (root / "machineconfigs").mkdir(parents=True)
    for i in range(pools):
        pool, group = pool_name(i), f"g{i // group_size}"
        (root / f"pools/{pool}.yaml").write_text(
            POOL.format(pool=pool, group=group, registry=registry, base=base)
        )
        (root / f"machineconfigs/{pool}.yaml").write_text(OWN.format(pool=pool, text="v0"))
    for g in range((pools + group_size - 1) // group_size):
        (root / f"machineconfigs/g{g}.yaml").write_text(GROUP.format(group=f"g{g}", text="v0"))


class Side:
    """One registry, one remote, one reconciler work directory."""

    def __init__(
        self, root: Path, seed: Path, image: reg_fixture.ImageParts, connections: int
    ) -> None:
        root.mkdir()
        self.registry, _ = start_base_registry(root, image, name=root.name)
        host = self.host = self.registry.host
        self.root = root
        files = {
            path: data.replace(b"@REGISTRY@", host.encode())
            for path, data in files_from_dir(seed).items()
        }
        self.remote = Remote(root, files)
        self.reconciler = controller.Reconciler(
            git.Mirror(self.remote.bare.as_uri(), root / "work" / "mirror"),
            self.registry.client(),
            root / "work",
            controller.RunSettings(registry_connections=connections),
        )

    def change(self, path: str, text: str) -> None:
        (self.remote.work / path).write_text(text.replace("@REGISTRY@", self.host))
        self.remote.push(f"change {path}")


class BareClient:
    """The requests a native pass makes for `plans`, over `n` plain HTTP connections."""

    def __init__(self, host: str, n: int) -> None:
        self.host, self.n = host, n
        self.local = threading.local()
        self.requests = 0
        self._lock = threading.Lock()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, timeout=30)
        return conn

    def _do(self, method: str, url: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> http.client.HTTPResponse:  # fmt: skip
        conn = self._conn()
        conn.request(method, url, body=body, headers=headers or {})
        r = conn.getresponse()
        r.read()
        with self._lock:
            self.requests += 1
        return r

    def push(self, plan: PoolPlan) -> None:
        assert plan.composed is not None
        assert plan.layer is not None
        repo = reference.repository(plan.target).partition("/")[2]
        self._do("HEAD", f"/v2/{repo}/manifests/{plan.target.tag}")
        for layer in plan.base.layers:
            self._do("HEAD", f"/v2/{repo}/blobs/{layer['digest']}")
        composed = plan.composed
        for digest, data in (
            (plan.layer.digest, plan.layer.blob),
            (composed.config_digest, composed.config_bytes),
        ):
            if self._do("HEAD", f"/v2/{repo}/blobs/{digest}").status == 200:
                continue
            r = self._do("POST", f"/v2/{repo}/blobs/uploads/")
            location = r.headers["Location"]
            sep = "&" if "?" in location else "?"
            path = location.split(self.host, 1)[-1]
            put = self._do("PUT", f"{path}{sep}digest={digest}", data,
                           {"Content-Type": "application/octet-stream"})  # fmt: skip
            assert put.status == 201, put.status
        r = self._do("PUT", f"/v2/{repo}/manifests/{plan.target.tag}", composed.manifest_bytes,
                     {"Content-Type": composed.media_type})  # fmt: skip
        assert r.status == 201, r.status

    def run(self, plans: list[PoolPlan]) -> None:
        with ThreadPoolExecutor(self.n) as pool:
            list(pool.map(self.push, plans))


def bare_pass(side: Side, client: BareClient, plans: list[PoolPlan], pin_files: dict) -> float:
    """The bare client's pass: registry requests, then one commit and one push."""
    start = time.perf_counter()
    client.run(plans)
    work = side.remote.work
    for path, text in pin_files.items():
        (work / path).parent.mkdir(exist_ok=True)
        (work / path).write_text(text)
    run_git("add", "-A", cwd=work)
    run_git("-c", "user.name=Bare", "-c", "user.email=b@example.com", "commit", "-q", "-m",
            "pins", cwd=work)  # fmt: skip
    run_git("push", "-q", str(side.remote.bare), "HEAD:refs/heads/main", cwd=work)
    return time.perf_counter() - start


def plans_for(side: Side, changed: list[str]) -> tuple[list[PoolPlan], dict[str, str]]:
    """What the changed pools' pass pushes on `side`, and their pin files (untimed)."""
    files = files_from_dir(side.remote.work)
    repo = load.load_repository({p: d for p, d in files.items() if load.is_config_path(p)})
    with side.registry.client() as client:
        outcomes = planning.Planner(client).plan_pools(repo, changed)
    plans = [o for o in outcomes.values() if isinstance(o, PoolPlan)]
    assert len(plans) == len(changed)
    head = side.remote.head()
    pin_files = {}
    for plan in plans:
        digest = plan.predicted_digest or ""
        result = controller.building.BuildResult(
            plan.pool, reference.with_digest(plan.target, digest), digest, "native"
        )
        pin = controller.make_pin(plan, result, head)
        pin_files[pins.pin_path(plan.pool)] = pins.render_pin(pin)
    return plans, pin_files


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pools", type=int, default=300)
    parser.add_argument("--changed", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=parallel.DEFAULT_CONNECTIONS)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    sides: list[Side] = []
    try:
        seed = root / "seed"
        write_repo(seed, args.pools, args.changed, "@REGISTRY@", "@REGISTRY@/base/bootc:latest")
        image = reg_fixture.build_bootc_image()
        a = Side(root / "a", seed, image, args.connections)
        sides.append(a)
        b = Side(root / "b", seed, image, args.connections)
        sides.append(b)
        start = time.perf_counter()
        first = a.reconciler.reconcile_once()
        seed_s = time.perf_counter() - start
        assert len(first.changed) == args.pools, first.changed
        assert len(b.reconciler.reconcile_once().changed) == args.pools
        for side in sides:  # the admin clones see the pin commits
            run_git("pull", "-q", "--rebase", str(side.remote.bare), "main", cwd=side.remote.work)
        bare = BareClient(b.host, args.connections)
        group = [pool_name(i) for i in range(args.changed)]
        rows: dict[str, list[tuple[float, float]]] = {"many": [], "one": []}
        requests = {"reconciler": 0, "bare": 0}
        for r in range(args.rounds):
            # 100 of 300: the group's MachineConfig
            text = GROUP.format(group="g0", text=f"round{r}")
            for side in sides:
                side.change("machineconfigs/g0.yaml", text)
            plans, pin_files = plans_for(b, group)
            before = a.reconciler.registry.requests
            took = timed(a.reconciler.reconcile_once)
            requests["reconciler"] += a.reconciler.registry.requests - before
            before = bare.requests
            bare_s = bare_pass(b, bare, plans, pin_files)
            requests["bare"] += bare.requests - before
            assert len(a.reconciler.status.pools) == args.pools
            rows["many"].append((took, bare_s))
            # 1 of 300: one pool's own MachineConfig; against an idle pass
            pool = pool_name(args.pools - 1 - r)
            a.change(f"machineconfigs/{pool}.yaml", OWN.format(pool=pool, text=f"round{r}"))
            one = timed(a.reconciler.reconcile_once)
            idle = timed(a.reconciler.reconcile_once)
            rows["one"].append((one, idle))
        many = [t for t, _ in rows["many"]]
        bare_t = [t for _, t in rows["many"]]
        one_t = [t for t, _ in rows["one"]]
        idle_t = [t for _, t in rows["one"]]
    finally:
        for side in sides:
            side.reconciler.workers.close()
            side.reconciler.registry.close()
            side.registry.stop()
        shutil.rmtree(root, ignore_errors=True)
    m, bm = statistics.median(many), statistics.median(bare_t)
    o, i = statistics.median(one_t), statistics.median(idle_t)
    print(f"{args.pools} pools, native builds, {args.connections} connections; "
          f"median of {args.rounds} rounds; first pass (all pools) {seed_s:.2f} s")  # fmt: skip
    print("| scenario | reconciler pass | baseline | baseline time | ratio / difference | target |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.changed} of {args.pools} changed | {m:.2f} s | bare client "
        f"({requests['bare'] // args.rounds} requests) + git commit + push | {bm:.2f} s | "
        f"{m / bm:.2f}× ({requests['reconciler'] // args.rounds} requests) | ≤ 1.5× |"
    )
    print(
        f"| 1 of {args.pools} changed | {o:.3f} s | idle pass | {i:.3f} s | "
        f"+{o - i:.3f} s | ≤ +0.3 s |"
    )


if __name__ == "__main__":
    main()
