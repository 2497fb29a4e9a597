"""The README's first command stays true: the demo runs the main job end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.registry, pytest.mark.git, pytest.mark.buildah, pytest.mark.slow]


def test_demo_pins_every_pool_then_moves_only_what_a_change_reaches(tmp_path: Path) -> None:
    env = dict(os.environ, RECONCILER_DEMO_DIR=str(tmp_path / "demo"))
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    # the audit trail, oldest first: the native pools at once, infra when its buildah
    # build (in the background) is done; the worker change reaches infra too
    trail = [re.sub(r" (to \S+ )?\(config \w+\)$", "", line.split(": ", 1)[1])
             for line in out[out.index("git log (the audit trail)"):].splitlines()
             if line.startswith("  ") and ": " in line][::-1]  # fmt: skip
    assert trail == [
        "Fleet config from examples/",
        "pin 2 pools: master, worker",
        "pin infra",
        "worker: raise audit_backlog_limit",
        "pin worker",
        "pin infra",
    ], trail
    assert "nothing due: " in out  # the third `run --once`: nothing moved, nothing ran
    assert "Build: buildah" in out  # infra: realtime kernel + sysstat
    assert "Build: native" in out
    assert re.search(r"^master\s+True\s", out, re.MULTILINE), out[-3000:]  # the status table
