"""Helpers shared by integration and end-to-end tests (not fixtures: plain functions)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def example_repo(dest: Path, registry_host: str, base_ref: str, *, prefix: str = "fleet") -> Path:
    """A copy of `examples/` whose images go to `registry_host/<prefix>/<pool>` and whose
    base image is `base_ref` (the way `scripts/demo` points the examples at a local
    registry). Returns `dest`."""
    shutil.copytree(EXAMPLES, dest)
    for path in dest.rglob("*.yaml"):
        text = path.read_text()
        new = re.sub(r"registry\.example\.com/fleet/", f"{registry_host}/{prefix}/", text)
        new = new.replace("quay.io/fedora/fedora-bootc:42", base_ref)
        if new != text:
            path.write_text(new)
    return dest
