"""The bootc stand-in keeps the documented contract (reference bootc-contract.md §7),
checked through the agent's driver and as a plain command; and in ostree mode it
deploys real images from a real registry into a scratch sysroot."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from reconciler.adapters.bootc import Bootc, BootcError, Timeouts
from tests.fixtures import registry as reg
from tests.fixtures.bootc import FakeHost, compute_kargs

REPO = "127.0.0.1:5000/pools/worker"
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


@pytest.fixture
def host(bootc_host: FakeHost) -> FakeHost:
    bootc_host.add_image(REPO, A)
    bootc_host.add_image(REPO, B, version="2026.11.2")
    bootc_host.install(f"{REPO}@{A}")
    return bootc_host


def run(host: FakeHost, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(host.bootc), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_status_is_sorted_compact_json_and_booted_only_hides_the_rest(host: FakeHost) -> None:
    Bootc([str(host.bootc)]).switch(f"{REPO}@{B}")
    out = run(host, "status", "--format=json", "--format-version=1").stdout.strip()
    doc = json.loads(out)
    assert out == json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert doc["spec"]["image"]["image"] == f"{REPO}@{B}"  # spec follows the staged entry
    booted_only = json.loads(run(host, "status", "--format=json", "--booted").stdout)
    assert booted_only["status"]["staged"] is None
    assert booted_only["status"]["rollback"] is None
    assert booted_only["status"]["booted"]["image"]["imageDigest"] == A


def test_exit_codes_and_error_lines(host: FakeHost) -> None:
    bad_version = run(host, "status", "--format=json", "--format-version=2")
    assert (bad_version.returncode, bad_version.stderr.strip()) == (
        1,
        "error: Unsupported format version: 2",
    )
    usage = run(host, "switch", "--bogus", f"{REPO}@{B}")
    assert usage.returncode == 2
    assert usage.stderr.startswith("error: unexpected argument '--bogus'")
    no_rollback = run(host, "rollback")
    assert (no_rollback.returncode, no_rollback.stderr.strip()) == (
        1,
        "error: No rollback available",
    )


def test_switch_unchanged_stage_reboot_and_rollback_transitions(host: FakeHost) -> None:
    bootc = Bootc([str(host.bootc)])
    assert bootc.switch(f"{REPO}@{A}").unchanged  # the booted image: nothing to do
    result = bootc.switch(f"{REPO}@{B}")
    assert not result.unchanged
    assert f"Queued for next boot: {REPO}@{B}" in result.output
    assert "  Version: 2026.11.2" in result.output
    assert host.reboot_required.read_text() == f"bootc: Reboot required for image: {B}\n"
    assert bootc.switch(f"{REPO}@{B}").unchanged  # spec comes from the staged entry

    host.reboot()
    status = bootc.status()
    assert (status.booted_digest, status.rollback_digest, status.staged_digest) == (B, A, None)
    assert not host.reboot_required.exists()

    assert bootc.rollback() == "Next boot: rollback deployment\n"
    assert bootc.status().status.rollback_queued
    assert bootc.status().spec.boot_order == "rollback"
    # run twice it reverts the first (contract §3): the agent must never do that
    assert "Reverting queued rollback state" in bootc.rollback()
    assert not bootc.status().status.rollback_queued
    bootc.rollback()
    host.reboot()
    status = bootc.status()
    assert (status.booted_digest, status.rollback_digest) == (A, B)


def test_rollback_discards_a_staged_deployment(host: FakeHost) -> None:
    bootc = Bootc([str(host.bootc)])
    bootc.switch(f"{REPO}@{B}")
    host.reboot()
    bootc.switch(f"{REPO}@{A}")
    bootc.rollback()
    assert bootc.status().staged_digest is None


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"error": "401"}, "unauthorized: authentication required"),
        ({"error": "enospc"}, "Insufficient free space"),
    ],
)
def test_injected_switch_failures(host: FakeHost, fault: dict[str, str], message: str) -> None:
    host.inject(switch=fault)
    with pytest.raises(BootcError, match=message) as info:
        Bootc([str(host.bootc)]).switch(f"{REPO}@{B}")
    assert info.value.exit_code == 1
    assert Bootc([str(host.bootc)]).status().staged_digest is None


def test_sigpolicy_refusal_and_signature_in_the_spec(host: FakeHost) -> None:
    host.inject(switch={"error": "sigpolicy"})
    with pytest.raises(BootcError, match="insecureAcceptAnything"):
        Bootc([str(host.bootc)], enforce_sigpolicy=True).switch(f"{REPO}@{B}")
    host.inject()
    # no fault injected: the host's own policy decides, as containers/image does
    policy = host.root / "etc/containers/policy.json"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    with pytest.raises(BootcError, match="insecureAcceptAnything"):
        Bootc([str(host.bootc)], enforce_sigpolicy=True).switch(f"{REPO}@{B}")
    policy.write_text('{"default": [{"type": "reject"}], "transports": {"docker": '
                      f'{{"{REPO}": [{{"type": "reject"}}], "": [{{"type": '
                      '"insecureAcceptAnything"}]}}}')  # fmt: skip
    with pytest.raises(BootcError, match="rejected by policy"):
        Bootc([str(host.bootc)], enforce_sigpolicy=True).switch(f"{REPO}@{B}")
    policy.write_text('{"default": [{"type": "reject"}], "transports": {"docker": '
                      '{"": [{"type": "insecureAcceptAnything"}]}}}')  # fmt: skip
    enforced = Bootc([str(host.bootc)], enforce_sigpolicy=True)
    enforced.switch(f"{REPO}@{B}")
    staged = enforced.status().status.staged
    assert staged is not None
    assert staged.image is not None
    assert staged.image.image.signature == "containerPolicy"
    # the same image without the flag is a different spec: bootc stages again (§1)
    assert not Bootc([str(host.bootc)]).switch(f"{REPO}@{B}").unchanged


def test_unknown_image_and_unbootable_image_are_refused(host: FakeHost) -> None:
    with pytest.raises(BootcError, match="manifest unknown"):
        Bootc([str(host.bootc)]).switch(f"{REPO}@sha256:{'c' * 64}")
    host.add_image(REPO, "sha256:" + "d" * 64, labels={})
    with pytest.raises(BootcError, match=r"does not have ostree\.bootable label"):
        Bootc([str(host.bootc)]).switch(f"{REPO}@sha256:{'d' * 64}")


def test_apply_parks_forever_as_bootc_does(host: FakeHost) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run(host, "switch", "--apply", f"{REPO}@{B}", timeout=3)


def test_status_waits_for_the_sysroot_lock_and_the_driver_times_out(host: FakeHost) -> None:
    host.inject(switch={"hold_lock": 4})
    switch = threading.Thread(target=Bootc([str(host.bootc)]).switch, args=(f"{REPO}@{B}",))
    switch.start()
    time.sleep(1.0)  # let the switch take the lock
    with pytest.raises(BootcError, match="did not finish within 1s") as info:
        Bootc([str(host.bootc)], timeouts=Timeouts(status=1)).status()
    assert info.value.transient
    waited = run(host, "status", "--format=json")
    switch.join()
    assert waited.returncode == 0
    assert "Waiting for sysroot lock..." in waited.stderr
    assert json.loads(waited.stdout)["status"]["staged"]["image"]["imageDigest"] == B


def test_kargs_follow_bootc_rules() -> None:
    booted = ["console=ttyS0", "rd.local=1", "mitigations=auto"]
    # image kargs that went away are dropped, new ones added, local ones kept
    assert compute_kargs(booted, ["mitigations=auto"], ["nosmt"]) == [
        "console=ttyS0",
        "rd.local=1",
        "nosmt",
    ]
    # a new image without kargs.d keeps everything
    assert compute_kargs(booted, ["mitigations=auto"], None) == booted


# --- ostree mode: real images, real deployments ---------------------------------------


def _pool_image(version: str, kargs_toml: dict[str, str]) -> reg.ImageParts:
    entries = reg.usr_merged_skeleton()
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    entries.append(("usr/bin/busybox", "file", busybox.read_bytes(), 0o755))
    kdir = f"usr/lib/modules/{reg.KERNEL_VERSION}"
    entries += [
        (kdir, "dir", b"", 0o755),
        (f"{kdir}/vmlinuz", "file", b"dummy kernel\n", 0o644),
        (f"{kdir}/initramfs.img", "file", b"dummy initramfs\n", 0o644),
        ("etc/chrony.conf", "file", f"server pool.example iburst # {version}\n".encode(), 0o644),
        ("usr/lib/bootc", "dir", b"", 0o755),
        ("usr/lib/bootc/kargs.d", "dir", b"", 0o755),
    ]
    entries += [
        (f"usr/lib/bootc/kargs.d/{name}", "file", text.encode(), 0o644)
        for name, text in kargs_toml.items()
    ]
    return reg._image(entries, "amd64")


@pytest.mark.ostree
@pytest.mark.registry
def test_ostree_mode_deploys_the_pool_image_with_its_kargs(
    ostree_bootc_host: FakeHost, registry: reg.RunningRegistry
) -> None:
    host = ostree_bootc_host
    repo = f"{registry.host}/pools/worker"
    v1 = _pool_image("v1", {"10-worker.toml": 'kargs = ["console=ttyS0", "mitigations=auto"]\n'})
    v2 = _pool_image(
        "v2",
        {
            "10-worker.toml": 'kargs = ["console=ttyS0", "nosmt"]\n',
            "20-arm.toml": 'kargs = ["arm-only=1"]\nmatch-architectures = ["aarch64"]\n',
        },
    )
    with registry.client() as client:
        for img in (v1, v2):
            reg._push_image(client, repo, img, img.digest)

    host.install(f"{repo}@{v1.digest}", kargs=["rd.local=1"])
    bootc = Bootc([str(host.bootc)], timeouts=Timeouts(status=30, switch=120))
    assert bootc.status().booted_digest == v1.digest
    assert (host.deployment_root() / "etc/chrony.conf").read_text().endswith("# v1\n")

    bootc.switch(f"{repo}@{v2.digest}")
    assert bootc.status().staged_digest == v2.digest
    host.reboot()  # ostree-finalize-staged: the deployment happens now

    status = bootc.status()
    assert (status.booted_digest, status.rollback_digest) == (v2.digest, v1.digest)
    root = host.deployment_root()
    assert (root / "etc/chrony.conf").read_text() == "server pool.example iburst # v2\n"
    assert (root / "usr/etc/chrony.conf").exists()  # /etc moved to /usr/etc on import
    options = host.boot_entries()[0]["options"].split()
    assert [o for o in options if not o.startswith("ostree=")] == [
        "rd.local=1",  # machine-local, kept
        "console=ttyS0",  # in both images
        "nosmt",  # new in v2
    ]  # mitigations=auto (only v1's) dropped; arm-only=1 not for x86_64
    assert len(host.boot_entries()) == 2  # booted + rollback

    bootc.rollback()
    host.reboot()
    assert bootc.status().booted_digest == v1.digest
    assert host.deployment_root().joinpath("etc/chrony.conf").read_text().endswith("# v1\n")
    assert "mitigations=auto" in host.boot_entries()[0]["options"].split()


@pytest.mark.ostree
@pytest.mark.registry
def test_ostree_mode_pull_needs_the_pull_secret(
    ostree_bootc_host: FakeHost, registry_basic: reg.RunningRegistry, base_image: reg.BaseImage
) -> None:
    host = ostree_bootc_host
    host.install(f"{base_image.repository}@{base_image.digest}")
    base_image.copy_to(registry_basic)
    private = f"{registry_basic.host}/base/bootc@{base_image.digest}"
    bootc = Bootc([str(host.bootc)], timeouts=Timeouts(status=30, switch=120))
    with pytest.raises(BootcError, match="authentication required") as info:
        bootc.switch(private)
    assert str(registry_basic.password) not in str(info.value)
    # bootc's pull secret location (contract §6): /etc/ostree/auth.json
    (host.root / "etc/ostree").mkdir(parents=True)
    shutil.copy(registry_basic.authfile, host.root / "etc/ostree/auth.json")
    bootc.switch(private)
    assert bootc.status().staged_digest == base_image.digest
