"""`examples/ci/`: the GitHub Actions workflow and the GitLab CI job are valid for their
forge, and every `reconciler` command they run is one our CLI accepts.

The forges' schemas are SchemaStore's, as vendored by `check-jsonschema` (run here as a
program, offline); each command line is parsed by our own click commands, so a renamed
option or a typo in an example fails here, not in an admin's pipeline.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from reconciler.cli import cli
from tests.helpers import EXAMPLES

CI = EXAMPLES / "ci"
GITHUB = CI / "github-actions.yml"
GITLAB = CI / "gitlab-ci.yml"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def schema_check(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", schema, str(path)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("path", "schema", "breakage"),
    [
        (GITHUB, "vendor.github-workflows", ("runs-on:", "runs_on:")),
        (GITLAB, "vendor.gitlab-ci", ("script:", "scripts:")),
    ],
)
def test_examples_match_the_forges_schemas(
    path: Path, schema: str, breakage: tuple[str, str], tmp_path: Path
) -> None:
    ok = schema_check(schema, path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the check is not vacuous: a misspelt key is refused
    broken = tmp_path / path.name
    broken.write_text(path.read_text().replace(*breakage))
    assert schema_check(schema, broken).returncode != 0


def shell_lines(doc: Any) -> list[str]:
    """Every shell script text in a workflow (`run:`) or a GitLab file (`script:` etc.)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "run" and isinstance(value, str):
                    found.append(value)
                elif key in ("script", "before_script", "after_script"):
                    found.extend(value if isinstance(value, list) else [value])
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return found


def reconciler_commands(path: Path) -> list[list[str]]:
    commands = []
    for script in shell_lines(yaml.safe_load(path.read_text())):
        # folded YAML joins lines; split shell lists and drop redirections
        for part in re.split(r"\|\||&&|;|\n", script):
            words = shlex.split(part.split(">", 1)[0], comments=True)
            if words and words[0] == "reconciler":
                commands.append(words[1:])
    return commands


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=lambda p: p.name)
def test_every_reconciler_command_in_the_examples_parses(path: Path) -> None:
    commands = [c for c in reconciler_commands(path) if c != ["--version"]]
    names = [c[0] for c in commands]
    # validate and plan on every pull request, build ahead of merge as an option
    assert names == ["validate", "plan", "build"]
    for argv in commands:
        command = cli.commands[argv[0]]
        with command.make_context(argv[0], argv[1:]) as ctx:
            params = ctx.params
        if argv[0] == "plan":
            assert params["output"] == "markdown"
            assert params["detailed_exitcode"]
            assert params["base"]
            assert params["head"] == "HEAD"
        if argv[0] == "build":
            assert params["ref"] == "HEAD"
    with pytest.raises(click.UsageError):  # the parsing is strict: a typo would fail
        cli.commands["plan"].make_context("plan", ["--bsae", "main"])


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=lambda p: p.name)
def test_the_examples_install_our_distribution_not_the_namesake(path: Path) -> None:
    """`reconciler` on PyPI is another project: the examples install bootc-reconciler from
    its repository at a tag, with that tag's constraints, and check the command is ours."""
    doc = yaml.safe_load(path.read_text())
    env = doc["env"] if path == GITHUB else doc["variables"]
    package, constraints = env["RECONCILER_PACKAGE"], env["RECONCILER_CONSTRAINTS"]
    name, _, url = package.partition(" @ ")
    assert name == "bootc-reconciler"
    assert re.fullmatch(r"git\+https://\S+@v\d+\.\d+\.\d+", url), url
    tag = url.rsplit("@", 1)[1]
    assert f"/{tag}/constraints.txt" in constraints
    installs = [s for s in shell_lines(doc) if "pip install" in s]
    assert installs
    for script in installs:
        assert '--constraint "$RECONCILER_CONSTRAINTS" "$RECONCILER_PACKAGE"' in script
    assert any("reconciler --version" in s for s in shell_lines(doc))
    assert "reconciler==" not in path.read_text()


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=lambda p: p.name)
def test_only_0_and_2_pass_the_plan_step(path: Path) -> None:
    """A usage error (64) or a bug (3) must fail the check, not only 1."""
    text = path.read_text()
    assert 'test "$code" -eq 0 || test "$code" -eq 2' in text
    assert "-ne 1" not in text


def test_the_markdown_is_posted_to_the_pull_or_merge_request() -> None:
    github = yaml.safe_load(GITHUB.read_text())
    steps = github["jobs"]["plan"]["steps"]
    assert steps[0]["with"]["fetch-depth"] >= 2  # the base commit must be in the clone
    comment = next(s for s in steps if "gh pr comment" in s.get("run", ""))
    assert "--body-file plan.md" in comment["run"]
    assert github["permissions"]["pull-requests"] == "write"
    gitlab = GITLAB.read_text()
    assert '--data-urlencode "body@plan.md"' in gitlab
    assert "/merge_requests/$CI_MERGE_REQUEST_IID/notes" in gitlab
    assert yaml.safe_load(gitlab)[".reconciler"]["variables"]["GIT_DEPTH"] == "0"
