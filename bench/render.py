"""Render benchmark: load + render every pool vs. PyYAML's C loader parsing the same files.

Target (issue 2): rendering every pool of a generated 2,000-config, 20-pool repository
takes at most 2× the time PyYAML's C loader needs just to parse the same files. Both run
side by side in one process on the same in-memory bytes; each is repeated and the best
time is kept (the least disturbed by the machine).

    .venv/bin/python bench/render.py [--configs 2000 --pools 20 --repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import generate
from reconciler.adapters import directory
from reconciler.core import load, verdict


def best_of(repeat: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--pools", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
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

    parse_s = best_of(args.repeat, parse_only)
    render_s = best_of(args.repeat, render)
    print(
        f"repository: {args.configs} MachineConfigs, {args.pools} pools, "
        f"{len(files)} files, {size / 1e6:.1f} MB"
    )
    print("| step | seconds | ratio |")
    print("|---|---|---|")
    print(f"| PyYAML CSafeLoader parse only | {parse_s:.3f} | 1.00 |")
    print(f"| reconciler load + render all pools | {render_s:.3f} | {render_s / parse_s:.2f} |")
    print(f"target: ratio <= 2.00 -> {'met' if render_s / parse_s <= 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
