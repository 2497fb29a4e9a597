"""Without the `kubernetes` extra every command still runs, and the Kubernetes options say
which extra to install (the PR-check install leaves it out: it is 126 of 198 MiB).

The Kubernetes client is made unimportable here (`sys.modules["kubernetes"] = None`); the
fresh-venv install in tests/e2e/test_install.py checks the same without it installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler import extras
from reconciler.adapters import builders
from reconciler.adapters.registry import RegistryClient
from reconciler.cli import cli
from tests.helpers import EXAMPLES

INSTALL = "pip install 'bootc-reconciler[kubernetes]'"


@pytest.fixture
def no_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)


@pytest.mark.usefixtures("no_kubernetes")
@pytest.mark.parametrize(
    ("argv", "feature"),
    [
        (
            [
                "agent",
                "--once",
                "--repo",
                str(EXAMPLES),
                "--pool",
                "worker",
                "--coordination",
                "kubernetes",
            ],
            "--coordination kubernetes",
        ),
        (
            ["build", "--repo", str(EXAMPLES), "--containerfile-builder", "job"],
            "--containerfile-builder job",
        ),
        (
            ["run", "--once", "--repo", str(EXAMPLES), "--containerfile-builder", "job"],
            "--containerfile-builder job",
        ),
    ],
    ids=["agent", "build", "run"],
)
def test_kubernetes_options_name_the_extra(argv: list[str], feature: str, tmp_path: Path) -> None:
    extra = ["--state-dir", str(tmp_path)] if argv[0] == "agent" else []
    if argv[0] == "run":
        extra = ["--work-dir", str(tmp_path)]
    result = CliRunner().invoke(cli, [*argv, *extra])
    assert result.exit_code == 1, result.output
    assert f"error: {feature} needs the Python package 'kubernetes'" in result.output
    assert INSTALL in result.output


@pytest.mark.usefixtures("no_kubernetes")
def test_a_kubeconfig_without_the_client_names_the_extra(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    with RegistryClient() as client, pytest.raises(extras.MissingExtra, match=r"\[kubernetes\]"):
        builders.available(client, kubeconfig=kubeconfig)
    # in a pod without the client, Job builds are left out and buildah may still serve
    with RegistryClient() as client:
        assert "job" not in builders.available(client, in_cluster=True)


@pytest.mark.usefixtures("no_kubernetes")
def test_pull_request_commands_work_without_the_client() -> None:
    assert CliRunner().invoke(cli, ["validate", "--repo", str(EXAMPLES)]).exit_code == 0
    rendered = CliRunner().invoke(cli, ["render", "--repo", str(EXAMPLES), "--pool", "worker"])
    assert rendered.exit_code == 0, rendered.output


def test_importing_the_cli_does_not_import_the_client() -> None:
    probe = (
        "import sys; import reconciler.cli, reconciler.cli.agent, reconciler.loop.controller; "
        "print('kubernetes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)  # fmt: skip
    assert out.stdout.strip() == "False"
