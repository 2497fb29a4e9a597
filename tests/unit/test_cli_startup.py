"""Start-up: the group's --help lists every command from its summary without importing
it, and a command imports only what it needs (issue 13; figures in bench/startup.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from reconciler.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command_as_its_own_help_would() -> None:
    eager = click.Group(
        "cli", help=cli.help, params=cli.params, context_settings=cli.context_settings
    )
    for name, (module, attribute, _) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attribute)
        assert command.name == name
        eager.add_command(command)
    for width in (60, 80, 120):
        lazy = CliRunner().invoke(cli, ["--help"], terminal_width=width)
        want = CliRunner().invoke(eager, ["--help"], terminal_width=width)
        assert lazy.exit_code == 0
        assert lazy.output == want.output


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["valdiate"])
    assert result.exit_code == 64
    assert "No such command 'valdiate'" in result.output


def _imported(*argv: str) -> set[str]:
    code = (
        "import sys\n"
        "from reconciler.cli import main\n"
        f"sys.argv = ['reconciler', *{list(argv)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=60)  # fmt: skip
    return set(done.stderr.splitlines()[-1].split())


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        (["--help"], {"pydantic", "httpx", "kubernetes", "reconciler.core.model", "yaml"}),
        (["validate", "--repo", "examples"], {"httpx", "kubernetes", "reconciler.loop",
                                              "reconciler.agent", "reconciler.adapters.registry"}),
    ],
)  # fmt: skip
def test_a_command_imports_only_what_it_needs(argv: list[str], absent: set[str]) -> None:
    modules = _imported(*argv)
    assert "click" in modules
    assert not {m for m in modules for a in absent if m == a or m.startswith(f"{a}.")}, argv
