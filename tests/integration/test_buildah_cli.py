"""`reconciler build` end to end on a pool with an extension and a kernel swap.

Real: the CLI (click's runner, in-process), the registry, buildah, skopeo/umoci, the
HTTP package source. Stand-ins: the `dnf`/`rpm`/`bootc` shims in the base image
(`tests/fixtures/buildbase.py`), as in `test_buildah.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import cli
from tests.fixtures import bootc_lint
from tests.fixtures.buildbase import RT_KERNEL_VERSION, BuildBase
from tests.fixtures.registry import RunningRegistry
from tests.helpers import example_repo

pytestmark = [pytest.mark.buildah, pytest.mark.registry]


def test_build_installs_the_extension_from_the_package_source(
    registry: RunningRegistry, dnf_base: BuildBase, tmp_path: Path
) -> None:
    repo = example_repo(tmp_path / "repo", registry.host, dnf_base.ref, prefix=tmp_path.name)
    args = ["build", "--repo", str(repo), "--pool", "infra",
            "--insecure-registry", registry.host, "--work-dir", str(tmp_path / "work")]  # fmt: skip

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 0, result.output
    image = result.stdout.strip()
    assert image.startswith(f"{registry.host}/{tmp_path.name}/infra@sha256:")
    assert "infra: buildah" in result.stderr
    rootfs = bootc_lint.check_image(registry, image, tmp_path / "out")
    assert (rootfs / "usr/share/doc/sysstat/README").read_text().startswith("sysstat from")
    assert (rootfs / f"usr/lib/modules/{RT_KERNEL_VERSION}/vmlinuz").is_file()

    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == image
    assert "existing image, nothing built" in again.stderr


def test_a_failed_build_exits_1_with_the_reason_and_the_log_tail(
    registry: RunningRegistry, dnf_base: BuildBase, tmp_path: Path
) -> None:
    repo = example_repo(tmp_path / "repo", registry.host, dnf_base.ref, prefix=tmp_path.name)
    conf = repo / "reconciler.yaml"
    settings = yaml.safe_load(conf.read_text())
    settings["spec"]["extensions"] = {"sysstat": ["sysstat-missing"]}
    conf.write_text(yaml.safe_dump(settings))

    result = CliRunner().invoke(cli, ["build", "--repo", str(repo), "--pool", "infra",
                                      "--insecure-registry", registry.host,
                                      "--work-dir", str(tmp_path / "work")])  # fmt: skip

    assert result.exit_code == 1
    assert result.stdout == ""  # no image to pin
    assert "error: pool infra: the build failed (a RUN step or the Containerfile)" in result.stderr
    assert "error: Error: Unable to find a match: sysstat-missing" in result.stderr
    logs = list((tmp_path / "work" / "build-logs").iterdir())
    assert len(logs) == 1
    assert f"build log: {logs[0]}" in result.stderr
