"""Exit codes of every command, as docs/cli.md promises them: 0 fine, 1 an error, 2 only
"some pool changes" under `plan --detailed-exitcode`, 3 a bug, 64 a usage error.

Real: the click commands in-process (CliRunner, the same error boundary as `main()`),
`git` for the repositories. The one plan that resolves base images talks to the real
registry (tests/fixtures/registry.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from reconciler.cli import cli
from reconciler.cli import output as cli_output
from reconciler.cli import repository as cli_module
from tests.fixtures.registry import BaseImage, RunningRegistry
from tests.helpers import EXAMPLES, example_repo

COMMANDS = [
    "agent", "build", "containerfile", "history", "plan", "render", "rollback", "run",
    "schema", "status", "validate",
]  # fmt: skip


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Admin", "-c", "user.email=admin@example.test", *args],
        cwd=cwd, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip


def git_repo(path: Path, files_from: Path | None = None) -> Path:
    """A Git repository with one commit: `files_from` copied in, or only a README."""
    if files_from is not None:
        shutil.copytree(files_from, path, ignore=shutil.ignore_patterns("ci"))
    else:
        path.mkdir()
        (path / "README.md").write_text("not a config repository\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path


def test_the_matrix_covers_every_command() -> None:
    assert sorted(cli.commands) == COMMANDS


# --- 64: usage errors, never 2 (which reads as "changes" in CI) ---------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_a_mistyped_option_is_a_usage_error(command: str) -> None:
    result = invoke(command, "--no-such-option")
    assert result.exit_code == cli_output.EXIT_USAGE == 64, result.output
    assert "No such option '--no-such-option'" in result.output


@pytest.mark.parametrize(
    "argv",
    [
        ["--no-such-option"],  # the group's own options
        ["no-such-command"],
        ["plan", "--repo", str(EXAMPLES), "--detailed-exitcode"],  # raised in the command
        ["plan", "--repo", str(EXAMPLES), "-o", "yaml"],  # a bad choice
        ["render", "--repo", str(EXAMPLES)],  # a missing option
        ["containerfile", "--repo", str(EXAMPLES), "--pool", "worker", "--base-digest", "x"],
        ["run", "--repo", str(EXAMPLES), "--webhook-listen", "127.0.0.1:1"],
        ["run", "--repo", str(EXAMPLES), "-o", "json"],  # json needs --once
        ["agent", "--repo", str(EXAMPLES)],  # neither --pool nor --node
        ["agent", "--repo", str(EXAMPLES), "--pool", "worker", "-o", "json"],
        ["agent", "--repo", str(EXAMPLES), "--pool", "w", "--coordination", "fleetlock"],
        ["run", "--repo", str(EXAMPLES), "--once", "--metrics-addr", ":8081"],
        ["run", "--repo", str(EXAMPLES), "--once", "--leader-elect"],
        ["run", "--repo", str(EXAMPLES), "--metrics-addr", "8081"],  # not HOST:PORT
        ["agent", "--repo", str(EXAMPLES), "--pool", "w", "--once", "--metrics-addr", ":1"],
        ["agent", "--repo", str(EXAMPLES), "--pool", "w", "--metrics-addr", "host:port"],
    ],
    ids=lambda argv: " ".join(argv[:1] + [a for a in argv[1:] if a.startswith("-")]),
)
def test_usage_errors_exit_64_wherever_they_are_found(argv: list[str], tmp_path: Path) -> None:
    result = invoke(*argv, *(["--state-dir", str(tmp_path)] if argv[0] == "agent" else []))
    assert result.exit_code == 64, result.output
    assert "Error:" in result.output


def test_a_password_without_a_user_name_is_a_usage_error(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("secret\n")
    result = invoke("status", "--repo", str(tmp_path), "--git-password-file", str(password))
    assert result.exit_code == 64
    assert "--git-password-file needs --git-username" in result.output
    assert "secret" not in result.output


# --- 1: a bad or empty repository ---------------------------------------------------------


WORK_TREE_COMMANDS = [
    ["validate"],
    ["render", "--pool", "worker"],
    ["containerfile", "--pool", "worker"],
    ["plan"],
    ["build"],
]


@pytest.mark.parametrize("argv", WORK_TREE_COMMANDS, ids=lambda a: a[0])
def test_a_missing_directory_is_an_error(argv: list[str], tmp_path: Path) -> None:
    result = invoke(*argv, "--repo", str(tmp_path / "nowhere"))
    assert result.exit_code == 1, result.output
    assert "nowhere is not a directory" in result.output


@pytest.mark.parametrize("argv", WORK_TREE_COMMANDS, ids=lambda a: a[0])
def test_a_directory_without_configuration_is_an_error(argv: list[str], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("wrong directory\n")
    result = invoke(*argv, "--repo", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert "no MachineConfig, MachineConfigPool or MachineOSConfig found" in result.output


@pytest.mark.parametrize(
    "argv",
    [
        ["history"],
        ["rollback", "--pool", "worker", "--to", "HEAD"],
        ["plan", "--base", "HEAD"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_git_commands_on_a_directory_that_is_no_clone_fail(argv: list[str], tmp_path: Path) -> None:
    result = invoke(*argv, "--repo", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert "is not a Git repository" in result.output


@pytest.mark.parametrize("command", ["run", "status"])
def test_a_remote_that_does_not_exist_is_an_error(command: str, tmp_path: Path) -> None:
    args = ["--once"] if command == "run" else []
    result = invoke(command, *args, "--repo", str(tmp_path / "nowhere"),
                    "--work-dir", str(tmp_path / "work"))  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "does not appear to be a git repository" in result.output


def test_plan_and_run_on_a_repository_without_pools_are_errors(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "empty")
    planned = invoke("plan", "--repo", str(repo), "--base", "HEAD", "--detailed-exitcode")
    assert planned.exit_code == 1, planned.output
    assert "no MachineConfigPool at HEAD" in planned.output
    ran = invoke("run", "--once", "--repo", str(repo), "--work-dir", str(tmp_path / "work"))
    assert ran.exit_code == 1, ran.output
    assert "nothing to reconcile" in ran.output


def test_an_agent_whose_pool_does_not_exist_says_so(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo", EXAMPLES)
    result = invoke("agent", "--once", "--repo", str(repo), "--pool", "wrker",
                    "--state-dir", str(tmp_path / "state"), "--bootc", "false")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "pool 'wrker' does not exist on branch 'main' (pools: infra, master, worker)" in (
        result.output
    )


def test_rollback_of_a_pool_without_pins_is_an_error(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo", EXAMPLES)
    result = invoke("rollback", "--repo", str(repo), "--pool", "worker", "--to", "HEAD")
    assert result.exit_code == 1, result.output
    assert "has no pins" in result.output


# --- 0, 1 and 2 where the repository is fine, broken, changed ------------------------------


def test_validate_exits_0_when_fine_and_1_on_a_problem(tmp_path: Path) -> None:
    assert invoke("validate", "--repo", str(EXAMPLES)).exit_code == 0
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo)
    (repo / "machineconfigs" / "50-chrony.yaml").write_text("kind: MachineConfig\nspec: [\n")
    result = invoke("validate", "--repo", str(repo))
    assert result.exit_code == 1
    assert "50-chrony.yaml" in result.output


def test_plan_without_changes_exits_0(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo", EXAMPLES)
    result = invoke("plan", "--repo", str(repo), "--base", "HEAD", "--detailed-exitcode")
    assert result.exit_code == 0, result.output
    assert "no pool changes" in result.output


@pytest.mark.registry
def test_plan_with_changes_exits_2_only_with_detailed_exitcode(
    registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> None:
    seed = example_repo(tmp_path / "seed", registry.host, base_image.ref)
    shutil.rmtree(seed / "ci")
    repo = git_repo(tmp_path / "repo", seed)
    kargs = repo / "machineconfigs" / "05-worker-kernelargs.yaml"
    kargs.write_text(kargs.read_text().replace("kernelArguments:", "kernelArguments:\n    - quiet"))
    git(repo, "commit", "-q", "-am", "worker: quiet")
    args = ["plan", "--repo", str(repo), "--base", "HEAD^", "--insecure-registry", registry.host]
    detailed = invoke(*args, "--detailed-exitcode")
    assert detailed.exit_code == cli_output.EXIT_CHANGES == 2, detailed.output
    assert "worker" in detailed.output
    assert invoke(*args).exit_code == 0


# --- 3: a bug ------------------------------------------------------------------------------


def test_an_unexpected_exception_exits_3_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("surprise")

    monkeypatch.setattr(cli_module, "load_checked", boom)
    result = invoke("validate", "--repo", str(EXAMPLES))
    assert result.exit_code == cli_output.EXIT_INTERNAL == 3
    assert "internal error while running validate: RuntimeError: surprise" in result.output
    assert "Traceback" not in result.output
