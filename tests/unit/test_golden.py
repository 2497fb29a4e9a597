"""Golden directories for merge and render: `golden/<case>/repo` is a config repository,
`golden/<case>/expected/<pool>.yaml` the rendered MachineConfig `reconciler render`
prints for each pool. Regenerate after a deliberate change with `UPDATE_GOLDEN=1` and
review the diff like code: these files are the MCO-compatibility contract.

`expected/warnings.txt` lists the warnings loading gives (none if absent) and
`expected/problems.txt` the problems of a case that must be refused (none if absent),
one per line as `validate` prints them. A case transcribed from MCO's Go tests says
which in `repo/SOURCE.md`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.adapters import directory
from reconciler.cli.output import dump
from reconciler.core import load, verdict
from reconciler.errors import ConfigProblem

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "repo").is_dir())


@pytest.mark.parametrize("case", CASES)
def test_render_matches_golden(case: str) -> None:
    repo = load.load_repository(directory.read_config_files(GOLDEN / case / "repo"))
    rendered, failed = verdict.render_all(repo)
    expected_dir = GOLDEN / case / "expected"
    found = {
        "warnings.txt": _lines(repo.warnings),
        "problems.txt": _lines([*repo.problems, *(p for e in failed.values() for p in e.problems)]),
    }
    if os.environ.get("UPDATE_GOLDEN"):
        expected_dir.mkdir(exist_ok=True)
        for old in [*expected_dir.glob("*.yaml"), *expected_dir.glob("*.txt")]:
            old.unlink()
        for pool, result in rendered.items():
            (expected_dir / f"{pool}.yaml").write_text(
                dump(result.to_machine_config(), "yaml") + "\n"
            )
        for name, text in found.items():
            if text:
                (expected_dir / name).write_text(text)
    for name, text in found.items():
        path = expected_dir / name
        assert text == (path.read_text() if path.exists() else ""), f"{case}: {name}"
    expected = {p.stem: p.read_text() for p in expected_dir.glob("*.yaml")}
    actual = {pool: dump(r.to_machine_config(), "yaml") + "\n" for pool, r in rendered.items()}
    assert actual == expected


def _lines(problems: list[ConfigProblem]) -> str:
    return "".join(f"{p}\n" for p in dict.fromkeys(problems))
