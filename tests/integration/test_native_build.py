"""The native builder against the real distribution registry (no auth, Basic, Bearer,
TLS): the digest is known before the push and equals what the registry, skopeo and a
second checkout say; a second build uploads nothing; the image unpacks (umoci) to the
pool's files, links, kargs.d TOML and tmpfiles lines; bad registry input fails fast
and leaves nothing a pin could point to."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.core import poolplan
from reconciler.errors import RegistryError
from reconciler.loop import building, planning
from tests.fixtures import bootc_lint
from tests.fixtures.registry import BaseImage, RunningRegistry
from tests.helpers import example_repo, plan_pool

pytestmark = pytest.mark.registry


@pytest.fixture
def worker_repo(tmp_path: Path, registry: RunningRegistry, base_image: BaseImage) -> Path:
    return example_repo(tmp_path / "repo", registry.host, base_image.ref, prefix=tmp_path.name)


def test_predicted_digest_is_the_pushed_digest_and_a_rebuild_uploads_nothing(
    registry: RunningRegistry, worker_repo: Path
) -> None:
    client, plan = plan_pool(registry, worker_repo, "worker")
    assert isinstance(plan, poolplan.PoolPlan)
    assert plan.builder == "native"
    predicted = plan.predicted_digest
    assert predicted is not None
    assert building.find_existing(client, plan) is None

    first = building.ensure_image(client, plan, {})
    assert first.built_by == "native"
    assert first.digest == predicted
    assert registry.skopeo_digest(str(plan.target), *[]) == predicted
    uploaded_first = client.bytes_uploaded
    # only our layer, config and manifest travelled; base layers were mounted
    assert plan.layer is not None
    assert plan.composed is not None
    ours = plan.layer.size + len(plan.composed.config_bytes) + len(plan.composed.manifest_bytes)
    assert uploaded_first == ours

    again = building.ensure_image(client, plan, {})
    assert again.built_by == "reused"
    assert again.digest == predicted
    assert client.bytes_uploaded == uploaded_first


def test_the_image_unpacks_to_the_pools_files(
    registry: RunningRegistry, worker_repo: Path, tmp_path: Path
) -> None:
    client, plan = plan_pool(registry, worker_repo, "worker")
    result = building.ensure_image(client, plan, {})
    inspect = json.loads(
        registry.skopeo("inspect", *registry.skopeo_args(), f"docker://{result.image}")
    )
    labels = inspect["Labels"]
    assert labels["containers.bootc"] == "1"  # inherited from the base
    assert labels["gitops.bootc.dev/pool"] == "worker"
    assert "gitops.bootc.dev/rendered-config" not in labels  # it hashes the live keys too
    assert labels["gitops.bootc.dev/inputs-digest"] == plan.inputs_digest
    assert len(inspect["Layers"]) == 2

    # the whole passes bootc's lints that can run here (issue 12)
    rootfs = bootc_lint.check_image(registry, str(result.image), tmp_path / "out")
    chrony = rootfs / "etc/chrony.conf"
    assert "ntp1.example.internal" in chrony.read_text()
    assert chrony.stat().st_mode & 0o777 == 0o644
    unit = rootfs / "etc/systemd/system/node-exporter.service"
    assert "node_exporter" in unit.read_text()
    assert (rootfs / "etc/systemd/system/node-exporter.service.d/10-limits.conf").exists()
    wants = rootfs / "etc/systemd/system/multi-user.target.wants/node-exporter.service"
    assert wants.is_symlink()
    assert (rootfs / "etc/systemd/system/rpcbind.socket").readlink() == Path("/dev/null")
    timer = rootfs / "etc/systemd/system/bootc-fetch-apply-updates.timer"
    assert timer.readlink() == Path("/dev/null")
    kargs = tomllib.loads((rootfs / "usr/lib/bootc/kargs.d/50-worker.toml").read_text())
    assert kargs["kargs"] == [
        "audit=1",
        "audit_backlog_limit=8192",
        "systemd.unified_cgroup_hierarchy=1",
    ]
    tmpfiles = (rootfs / "usr/lib/tmpfiles.d").glob("*.conf")
    lines = "\n".join(p.read_text() for p in tmpfiles)
    assert "/var/lib/node-exporter/textfile/role.prom" in lines
    # core and its ~/.ssh, never its keys: the node agent applies those live (issue 12)
    assert "d /var/home/core/.ssh 0700 core core -" in lines
    assert "authorized_keys" not in lines
    assert (rootfs / "usr/lib/sysusers.d/10-gitops-core.conf").exists()
    assert not any(
        k.encode() in p.read_bytes()
        for p in rootfs.rglob("*")
        if p.is_file() and not p.is_symlink()
        for k in ("AAAAC3NzaC1lZDI1NTE5AAAAIOM5WxQ1rS2C8dK3mP4v8Z0x6u1sJr3vYwq9nS7aT2bE",)
    )
    # /var content never lands in the image itself
    assert not (rootfs / "var/lib/node-exporter").exists()
    # the base is still there underneath
    assert (rootfs / "usr/bin/busybox").exists()


def test_same_inputs_in_another_checkout_give_the_same_digest(
    registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> None:
    a = example_repo(tmp_path / "a", registry.host, base_image.ref, prefix="same")
    b = example_repo(tmp_path / "b", registry.host, base_image.ref, prefix="same")
    # a different checkout: other file names, documents regrouped
    (b / "machineconfigs" / "50-chrony.yaml").rename(b / "machineconfigs" / "time-sync.yaml")
    _, plan_a = plan_pool(registry, a, "master")
    _, plan_b = plan_pool(registry, b, "master")
    assert plan_a.inputs_digest == plan_b.inputs_digest
    assert plan_a.predicted_digest == plan_b.predicted_digest


@pytest.mark.parametrize("which", ["registry_basic", "registry_token", "registry_tls"])
def test_build_through_the_cli_with_auth_and_tls(
    which: str, request: pytest.FixtureRequest, base_image: BaseImage, tmp_path: Path
) -> None:
    reg: RunningRegistry = request.getfixturevalue(which)
    base = base_image.copy_to(reg)
    repo = example_repo(tmp_path / "repo", reg.host, base, prefix=f"cli-{which}")
    args = ["--repo", str(repo), "--authfile", str(reg.authfile)]
    args += [f"--insecure-registry={h}" for h in reg.insecure]
    if reg.ca_file:
        args += ["--registry-ca", str(reg.ca_file)]
    planned = CliRunner().invoke(cli, ["plan", *args, "--pool", "master", "-o", "json"])
    assert planned.exit_code == 0, planned.output
    (summary,) = json.loads(planned.output)["items"]  # a PlanList (docs/cli.md)
    assert summary["builder"] == "native"
    built = CliRunner().invoke(cli, ["build", *args, "--pool", "master"])
    assert built.exit_code == 0, built.output
    pushed = built.stdout.strip().splitlines()[-1]
    assert pushed == f"{summary['image']['repository']}@{summary['predictedDigest']}"
    assert reg.skopeo_digest(pushed) == summary["predictedDigest"]


def test_containerfile_pools_are_planned_without_a_predicted_digest(
    registry: RunningRegistry, worker_repo: Path
) -> None:
    result = CliRunner().invoke(cli, ["plan", "--repo", str(worker_repo), "--insecure-registry",
                                      registry.host, "-o", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    by_pool = {p["pool"]: p for p in json.loads(result.output)["items"]}
    assert by_pool["infra"]["builder"] == "buildah"
    assert by_pool["infra"]["predictedDigest"] is None
    assert any("realtime" in r for r in by_pool["infra"]["reasons"])
    assert by_pool["worker"]["builder"] == "native"
    assert by_pool["worker"]["predictedDigest"].startswith("sha256:")
    # identity: the tag carries the inputs digest
    assert by_pool["worker"]["image"]["tag"] == "worker-" + by_pool["worker"]["inputsDigest"][7:]


def test_text_plan_reads_well(registry: RunningRegistry, worker_repo: Path) -> None:
    result = CliRunner().invoke(cli, ["plan", "--repo", str(worker_repo), "--insecure-registry",
                                      registry.host, "--pool", "worker"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith("worker: native build\n")
    assert "  predicted digest sha256:" in result.output


# --- bad registry input -------------------------------------------------------------------


def _timed_plan(reg: RunningRegistry, repo: Path, pool: str, **kw) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    _, outcome = plan_pool(reg, repo, pool, **kw)
    return time.monotonic() - start, outcome


def test_unreachable_registry_fails_fast_and_is_transient(
    registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> None:
    repo = example_repo(tmp_path / "repo", "127.0.0.1:9", "127.0.0.1:9/base/bootc:latest")
    elapsed, outcome = _timed_plan(
        registry, repo, "worker", insecure={"127.0.0.1:9"}, retry_deadline_s=2
    )
    assert isinstance(outcome, planning.PoolFailure)
    assert outcome.transient
    assert "127.0.0.1:9" in str(outcome.error)
    assert "unreachable" in str(outcome.error)
    assert elapsed < 10


def test_missing_base_image_names_it(registry: RunningRegistry, tmp_path: Path) -> None:
    repo = example_repo(tmp_path / "repo", registry.host, f"{registry.host}/base/nothing:42")
    elapsed, outcome = _timed_plan(registry, repo, "worker")
    assert isinstance(outcome, planning.PoolFailure)
    assert f"{registry.host}/base/nothing:42" in str(outcome.error)
    assert "not found" in str(outcome.error)
    assert elapsed < 10


def test_index_without_the_pools_architecture(
    registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> None:
    repo = example_repo(tmp_path / "repo", registry.host, base_image.multi_ref)
    mosc = repo / "machineosconfigs" / "worker.yaml"
    mosc.write_text(mosc.read_text() + "  architecture: s390x\n")
    _, outcome = plan_pool(registry, repo, "worker")
    assert isinstance(outcome, planning.PoolFailure)
    text = str(outcome.error)
    assert "linux/s390x" in text
    assert "linux/amd64" in text
    assert "linux/arm64" in text


def test_index_selects_the_pools_architecture(
    registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> None:
    repo = example_repo(tmp_path / "repo", registry.host, base_image.multi_ref)
    _, plan = plan_pool(registry, repo, "worker")
    assert isinstance(plan, poolplan.PoolPlan)
    assert plan.base.digest == base_image.multi_amd64_digest
    assert plan.base.index_digest == base_image.multi_digest


def test_401_without_credentials_pushes_nothing(
    registry_basic: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> None:
    base = base_image.copy_to(registry_basic)
    repo = example_repo(tmp_path / "repo", registry_basic.host, base, prefix="noauth")
    empty = tmp_path / "empty-auth.json"
    empty.write_text('{"auths": {}}')
    result = CliRunner().invoke(cli, ["build", "--repo", str(repo), "--pool", "worker",
                                      "--authfile", str(empty), "--insecure-registry",
                                      registry_basic.host])  # fmt: skip
    assert result.exit_code == 1
    assert "authentication required" in result.output
    assert registry_basic.password not in result.output
    # nothing under the target repository: no tag a pin could point to
    with registry_basic.client() as client, pytest.raises(RegistryError):
        client.get_manifest(f"{registry_basic.host}/noauth/worker", "latest")
    tags = subprocess.run(["skopeo", "list-tags", *registry_basic.skopeo_args(),
                           f"docker://{registry_basic.host}/noauth/worker"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert tags.returncode != 0 or json.loads(tags.stdout)["Tags"] in ([], None)


def test_wrong_password_is_named_without_the_password(
    registry_basic: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> None:
    base = base_image.copy_to(registry_basic)
    repo = example_repo(tmp_path / "repo", registry_basic.host, base, prefix="badpw")
    bad = tmp_path / "bad-auth.json"
    shutil.copy(registry_basic.authfile, bad)
    import base64

    bad.write_text(json.dumps({"auths": {registry_basic.host: {
        "auth": base64.b64encode(b"testuser:wrong-secret-xyz").decode()}}}))  # fmt: skip
    result = CliRunner().invoke(cli, ["plan", "--repo", str(repo), "--pool", "worker",
                                      "--authfile", str(bad), "--insecure-registry",
                                      registry_basic.host])  # fmt: skip
    assert result.exit_code == 1
    assert "wrong-secret-xyz" not in result.output
    assert str(bad) in result.output or registry_basic.host in result.output
