"""Installed as a pull-request check installs it: the wheel, without extras, in a fresh
virtualenv, then the commands examples/ci/ runs.

Real: `pip wheel` (setuptools from the index, as any build), `python -m venv`, `pip
install` of the wheel with constraints.txt (runtime dependencies from the package index,
which CI reaches), the installed `reconciler` script run as a program from outside the
source tree, `git`, and the CNCF registry for `plan --base`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.registry import BaseImage, RunningRegistry
from tests.helpers import EXAMPLES, ROOT, example_repo

pytestmark = [pytest.mark.slow, pytest.mark.registry, pytest.mark.git]


def run(*argv: str | Path, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, check=False,
        timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "LC_ALL": "C.UTF-8"},
    )  # fmt: skip
    if ok:
        assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh venv holding the wheel and its runtime dependencies."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy: the build writes build/ and *.egg-info beside it
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", "tests", "bench", ".*_cache",
    ))  # fmt: skip
    wheels = root / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, source, cwd=root)
    (wheel,) = wheels.glob("bootc_reconciler-*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=root)
    run(venv / "bin" / "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheel, cwd=root)
    return venv / "bin"


def test_the_wheel_installs_the_command_without_extras(installed: Path, tmp_path: Path) -> None:
    version = run(installed / "reconciler", "--version", cwd=tmp_path)
    assert version.stdout.strip() == "reconciler 0.1.0"
    python = installed / "python"
    where = run(python, "-c", "import reconciler; print(reconciler.__file__)", cwd=tmp_path)
    assert "/site-packages/reconciler/" in where.stdout  # the wheel, not the source tree
    # neither the Kubernetes client nor GitPython comes with a plain install
    for module in ("kubernetes", "git"):
        absent = run(python, "-c", f"import {module}", cwd=tmp_path, ok=False)
        assert absent.returncode != 0, module
    licence = run(python, "-c", "from importlib.metadata import metadata as m; "
                  "print(m('bootc-reconciler')['License-Expression'])", cwd=tmp_path)  # fmt: skip
    assert licence.stdout.strip() == "Apache-2.0"


def test_the_ci_examples_commands_run_from_the_wheel(
    installed: Path, registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> None:
    seed = example_repo(tmp_path / "seed", registry.host, base_image.ref)
    shutil.rmtree(seed / "ci")
    repo = tmp_path / "repo"
    shutil.copytree(seed, repo)
    git = ["git", "-c", "user.name=Admin", "-c", "user.email=admin@example.test"]
    run(*git, "init", "-q", "-b", "main", cwd=repo)
    run(*git, "add", "-A", cwd=repo)
    run(*git, "commit", "-q", "-m", "fleet", cwd=repo)
    kargs = repo / "machineconfigs" / "05-worker-kernelargs.yaml"
    kargs.write_text(kargs.read_text().replace("kernelArguments:", "kernelArguments:\n    - quiet"))
    run(*git, "commit", "-q", "-am", "worker: quiet", cwd=repo)

    reconciler = installed / "reconciler"
    valid = run(reconciler, "validate", "--repo", ".", cwd=repo)
    assert valid.stdout.startswith("ok: ")
    rendered = run(reconciler, "render", "--repo", str(EXAMPLES), "--pool", "worker", cwd=tmp_path)
    assert "name: rendered-worker-" in rendered.stdout
    # what examples/ci/ runs on a pull request, word for word but the registry
    plan = run(reconciler, "plan", "--repo", ".", "--base", "HEAD^1", "--head", "HEAD",
               "--output", "markdown", "--detailed-exitcode",
               "--insecure-registry", registry.host, cwd=repo, ok=False)  # fmt: skip
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "worker" in plan.stdout
    assert "quiet" in plan.stdout


def test_kubernetes_options_name_the_extra_when_it_is_not_installed(
    installed: Path, tmp_path: Path
) -> None:
    agent = run(installed / "reconciler", "agent", "--once", "--repo", str(EXAMPLES),
                "--pool", "worker", "--state-dir", str(tmp_path / "state"),
                "--coordination", "kubernetes", cwd=tmp_path, ok=False)  # fmt: skip
    assert agent.returncode == 1
    assert "pip install 'bootc-reconciler[kubernetes]'" in agent.stderr
    assert "Traceback" not in agent.stderr
