"""Render benchmark: load + render every pool vs. PyYAML's C loader parsing the same files.

Target (issues 2 and 13): rendering every pool of a generated repository (2,000 configs
and 20 pools; 10,000 configs and 100 pools) takes at most 2× the time PyYAML's C loader
(`yaml.load_all(text, Loader=yaml.CSafeLoader)`) needs just to parse the same files.
Both run side by side in one process on the same in-memory bytes, one after the other in
each round (so a burst of load on this shared machine hits both), and the best time of
each over the rounds is kept (the least disturbed by the machine). The target is on
wall-clock time; CPU time (`time.process_time`) is printed beside it, as it moves less
when other work shares the machine.

`--memory` then traces one more run of each with `tracemalloc` (untimed): the peak
memory of load + render against the bytes of the files, which stays about constant from
one repository size to the next when memory is linear.

    .venv/bin/python bench/render.py [--configs 2000 --pools 20 --repeat 5] [--memory]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import generate
from reconciler.adapters import directory
from reconciler.core import load, verdict


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of `fn()`."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def peak_bytes(fn: Callable[[], None]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--pools", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory", action="store_true", help="also trace peak memory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), args.configs, args.pools)
        files = directory.read_config_files(tmp)
    texts = [data.decode() for data in files.values() if isinstance(data, bytes)]
    size = sum(len(t) for t in texts)

    def parse_only() -> None:
        for text in texts:
            list(yaml.load_all(text, Loader=yaml.CSafeLoader))

    def render() -> None:
        repo = load.load_repository(files)
        rendered, failed = verdict.render_all(repo)
        assert not repo.problems
        assert not failed
        assert len(rendered) == args.pools

    load_before = os.getloadavg()[0]
    parse_times, render_times = [], []
    for _ in range(args.repeat):
        parse_times.append(timed(parse_only))
        render_times.append(timed(render))
    parse_s, render_s = min(t[0] for t in parse_times), min(t[0] for t in render_times)
    parse_cpu, render_cpu = min(t[1] for t in parse_times), min(t[1] for t in render_times)
    print(
        f"repository: {args.configs} MachineConfigs, {args.pools} pools, "
        f"{len(files)} files, {size / 1e6:.1f} MB; best of {args.repeat}, load average "
        f"{load_before:.1f} → {os.getloadavg()[0]:.1f}"
    )
    print("| step | seconds | ratio | CPU seconds | CPU ratio |")
    print("|---|---|---|---|---|")
    print(f"| PyYAML CSafeLoader parse only | {parse_s:.3f} | 1.00 | {parse_cpu:.3f} | 1.00 |")
    print(
        f"| reconciler load + render all pools | {render_s:.3f} | {render_s / parse_s:.2f} "
        f"| {render_cpu:.3f} | {render_cpu / parse_cpu:.2f} |"
    )
    print(f"target: ratio <= 2.00 -> {'met' if render_s / parse_s <= 2 else 'NOT met'}")
    if args.memory:
        peak = peak_bytes(render)
        print(f"peak memory of load + render (tracemalloc): {peak / 1e6:.1f} MB, "
              f"{peak / size:.1f}× the files")  # fmt: skip


if __name__ == "__main__":
    main()
