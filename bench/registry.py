"""Registry client benchmark against real docker-registry processes on 127.0.0.1.

Measures what the build-and-push path pays: resolving a base image, uploading a layer
monolithically and in chunks, mounting a base image's blobs into a pool repository (no
bytes should travel), and streaming a large blob between two registries (memory must
stay at the stream's buffer size, not the blob's size).

    .venv/bin/python bench/registry.py [--mib 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.adapters.registry import OCI_MANIFEST, RegistryClient
from tests.fixtures.registry import build_bootc_image, start_registry


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64, help="size of the large blob")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        pa, host_a, _ = start_registry("bench-a", Path(tmp) / "a")
        pb, host_b, _ = start_registry("bench-b", Path(tmp) / "b")
        try:
            run(host_a, host_b, args.mib, args.repeat)
        finally:
            for p in (pa, pb):
                p.terminate()
                p.wait(5)


def run(host_a: str, host_b: str, mib: int, repeat: int) -> None:
    results: dict[str, object] = {}
    client = RegistryClient(insecure={host_a, host_b})
    base = build_bootc_image()
    base_repo = f"{host_a}/base/bootc"
    client.ensure_blobs(
        base_repo, [{"digest": d, "size": len(b)} for d, b in base.blobs.items()], local=base.blobs
    )
    client.put_manifest(base_repo, "latest", base.manifest, OCI_MANIFEST)

    n = 50
    t0 = time.perf_counter()
    for _ in range(n):
        client.resolve(f"{base_repo}:latest")
    results["resolve_ms"] = round((time.perf_counter() - t0) / n * 1000, 2)

    blob = os.urandom(mib * 1024 * 1024)
    counter = iter(range(10**6))

    def push(chunk: int | None) -> None:
        # A fresh repository each run keeps runs independent.
        client.push_blob(f"{host_a}/bench/up{next(counter)}", blob, chunk_size=chunk)

    for label, chunk in (("monolithic", None), ("chunked_8mib", 8 * 1024 * 1024)):
        secs = _best(lambda chunk=chunk: push(chunk), repeat)
        results[f"upload_{label}_mib_s"] = round(mib / secs, 1)

    descs = [{"digest": d, "size": len(b)} for d, b in base.blobs.items()]
    before_bytes, before_req = client.bytes_uploaded, client.requests
    pools = 20
    t0 = time.perf_counter()
    for i in range(pools):
        client.ensure_blobs(f"{host_a}/pools/p{i}", descs, base_repo)
    results["mount_base_per_pool_ms"] = round((time.perf_counter() - t0) / pools * 1000, 2)
    results["mount_bytes_uploaded"] = client.bytes_uploaded - before_bytes
    results["mount_requests_per_pool"] = (client.requests - before_req) / pools

    big_repo = f"{host_a}/bench/big"
    digest = client.push_blob(big_repo, blob)
    tracemalloc.start()
    t0 = time.perf_counter()
    sent = client.ensure_blobs(
        f"{host_b}/copied/big", [{"digest": digest, "size": mib * 1024 * 1024}], big_repo
    )
    secs = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    results["copy_across_registries_mib_s"] = round(mib / secs, 1)
    results["copy_bytes"] = sent
    results["copy_peak_python_mib"] = round(peak / 1024 / 1024, 1)
    # The registry verified the digest when the upload was committed.
    results["copy_present"] = client.blob_exists(f"{host_b}/copied/big", digest)
    client.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
