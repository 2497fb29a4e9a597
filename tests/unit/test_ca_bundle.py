"""`ReconcilerConfig.spec.caBundle`: where a CA bundle comes from, and that the inputs
digest, the image plan, the generated Containerfile and `reconciler containerfile`
agree on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reconciler.adapters import directory
from reconciler.cli import cli
from reconciler.core import identity, load, merge
from reconciler.core.image import containerfile, layout

ROOT = Path(__file__).resolve().parents[2]
BASE = "sha256:" + "b" * 64
CERT = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIEsecretKEYmaterial\n-----END PRIVATE KEY-----\n"


def repo_with(tmp_path: Path, ca_bundle: str | None) -> Path:
    dest = tmp_path / "repo"
    shutil.copytree(ROOT / "examples", dest)
    if ca_bundle is not None:
        conf = dest / "reconciler.yaml"
        doc = yaml.safe_load(conf.read_text())
        doc["spec"]["caBundle"] = ca_bundle
        conf.write_text(yaml.safe_dump(doc))
    return dest


def plan_and_digest(repo_dir: Path, pool: str) -> tuple[layout.ImagePlan, str]:
    repo = load.load_repository(directory.read_config_files(repo_dir))
    assert not repo.problems, repo.problems
    mosc = repo.os_configs[pool].obj
    rendered = merge.render_pool(repo, pool)
    digest = identity.inputs_digest(BASE, rendered, mosc, repo.settings, architecture="amd64")
    plan = layout.plan_image(rendered, mosc, repo.settings, "amd64", inputs_digest=digest)
    return plan, digest


def test_a_ca_bundle_is_an_input_and_makes_every_pool_a_containerfile_build(
    tmp_path: Path,
) -> None:
    plain, plain_digest = plan_and_digest(repo_with(tmp_path / "a", None), "worker")
    with_ca, ca_digest = plan_and_digest(repo_with(tmp_path / "b", CERT), "worker")

    assert not plain.needs_containerfile  # worker is config-only
    assert with_ca.needs_containerfile
    assert "ReconcilerConfig caBundle (update-ca-trust)" in with_ca.reasons
    assert ca_digest != plain_digest  # a CA change rebuilds every pool
    cf = containerfile.generate(with_ca, base_digest=BASE)
    assert f"COPY ca-bundle.crt {containerfile.CA_ANCHOR}" in cf.text
    assert "RUN update-ca-trust" in cf.text
    assert cf.context["ca-bundle.crt"] == CERT.encode()


def test_containerfile_command_uses_the_repository_bundle(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, CERT)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["containerfile", "--repo", str(repo), "--pool", "infra",
                                      "--base-digest", BASE, "--output-dir", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "RUN update-ca-trust" in result.stdout
    assert (out / "ca-bundle.crt").read_text() == CERT
    _, digest = plan_and_digest(repo, "infra")
    assert f'"gitops.bootc.dev/inputs-digest"="{digest}"' in result.stdout


@pytest.mark.parametrize(
    ("bundle", "problem"),
    [
        (KEY, "holds a private key"),
        (CERT + KEY, "holds a private key"),
        ("not a certificate", "is not PEM certificates"),
    ],
)
def test_a_bad_bundle_is_refused_without_echoing_it(
    tmp_path: Path, bundle: str, problem: str
) -> None:
    repo_dir = repo_with(tmp_path, bundle)
    repo = load.load_repository(directory.read_config_files(repo_dir))
    [found] = [p for p in repo.problems if p.field == "spec.caBundle"]
    text = str(found)
    assert text.startswith("reconciler.yaml:")
    assert "ReconcilerConfig fleet: spec.caBundle: " + problem in text
    assert "MIIE" not in text
    assert "not a certificate" not in text
    validate = CliRunner().invoke(cli, ["validate", "--repo", str(repo_dir)])
    assert validate.exit_code == 1
    assert problem in validate.stderr
    assert "MIIE" not in validate.output
