"""The generated Containerfile and its context, for the example pools and by feature,
and `reconciler containerfile` as an admin runs it."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.adapters import directory
from reconciler.cli import cli
from reconciler.core import load, merge, model
from reconciler.core.image import containerfile, layer, layout
from reconciler.core.image.layout import ImagePlan

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DIGEST = "sha256:" + "d" * 64


def example_plan(pool: str, os_config: model.MachineOSConfig | None = None) -> ImagePlan:
    repo = load.load_repository(directory.read_config_files(EXAMPLES))
    loaded = repo.os_configs.get(pool)
    mosc = os_config or (loaded.obj if loaded else None)
    arch = layout.pool_architecture(mosc, repo.settings)
    return layout.plan_image(
        merge.render_pool(repo, pool), mosc, repo.settings, arch, inputs_digest=DIGEST
    )


def instructions(text: str) -> list[str]:
    """Instruction lines (no comments, no blank lines, continuations joined)."""
    return [
        line
        for line in text.replace(" \\\n    ", " ").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_infra_containerfile_layout() -> None:
    plan = example_plan("infra")
    cf = containerfile.generate(plan, base_digest=DIGEST)
    steps = instructions(cf.text)
    assert steps[0] == f"FROM quay.io/fedora/fedora-bootc@{DIGEST} AS configs"
    assert steps[1] == "RUN dnf -y install sysstat && dnf clean all"
    assert steps[2].startswith("RUN set -eu; if rpm -q kernel-rt-core")
    assert (
        "dnf -y install kernel-rt-core kernel-rt-modules kernel-rt-modules-extra kernel-rt-kvm"
        in steps[2]
    )
    assert steps[3] == "ADD config-layer.tar /"
    assert steps[4:6] == [
        f'LABEL "gitops.bootc.dev/inputs-digest"="{DIGEST}"',
        'LABEL "gitops.bootc.dev/pool"="infra"',
    ]
    assert steps[-1] == "RUN bootc container lint"
    assert len(steps) == 7


def test_context_tar_is_the_native_layer() -> None:
    plan = example_plan("infra")
    cf = containerfile.generate(plan)
    tar = cf.context[containerfile.LAYER_TAR]
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == layer.build_layer(plan.entries).diff_id
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        names = tf.getnames()
    assert "etc/systemd/system/node-exporter.service" in names
    assert "usr/lib/tmpfiles.d/10-gitops-bootc.conf" in names
    assert "usr/lib/bootc/kargs.d/50-infra.toml" in names


def test_offline_containerfile_uses_the_base_as_written_and_says_so() -> None:
    cf = containerfile.generate(example_plan("worker"))
    assert "FROM quay.io/fedora/fedora-bootc:42 AS configs" in cf.text
    assert "used as written (quay.io/fedora/fedora-bootc:42)" in cf.text


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("quay.io/fedora/fedora-bootc:42", "quay.io/fedora/fedora-bootc"),
        ("localhost:5000/base:latest", "localhost:5000/base"),
        ("localhost:5000/base", "localhost:5000/base"),
        ("registry.example/a/b:t@sha256:" + "e" * 64, "registry.example/a/b"),
        ("busybox", "docker.io/library/busybox"),
    ],
)
def test_from_is_by_digest(image: str, repository: str) -> None:
    assert containerfile.from_reference(image, DIGEST) == f"{repository}@{DIGEST}"


def test_ca_bundle_is_trusted_before_packages_are_installed() -> None:
    cf = containerfile.generate(example_plan("infra"), ca_bundle=b"-----BEGIN CERTIFICATE-----\n")
    steps = instructions(cf.text)
    assert steps[1:3] == [
        f"COPY ca-bundle.crt {containerfile.CA_ANCHOR}",
        "RUN update-ca-trust",
    ]
    assert cf.context["ca-bundle.crt"] == b"-----BEGIN CERTIFICATE-----\n"


def test_lint_only_when_the_base_has_bootc() -> None:
    plan = example_plan("worker")
    assert instructions(containerfile.generate(plan, base_labels={"containers.bootc": "1"}).text)[
        -1
    ] == ("RUN bootc container lint")
    assert "bootc container lint" not in containerfile.generate(plan, base_labels={}).text


def test_admin_content_comes_after_labels_and_before_lint() -> None:
    mosc = model.MachineOSConfig.model_validate(
        {
            "apiVersion": "machineconfiguration.openshift.io/v1",
            "kind": "MachineOSConfig",
            "metadata": {"name": "worker"},
            "spec": {
                "machineConfigPool": {"name": "worker"},
                "renderedImagePushSpec": "registry.example.com/fleet/worker:latest",
                "containerFile": [
                    {
                        "containerfileArch": "NoArch",
                        "content": "FROM configs AS final\nRUN dnf -y install tmux\n",
                    }
                ],
            },
        }
    )
    plan = example_plan("worker", mosc)
    assert plan.reasons == ("MachineOSConfig containerFile (NoArch)",)
    steps = instructions(containerfile.generate(plan).text)
    assert steps[-4].startswith("LABEL")
    assert steps[-3:] == [
        "FROM configs AS final",
        "RUN dnf -y install tmux",
        "RUN bootc container lint",
    ]


def test_config_steps_run_after_the_layer() -> None:
    repo_plan = example_plan("worker")
    extra = layout.RunStep("config", "chown -h root:chrony /etc/chrony.keys", "owner")
    plan = ImagePlan(**{**repo_plan.__dict__, "run_steps": (extra,), "reasons": ("owner",)})
    steps = instructions(containerfile.generate(plan).text)
    assert steps.index("ADD config-layer.tar /") < steps.index(
        "RUN chown -h root:chrony /etc/chrony.keys"
    )


def test_cli_prints_and_writes_the_containerfile(tmp_path: Path) -> None:
    out = tmp_path / "build"
    result = CliRunner().invoke(
        cli,
        ["containerfile", "--repo", str(EXAMPLES), "--pool", "infra", "--output-dir", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "FROM quay.io/fedora/fedora-bootc:42 AS configs" in result.output
    assert (out / "Containerfile").read_text() == result.output
    layer_tar = (out / "config-layer.tar").read_bytes()
    assert layer_tar == layer.write_tar(example_plan("infra").entries)


def test_cli_with_base_digest_adds_the_inputs_digest_label() -> None:
    result = CliRunner().invoke(
        cli,
        ["containerfile", "--repo", str(EXAMPLES), "--pool", "worker", "--base-digest", DIGEST],
    )
    assert result.exit_code == 0, result.output
    assert f"FROM quay.io/fedora/fedora-bootc@{DIGEST} AS configs" in result.output
    assert '"gitops.bootc.dev/inputs-digest"="sha256:' in result.output


def test_cli_refuses_a_bad_digest_and_an_unknown_pool() -> None:
    bad = CliRunner().invoke(
        cli, ["containerfile", "--repo", str(EXAMPLES), "--pool", "worker", "--base-digest", "42"]
    )
    assert bad.exit_code == 64  # a usage error (docs/cli.md)
    assert "--base-digest" in bad.output
    unknown = CliRunner().invoke(cli, ["containerfile", "--repo", str(EXAMPLES), "--pool", "gpu"])
    assert unknown.exit_code != 0
    assert "no pool 'gpu'" in unknown.output
