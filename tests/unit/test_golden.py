"""Golden directories for merge and render: `golden/<case>/repo` is a config repository,
`golden/<case>/expected/<pool>.yaml` the rendered MachineConfig `reconciler render`
prints for each pool. Regenerate after a deliberate change with `UPDATE_GOLDEN=1` and
review the diff like code: these files are the MCO-compatibility contract."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.adapters import worktree
from reconciler.cli import dump
from reconciler.core import load, merge

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "repo").is_dir())


@pytest.mark.parametrize("case", CASES)
def test_render_matches_golden(case: str) -> None:
    repo = load.load_repository(worktree.read_config_files(GOLDEN / case / "repo"))
    assert repo.problems == []
    rendered, failed = merge.render_all(repo)
    assert failed == {}
    expected_dir = GOLDEN / case / "expected"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_dir.mkdir(exist_ok=True)
        for old in expected_dir.glob("*.yaml"):
            old.unlink()
        for pool, result in rendered.items():
            (expected_dir / f"{pool}.yaml").write_text(
                dump(result.to_machine_config(), "yaml") + "\n"
            )
    expected = {p.stem: p.read_text() for p in expected_dir.glob("*.yaml")}
    actual = {pool: dump(r.to_machine_config(), "yaml") + "\n" for pool, r in rendered.items()}
    assert actual == expected
