"""What scripts and shells rely on: `--version`, completion, one set of Git and registry
option names on every command (docs/cli.md). Real: the click commands and the installed
`reconciler` script (completion is driven through its environment protocol)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.cli.options import GitSource, git_options

SCRIPT = Path(sys.executable).parent / "reconciler"
GIT_ACCESS = {"--git-token-file", "--git-username", "--git-password-file", "--ssh-key",
              "--known-hosts"}  # fmt: skip
REGISTRY_ACCESS = {"--authfile", "--registry-ca", "--insecure-registry"}


def options_of(command: click.Command, *, hidden: bool = False) -> set[str]:
    return {
        name
        for p in command.params
        if isinstance(p, click.Option) and (hidden or not p.hidden)
        for name in p.opts
    }


def test_version_names_the_command_and_the_release() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == "reconciler 0.1.0\n"


def complete(words: str) -> list[str]:
    env = {**os.environ, "_RECONCILER_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - 1)}  # fmt: skip
    out = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, check=True,
                         timeout=60)  # fmt: skip
    return [line.split(",", 1)[1] for line in out.stdout.splitlines() if "," in line]


def test_shell_completion_as_documented() -> None:
    script = subprocess.run([str(SCRIPT)], env={**os.environ, "_RECONCILER_COMPLETE": "bash_source"},
                            capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    assert "complete -o nosort -F _reconciler_completion reconciler" in script.stdout
    assert complete("reconciler pl") == ["plan"]
    assert complete("reconciler plan --detailed") == ["--detailed-exitcode"]
    # the deprecated alias is accepted but never offered
    assert complete("reconciler agent --git-s") == []
    assert (
        "_RECONCILER_COMPLETE=bash_source"
        in (Path(__file__).parents[2] / "docs/cli.md").read_text()
    )


@pytest.mark.parametrize("command", ["run", "status", "agent"])
def test_git_access_has_one_set_of_names(command: str) -> None:
    assert options_of(cli.commands[command]) >= GIT_ACCESS
    assert "--git-ssh-key" not in options_of(cli.commands[command])  # hidden


@pytest.mark.parametrize("command", ["plan", "build", "run", "rollback"])
def test_registry_access_has_one_set_of_names(command: str) -> None:
    assert options_of(cli.commands[command]) >= REGISTRY_ACCESS


@pytest.mark.parametrize("command", sorted(set(cli.commands) - {"schema"}))
def test_every_command_takes_output_json(command: str) -> None:
    output = next(p for p in cli.commands[command].params if p.name == "output")
    assert isinstance(output.type, click.Choice)
    assert "json" in output.type.choices
    assert {"-o", "--output"} <= set(output.opts)


def test_the_agents_old_ssh_key_option_still_works_with_a_warning(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("not really a key\n")
    seen: list[GitSource] = []

    @click.command()
    @git_options
    def probe(source: GitSource) -> None:
        seen.append(source)

    result = CliRunner().invoke(probe, ["--repo", "r", "--git-ssh-key", str(key)])
    assert result.exit_code == 0, result.output
    assert "--git-ssh-key is deprecated; use --ssh-key" in result.output
    assert seen[0].auth is not None
    assert str(key) in str(seen[0].auth.ssh_key)
    both = CliRunner().invoke(probe, ["--repo", "r", "--git-ssh-key", str(key),
                                      "--ssh-key", str(key)])  # fmt: skip
    assert both.exit_code != 0
