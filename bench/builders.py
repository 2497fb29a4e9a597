"""Builder benchmark: the native builder vs `buildah bud` for config-only changes.

Targets (issue 3): for a config-only change, the native builder is at least 20× faster
than `buildah bud` of the equivalent Containerfile, for the same rendered config and
the same registry; and the bytes it uploads per change are at most 1.05× the config
layer's compressed size (base layers are never re-uploaded; only our layer, the image
config and the manifest travel).

Side by side in one run, against a real `docker-registry` on 127.0.0.1: the example
repository's `worker` pool (config-only), as it is and with a 256 KiB file added, gets
`--changes` edits of its chrony file. Each edit is planned once (load, render, resolve
the base: shared by both paths, shown apart); then the native builder makes its layer
and image bytes and pushes them (HEAD, base blob check, layer, config, manifest), and
the buildah builder writes the Containerfile and context, builds and pushes (`build.sh`:
bud with chroot isolation and `--timestamp 0`, push) into a second repository.
Buildah's base pull happens in an untimed warm-up, so its figures are steady-state
(base cached). The base is the small busybox image of `tests/fixtures/buildbase.py`
(its `bootc` shim answers `bootc container lint`): real bases, hundreds of MB, only
make buildah slower. Uploads are counted by the registry client (request bodies).

The bytes target holds once the layer outweighs the image config and manifest
(~1.5 KB together, fixed): a one-file change uploads about 2× its 1.5 KB layer.

    .venv/bin/python bench/builders.py [--changes 10] [--storage-driver vfs|overlay]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.adapters import directory
from reconciler.adapters.builders.buildah import BuildahBuilder
from reconciler.adapters.registry import RegistryClient
from reconciler.core import load, poolplan, reference
from reconciler.core.image import layer, oci
from reconciler.loop import building, planning
from tests.fixtures.buildbase import PackageRepo, build_image, push_base
from tests.fixtures.registry import start_registry
from tests.helpers import example_repo

CHRONY = "machineconfigs/50-chrony.yaml"


def edit_chrony(repo: Path, n: int) -> None:
    """A config-only change: the worker's chrony.conf gets one more line."""
    path = repo / CHRONY
    text = path.read_text()
    docs = text.split("\n---\n")
    worker = next(i for i, d in enumerate(docs) if "50-worker-chrony" in d)
    match = re.search(r"source: data:;base64,(\S+)", docs[worker])
    assert match is not None
    content = base64.b64decode(match.group(1)).decode()
    content = re.sub(r"# bench change \d+\n", "", content) + f"# bench change {n}\n"
    encoded = base64.b64encode(content.encode()).decode()
    docs[worker] = docs[worker].replace(match.group(1), encoded)
    path.write_text("\n---\n".join(docs))


def plan_worker(client: RegistryClient, repo: Path) -> poolplan.PoolPlan:
    loaded = load.load_repository(directory.read_config_files(repo))
    plan = planning.Planner(client).plan_pools(loaded, ["worker"])["worker"]
    if not isinstance(plan, poolplan.PoolPlan) or plan.builder != "native":
        raise SystemExit(f"worker is not a native plan: {plan}")
    return plan


LARGE_MC = """apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 90-worker-bench-large
  labels:
    machineconfiguration.openshift.io/role: worker
spec:
  config:
    ignition:
      version: 3.2.0
    storage:
      files:
        - path: /etc/bench/large.bin
          mode: 420
          contents:
            source: data:;base64,{data}
"""


@dataclasses.dataclass
class Figures:
    shared_s: list[float] = dataclasses.field(default_factory=list)
    native_s: list[float] = dataclasses.field(default_factory=list)
    buildah_s: list[float] = dataclasses.field(default_factory=list)
    uploaded: list[int] = dataclasses.field(default_factory=list)
    layer: list[int] = dataclasses.field(default_factory=list)
    config: list[int] = dataclasses.field(default_factory=list)
    manifest: list[int] = dataclasses.field(default_factory=list)
    requests: list[int] = dataclasses.field(default_factory=list)


def measure(
    client: RegistryClient, buildah: BuildahBuilder, repo: Path, host: str, changes: int
) -> Figures:
    def for_buildah(plan: poolplan.PoolPlan) -> poolplan.PoolPlan:
        # The same plan, pushed by buildah to a repository of its own.
        tag = plan.target.tag or "latest"
        target = reference.with_tag(reference.parse(f"{host}/bench/worker-buildah"), tag)
        return dataclasses.replace(plan, target=target)

    # Warm-up (untimed): buildah pulls the base into its storage once.
    edit_chrony(repo, 0)
    buildah.build(for_buildah(plan_worker(client, repo)))
    out = Figures()
    for n in range(1, changes + 1):
        edit_chrony(repo, n)
        t0 = time.perf_counter()
        plan = plan_worker(client, repo)
        plan_s = time.perf_counter() - t0
        assert plan.layer is not None
        assert plan.composed is not None
        # The native builder's own work before the push: the layer and the image bytes
        # (planning made them; made again here to time them alone).
        t0 = time.perf_counter()
        built = layer.build_layer(plan.image.entries)
        created_by = f"{poolplan.NATIVE_CREATED_BY} {plan.rendered.name}"
        oci.compose_image(plan.base.manifest, plan.base.config_bytes, built,
                          labels=plan.image.labels, created_by=created_by)  # fmt: skip
        layer_s = time.perf_counter() - t0
        out.shared_s.append(plan_s - layer_s)
        before, requests = client.bytes_uploaded, client.requests
        t0 = time.perf_counter()
        result = building.ensure_image(client, plan, {})
        out.native_s.append(layer_s + time.perf_counter() - t0)
        assert result.built_by == "native", result
        out.uploaded.append(client.bytes_uploaded - before)
        out.requests.append(client.requests - requests)
        out.layer.append(plan.layer.size)
        out.config.append(len(plan.composed.config_bytes))
        out.manifest.append(len(plan.composed.manifest_bytes))

        t0 = time.perf_counter()
        buildah.build(for_buildah(plan))  # Containerfile + context, bud, push
        out.buildah_s.append(time.perf_counter() - t0)
    return out


def run(host: str, work: Path, changes: int, storage_driver: str, large_kib: int) -> None:
    packages = PackageRepo(work / "packages")
    client = RegistryClient(insecure={host})
    results: dict[str, Figures] = {}
    try:
        base = push_base(client, f"{host}/base/dnf", build_image(packages.url), packages)
        for name, extra in (("example worker", 0), (f"worker + {large_kib} KiB file", large_kib)):
            repo = example_repo(work / f"repo-{extra}", host, base.ref, prefix=f"bench{extra}")
            if extra:
                blob = base64.b64encode(os.urandom(extra * 1024)).decode()
                (repo / "machineconfigs/90-bench-large.yaml").write_text(LARGE_MC.format(data=blob))
            buildah = BuildahBuilder(client, work / "buildah", storage_driver=storage_driver)
            results[name] = measure(client, buildah, repo, host, changes)
    finally:
        client.close()
        packages.stop()

    med = statistics.median
    print(
        f"Config-only change of the `worker` pool: {changes} changes per row, median "
        f"(min–max) seconds; buildah {storage_driver} storage, base cached.\n"
    )
    print(
        "| config | native: layer + push | buildah: Containerfile + bud + push "
        "| speed-up (target ≥ 20×) | planning, both paths | speed-up with planning |"
    )
    print("|---|---|---|---|---|---|")
    for name, f in results.items():
        n, b, p = med(f.native_s), med(f.buildah_s), med(f.shared_s)
        print(
            f"| {name} | {n:.3f} ({min(f.native_s):.3f}–{max(f.native_s):.3f}) "
            f"| {b:.2f} ({min(f.buildah_s):.2f}–{max(f.buildah_s):.2f}) | {b / n:.0f}× "
            f"| {p:.3f} | {(b + p) / (n + p):.0f}× |"
        )
    print()
    print(
        "| config | native uploads per change | = layer (gzip) + image config + manifest "
        "| uploaded / layer (target ≤ 1.05) | HTTP requests |"
    )
    print("|---|---|---|---|---|")
    for name, f in results.items():
        ratio = max(u / s for u, s in zip(f.uploaded, f.layer, strict=True))
        print(f"| {name} | {med(f.uploaded):.0f} B | {med(f.layer):.0f} + {med(f.config):.0f} "
              f"+ {med(f.manifest):.0f} B | {ratio:.3f} | {med(f.requests):.0f} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=10)
    ap.add_argument("--storage-driver", choices=["vfs", "overlay"], default="vfs")
    ap.add_argument("--large-kib", type=int, default=256, help="size of the large config file")
    args = ap.parse_args()
    if shutil.which("buildah") is None:
        raise SystemExit("buildah is not installed (scripts/setup installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "registry").mkdir()
        proc, host, _ = start_registry("bench-builders", work / "registry")
        try:
            run(host, work, args.changes, args.storage_driver, args.large_kib)
        finally:
            proc.terminate()
            proc.wait(5)


if __name__ == "__main__":
    main()
