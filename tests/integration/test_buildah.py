"""The buildah builder against the real distribution registry.

Real: buildah (`bud --isolation chroot`, vfs storage in the test's directory), the
registry (plain and with Basic auth), skopeo and umoci to read back what was pushed,
the HTTP package source the RUN steps download from. Stand-ins, said plainly: `dnf`,
`rpm`, `update-ca-trust` and `bootc` inside the base image are shell shims
(`tests/fixtures/buildbase.py`); the base is a busybox root made by the test.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from reconciler.adapters.builders.buildah import BuildahBuilder
from reconciler.adapters.registry import RegistryClient
from reconciler.core import poolplan
from reconciler.errors import BuildError
from reconciler.loop import building
from tests.fixtures import bootc_lint
from tests.fixtures.buildbase import RT_KERNEL_VERSION, BuildBase
from tests.fixtures.registry import KERNEL_VERSION, PASSWORD, USERNAME, RunningRegistry
from tests.helpers import example_repo, plan_built_by

pytestmark = [pytest.mark.buildah, pytest.mark.registry]


def make_repo(
    dest: Path,
    registry: RunningRegistry,
    base_ref: str,
    *,
    container_file: str | None = None,
    extensions: dict[str, list[str]] | None = None,
    ca_bundle: str | None = None,
) -> Path:
    """The examples, pushing to `registry/<dest name>/<pool>`, built FROM `base_ref`;
    optionally with a `containerFile` for infra, an extensions table, a CA bundle."""
    repo = example_repo(dest, registry.host, base_ref, prefix=dest.parent.name)
    if container_file is not None:
        path = repo / "machineosconfigs/infra.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["spec"]["containerFile"] = [{"containerfileArch": "NoArch", "content": container_file}]
        path.write_text(yaml.safe_dump(doc))
    if extensions is not None or ca_bundle is not None:
        path = repo / "reconciler.yaml"
        doc = yaml.safe_load(path.read_text())
        if extensions is not None:
            doc["spec"]["extensions"] = extensions
        if ca_bundle is not None:
            doc["spec"]["caBundle"] = ca_bundle
        path.write_text(yaml.safe_dump(doc))
    return repo


def plan_infra(
    registry: RunningRegistry, repo_dir: Path
) -> tuple[RegistryClient, poolplan.PoolPlan]:
    return plan_built_by(registry, repo_dir, "infra", "buildah")


def buildah_containers(builder: BuildahBuilder) -> list[str]:
    storage = builder.storage_dir
    out = subprocess.run(
        ["buildah", "--root", str(storage / "storage"), "--runroot", str(storage / "run"),
         "--storage-driver", "vfs", "containers", "--quiet"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.split()


def test_extensions_and_kernel_swap_land_in_the_pushed_image(
    registry: RunningRegistry, dnf_base: BuildBase, tmp_path: Path
) -> None:
    client, plan = plan_infra(registry, make_repo(tmp_path / "repo", registry, dnf_base.ref))
    builder = BuildahBuilder(client, tmp_path / "work")
    before = len(dnf_base.repo.requests)

    result = building.ensure_image(client, plan, {"buildah": builder})

    assert result.built_by == "buildah"
    assert str(result.image) == f"{plan.target.registry}/{plan.target.repository}@{result.digest}"
    assert registry.skopeo_digest(str(plan.target)) == result.digest
    # the packages came from the package source, over the network
    fetched = dnf_base.repo.requests[before:]
    assert any("/sysstat.tar" in r for r in fetched)
    assert any("/kernel-rt-core.tar" in r for r in fetched)

    # bootc's lints pass: among them, no empty /etc/hostname or /etc/resolv.conf,
    # which buildah's RUN steps left (the base has none) and build.sh removed
    rootfs = bootc_lint.check_image(registry, str(result.image), tmp_path / "out")
    for name in ("hostname", "resolv.conf", "hosts"):
        assert not (rootfs / "etc" / name).exists()
    assert (rootfs / "usr/bin/sar").read_text().startswith("#!/bin/sh")  # extension sysstat
    assert (rootfs / f"usr/lib/modules/{RT_KERNEL_VERSION}/vmlinuz").is_file()  # realtime
    assert not (rootfs / f"usr/lib/modules/{KERNEL_VERSION}/vmlinuz").exists()  # old removed
    assert "ntp1.example.internal" in (rootfs / "etc/chrony.conf").read_text()  # config layer
    labels = json.loads(registry.skopeo("inspect", *registry.skopeo_args(),
                                        f"docker://{result.image}"))["Labels"]  # fmt: skip
    assert labels["gitops.bootc.dev/inputs-digest"] == plan.inputs_digest
    assert labels["containers.bootc"] == "1"

    # Built once: the next call finds the tag and builds nothing.
    again = building.ensure_image(client, plan, {"buildah": builder})
    assert (again.built_by, again.digest) == ("reused", result.digest)
    # Nothing left behind but the cached base: no build dir, no log, no container.
    assert list((tmp_path / "work" / "builds").iterdir()) == []
    assert list(builder.log_dir.iterdir()) == []
    assert buildah_containers(builder) == []


def test_the_dnf_base_is_a_bootc_layout(
    registry: RunningRegistry, dnf_base: BuildBase, tmp_path: Path
) -> None:
    rootfs = bootc_lint.check_image(registry, dnf_base.ref, tmp_path / "base")
    assert os.readlink(rootfs / "ostree") == "sysroot/ostree"
    assert (rootfs / "sysroot").is_dir()
    assert "[composefs]" in (rootfs / "usr/lib/ostree/prepare-root.conf").read_text()
    # and its bootc shim (which every build runs last) refuses a root without that
    # layout, as bootc's lint does
    lint = ["chroot", str(rootfs), "/usr/bin/bootc", "container", "lint"]
    assert (
        subprocess.run(lint, check=True, capture_output=True, text=True).stdout
        == "Checks passed: 4\n"
    )
    (rootfs / "ostree").unlink()
    lint_run = subprocess.run(lint, check=False, capture_output=True, text=True)
    assert lint_run.returncode == 1
    assert "baseimage-root: Expected /ostree -> sysroot/ostree" in lint_run.stderr


def test_what_the_build_left_is_removed_in_one_more_layer_naming_the_base(
    registry: RunningRegistry, dnf_base: BuildBase, tmp_path: Path
) -> None:
    client, plan = plan_infra(registry, make_repo(tmp_path / "repo", registry, dnf_base.ref))
    digest = BuildahBuilder(client, tmp_path / "work").build(plan)
    image = f"{plan.target.registry}/{plan.target.repository}@{digest}"

    raw = json.loads(registry.skopeo("inspect", "--raw", *registry.skopeo_args(),
                                     f"docker://{image}"))  # fmt: skip
    # the base's layer, the build's, and the whiteouts of what the build left
    assert len(raw["layers"]) == len(dnf_base.image.layers) + 2
    annotations = raw["annotations"]
    assert annotations["org.opencontainers.image.base.digest"] == dnf_base.digest
    assert annotations["org.opencontainers.image.base.name"].endswith(f"@{dnf_base.digest}")
    config = json.loads(registry.skopeo("inspect", "--config", *registry.skopeo_args(),
                                        f"docker://{image}"))  # fmt: skip
    last = config["history"][-1]["created_by"]
    assert (
        last
        == "reconciler-build: rm /etc/hostname /etc/resolv.conf /etc/hosts (empty, left by buildah)"
    )
    assert config["created"] == "1970-01-01T00:00:00Z"


def test_the_pools_own_hostname_resolv_conf_and_hosts_are_kept(
    registry: RunningRegistry, dnf_base: BuildBase, tmp_path: Path
) -> None:
    # A MachineConfig writes all three; an empty one too: the admin's, never removed.
    repo = make_repo(tmp_path / "repo", registry, dnf_base.ref)
    files = {"/etc/hostname": b"infra-node\n", "/etc/resolv.conf": b"nameserver 10.0.0.53\n",
             "/etc/hosts": b""}  # fmt: skip
    (repo / "machineconfigs/80-infra-names.yaml").write_text(yaml.safe_dump({
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfig",
        "metadata": {"name": "80-infra-names",
                     "labels": {"machineconfiguration.openshift.io/role": "infra"}},
        "spec": {"config": {"ignition": {"version": "3.2.0"}, "storage": {"files": [
            {"path": path, "mode": 0o644, "overwrite": True,
             "contents": {"source": "data:;base64," + base64.b64encode(data).decode()}}
            for path, data in files.items()]}}},
    }))  # fmt: skip
    client, plan = plan_infra(registry, repo)
    digest = BuildahBuilder(client, tmp_path / "work").build(plan)
    image = f"{plan.target.registry}/{plan.target.repository}@{digest}"

    rootfs = bootc_lint.check_image(registry, image, tmp_path / "out")
    for path, data in files.items():
        assert (rootfs / path.lstrip("/")).read_bytes() == data, path
    # nothing to remove, so no layer for it
    raw = json.loads(registry.skopeo("inspect", "--raw", *registry.skopeo_args(),
                                     f"docker://{image}"))  # fmt: skip
    assert len(raw["layers"]) == len(dnf_base.image.layers) + 1


def test_two_builds_of_the_same_inputs_give_the_same_digest(
    registry: RunningRegistry, dnf_base: BuildBase, tmp_path: Path
) -> None:
    client, plan = plan_infra(registry, make_repo(tmp_path / "repo", registry, dnf_base.ref))
    # Separate storage each time: nothing cached but the base pulled again.
    first = BuildahBuilder(client, tmp_path / "a").build(plan)
    second = BuildahBuilder(client, tmp_path / "b").build(plan)
    assert first == second
    assert registry.skopeo_digest(str(plan.target)) == first


def test_a_failing_run_step_is_a_clear_error_with_the_log_tail_and_pushes_nothing(
    registry: RunningRegistry, dnf_base: BuildBase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    repo = make_repo(tmp_path / "repo", registry, dnf_base.ref,
                     extensions={"sysstat": ["sysstat", "no-such-package"]})  # fmt: skip
    client, plan = plan_infra(registry, repo)
    builder = BuildahBuilder(client, tmp_path / "work")

    with pytest.raises(BuildError) as info:
        building.ensure_image(client, plan, {"buildah": builder})

    err = info.value
    assert err.transient is False  # the same inputs fail the same way: wait for a commit
    message = str(err)
    assert message.startswith("pool infra: the build failed (a RUN step or the Containerfile)")
    assert "Unable to find a match: no-such-package" in err.log_tail
    assert "STEP 2/" in err.log_tail  # which step, from buildah's own output
    log_path = builder.log_dir / f"infra-{plan.inputs_digest[7:19]}.log"
    assert f"build log: {log_path}" in message
    assert "Unable to find a match: no-such-package" in log_path.read_text()  # kept
    assert len(err.log_tail.splitlines()) <= 30
    # nothing pushed, so nothing a pin could name
    assert client.manifest_digest(plan.target, plan.target.tag or "") is None
    # a progress line per step went to the logger
    steps = [r.getMessage() for r in caplog.records if "infra: step " in r.getMessage()]
    assert steps
    assert steps[0].startswith("pool infra: step 1/")


def test_credentials_reach_buildah_and_never_show(
    registry_basic: RunningRegistry,
    dnf_base: BuildBase,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    base_ref = dnf_base.copy_to(registry_basic)
    ok_repo = make_repo(tmp_path / "ok" / "repo", registry_basic, base_ref)
    client, plan = plan_infra(registry_basic, ok_repo)
    builder = BuildahBuilder(client, tmp_path / "work")
    digest = builder.build(plan)  # pulls and pushes through Basic auth
    assert registry_basic.skopeo_digest(str(plan.target)) == digest

    bad_repo = make_repo(tmp_path / "bad" / "repo", registry_basic, base_ref,
                         container_file=f"RUN echo {PASSWORD} && false")  # fmt: skip
    client, plan = plan_infra(registry_basic, bad_repo)
    with pytest.raises(BuildError) as info:
        builder.build(plan)
    # The password was in the build's own output (the admin's RUN echoed it) and
    # is redacted everywhere we write it: the error, the kept log, our logger.
    assert PASSWORD not in str(info.value)
    assert "echo *** && false" in info.value.log_tail
    kept = next(builder.log_dir.iterdir()).read_text()
    assert PASSWORD not in kept
    assert "***" in kept
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)
    # The auth file lived only as long as the build.
    assert not list((tmp_path / "work").rglob("auth.json"))
    assert USERNAME not in kept


def test_a_timeout_kills_the_build_and_what_it_left_does_not_break_the_next(
    registry: RunningRegistry, dnf_base: BuildBase, tmp_path: Path
) -> None:
    # The RUN step hangs while the package source serves a marker file, so the same
    # inputs first hang (and are killed), then build once the marker is gone.
    marker = dnf_base.repo.directory / f"hang-{tmp_path.name}"
    marker.write_text("hang\n")
    step = f"RUN if wget -q -O /dev/null {dnf_base.repo.url}/{marker.name}; then sleep 600; fi"
    repo = make_repo(tmp_path / "repo", registry, dnf_base.ref, container_file=step)
    client, plan = plan_infra(registry, repo)
    builder = BuildahBuilder(client, tmp_path / "work", timeout_s=8)

    with pytest.raises(BuildError) as info:
        builder.build(plan)
    assert info.value.transient is True
    assert "took longer than 8s and was stopped" in str(info.value)
    assert "STEP" in info.value.log_tail
    assert builder.last_pgid is not None
    with pytest.raises(ProcessLookupError):  # the whole process group is gone
        os.killpg(builder.last_pgid, 0)
    # What the killed build left: its working container and its directory.
    build_dir = tmp_path / "work" / "builds" / f"infra-{plan.inputs_digest[7:19]}"
    assert buildah_containers(builder) != []
    assert build_dir.is_dir()
    assert client.manifest_digest(plan.target, plan.target.tag or "") is None

    # A restarted reconciler (a new builder on the same directory) builds the same
    # inputs from scratch without tripping over the leftovers, and cleans them up.
    marker.unlink()
    restarted = BuildahBuilder(client, tmp_path / "work")
    digest = restarted.build(plan)
    assert registry.skopeo_digest(str(plan.target)) == digest
    assert buildah_containers(restarted) == []
    assert not build_dir.exists()


def test_the_repositorys_ca_bundle_is_trusted_in_the_image(
    registry: RunningRegistry, dnf_base: BuildBase, tmp_path: Path
) -> None:
    cert = "-----BEGIN CERTIFICATE-----\nMIIBfleetCA\n-----END CERTIFICATE-----\n"
    repo = make_repo(tmp_path / "repo", registry, dnf_base.ref, ca_bundle=cert)
    client, plan = plan_infra(registry, repo)
    digest = BuildahBuilder(client, tmp_path / "work").build(plan)

    rootfs = bootc_lint.check_image(
        registry, f"{plan.target.registry}/{plan.target.repository}@{digest}", tmp_path / "out"
    )
    anchor = rootfs / "etc/pki/ca-trust/source/anchors/gitops-bootc-ca-bundle.crt"
    assert anchor.read_text() == cert
    # update-ca-trust ran (the shim concatenates the anchors into the extracted bundle)
    assert cert in (rootfs / "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem").read_text()


def test_a_tls_registry_with_a_private_ca(
    registry_tls: RunningRegistry, dnf_base: BuildBase, tmp_path: Path
) -> None:
    # The client trusts the test CA through --registry-ca; buildah gets it as --cert-dir.
    base_ref = dnf_base.copy_to(registry_tls)
    client, plan = plan_infra(registry_tls, make_repo(tmp_path / "repo", registry_tls, base_ref))
    digest = BuildahBuilder(client, tmp_path / "work").build(plan)
    assert registry_tls.skopeo_digest(str(plan.target)) == digest
