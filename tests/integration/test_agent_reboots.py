"""What booted, not only the boot id: soft reboots, download-only stages, cancelling a
stage on hosts booted by tag or from another transport, argv and origin checks, a live
/usr overlay, and settings applied without a reboot.

Real: the agent, the bootc CLI calls it makes and the `systemctl` calls for reboots and
soft-reboot counts (separate processes). Stand-in: bootc and systemd
(tests/fixtures/bootc.py, following bootc's `cli.rs` / `status.rs` and systemd's
soft-reboot rules, contract §8), pins in memory.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reconciler.adapters.bootc import Bootc, BootcError, ImageReference
from reconciler.agent.agent import Agent
from reconciler.agent.live import CORE_KEYS, LiveApplier, NodeSettings
from reconciler.agent.source import MemoryPinSource, PoolPolicy
from reconciler.agent.state import Phase, StateStore
from tests.fixtures.bootc import FakeHost, pin_text
from tests.integration import test_agent

REPO = "127.0.0.1:5000/pools/worker"
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
KARGS = ("quiet",)


def soft_reboots(host: FakeHost) -> int | None:
    out = subprocess.run(
        [str(host.systemctl), "show", "-P", "SoftRebootsCount"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return int(out) if out else None


def make_agent(host: FakeHost, source: MemoryPinSource, tmp_path: Path, **config: object) -> Agent:
    config.setdefault("live", LiveApplier(root=tmp_path / "hostroot", owner=None))
    return test_agent.make_agent(
        host, source, tmp_path, **config, soft_reboots=lambda: soft_reboots(host)
    )


@pytest.fixture
def host(bootc_host: FakeHost) -> FakeHost:
    for digest in (A, B):
        bootc_host.add_image(REPO, digest, kargs=list(KARGS))
    bootc_host.install(f"{REPO}@{A}")
    return bootc_host


@pytest.fixture
def source() -> MemoryPinSource:
    src = MemoryPinSource()
    src.publish(
        "worker",
        pin_text("worker", f"{REPO}@{A}"),
        PoolPolicy("worker", push_spec=f"{REPO}:latest"),
        NodeSettings(kernel_arguments=KARGS),
    )
    return src


def calls(host: FakeHost, verb: str) -> list[list[str]]:
    return [c for c in host.calls() if c[:1] == [verb]]


# -- soft reboots --


@pytest.mark.parametrize("systemd", [256, 255], ids=["counted", "uncounted"])
def test_a_soft_reboot_into_an_unhealthy_image_ends_rolled_back(
    host, source, tmp_path, systemd
) -> None:
    """The boot id stays; the booted deployment (and on systemd >= 256 the soft-reboot
    count) shows the restart, so verification runs and the failing check rolls back."""
    host.set_systemd(systemd)
    agent = make_agent(host, source, tmp_path, soft_reboot="auto", verify_grace=0)
    assert agent.step().phase == Phase.DONE  # learns the pool's kernel arguments
    boot_id = host.boot_id_file.read_text()
    host.inject(boot={B: "unhealthy"})
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))

    state = agent.step()
    assert state.phase == Phase.REBOOTING
    assert state.reason == f"soft-rebooting into {B}"
    assert calls(host, "switch") == [
        ["switch", "--quiet", "--soft-reboot=auto", "--", f"{REPO}@{B}"]
    ]
    assert host.booted_digest == B
    assert host.boot_id_file.read_text() == boot_id  # a soft reboot: same kernel, same id

    state = agent.step()  # verification ran: boot-complete.target failed
    assert state.phase == Phase.ROLLING_BACK
    assert "boot-complete.target is failed" in state.reason
    state = agent.step()
    assert state.phase == Phase.ROLLED_BACK, state.reason
    assert state.failed_digest == B
    assert host.booted_digest == A
    assert host.boot_id_file.read_text() != boot_id  # the rollback is a full reboot
    assert calls(host, "rollback") == [["rollback"]]


def test_soft_reboot_is_not_used_when_the_kernel_changes(host, source, tmp_path) -> None:
    host.add_image(REPO, B, kargs=list(KARGS), kernel="6.13.0-1.x86_64")
    agent = make_agent(host, source, tmp_path, soft_reboot="auto")
    agent.step()
    boot_id = host.boot_id_file.read_text()
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    assert agent.step().reason == f"rebooting into {B}"
    assert host.boot_id_file.read_text() != boot_id
    assert agent.step().phase == Phase.DONE


def test_soft_reboot_is_not_used_when_the_kernel_arguments_change(host, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path, soft_reboot="auto")
    agent.step()
    source.publish(
        "worker",
        pin_text("worker", f"{REPO}@{B}"),
        settings=NodeSettings(kernel_arguments=(*KARGS, "mitigations=off")),
    )
    boot_id = host.boot_id_file.read_text()
    assert agent.step().reason == f"rebooting into {B}"  # a soft reboot keeps the cmdline
    assert host.boot_id_file.read_text() != boot_id
    assert agent.step().phase == Phase.DONE


def test_without_soft_reboot_the_reboot_is_forced_full(host, source, tmp_path) -> None:
    """bootc populated /run/nextroot (someone ran `switch --soft-reboot`): a plain
    `systemctl reboot` would soft-reboot; the agent sets SYSTEMCTL_SKIP_AUTO_SOFT_REBOOT."""
    agent = make_agent(host, source, tmp_path)
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    assert host.run("switch", "--soft-reboot=auto", "--", f"{REPO}@{B}").returncode == 0
    assert (host.root / "run/nextroot").is_dir()
    boot_id = host.boot_id_file.read_text()
    assert agent.step().phase == Phase.REBOOTING
    assert host.boot_id_file.read_text() != boot_id
    assert soft_reboots(host) == 0
    assert agent.step().phase == Phase.DONE


def test_a_soft_reboot_that_did_not_apply_the_stage_is_not_a_rollback(
    host, source, tmp_path
) -> None:
    """An admin's reboot command soft-reboots into the same root (no /run/nextroot):
    the stage is still there; the agent reboots again instead of failing the digest."""
    agent = make_agent(host, source, tmp_path)
    agent.reboot_command = [str(host.systemctl), "soft-reboot"]
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    assert agent.step().phase == Phase.REBOOTING
    assert (host.booted_digest, soft_reboots(host)) == (A, 1)
    agent.reboot_command = host.reboot_command
    state = agent.step()
    assert state.phase == Phase.REBOOTING, state.reason
    assert host.booted_digest == B
    state = agent.step()
    assert (state.phase, state.failed_digest) == (Phase.DONE, None)


# -- download-only stages --


class DownloadOnlyDuringDrain(test_agent.RecordingCoordinator):
    """While the node drains, something on the host runs `bootc upgrade --download-only`
    (e.g. an update timer configured that way): the agent's stage is now locked."""

    def __init__(self, store: StateStore, host: FakeHost) -> None:
        super().__init__(store)
        self.host = host

    def drain(self):  # type: ignore[no-untyped-def]
        out = self.host.run("upgrade", "--download-only")
        assert out.stdout == "Image downloaded, but will not be applied on reboot\n"
        return super().drain()


def test_a_download_only_stage_is_unlocked_then_applied(host, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path)
    agent.coordinator = DownloadOnlyDuringDrain(agent.store, host)
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    assert agent.step().phase == Phase.REBOOTING
    assert calls(host, "upgrade")[-1] == ["upgrade", "--from-downloaded"]
    assert host.booted_digest == B
    state = agent.step()
    assert (state.phase, state.failed_digest) == (Phase.DONE, None)


def test_a_download_only_stage_that_cannot_be_unlocked_is_reported_not_failed(
    host, source, tmp_path
) -> None:
    host.inject(upgrade={"old": True})  # a bootc without --from-downloaded
    agent = make_agent(host, source, tmp_path)
    agent.coordinator = DownloadOnlyDuringDrain(agent.store, host)
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    boot_id = host.boot_id_file.read_text()
    state = agent.step()
    assert state.phase == Phase.DRAINING
    assert f"{B} is staged download-only" in state.reason
    assert "not rebooting" in state.reason
    assert state.failed_digest is None
    assert host.boot_id_file.read_text() == boot_id  # never rebooted into it blindly
    host.inject()
    host.run("upgrade", "--from-downloaded")  # the admin unlocks it
    agent.coordinator = test_agent.RecordingCoordinator(agent.store)
    assert agent.step().phase == Phase.REBOOTING
    assert agent.step().phase == Phase.DONE


def test_a_reboot_drops_a_download_only_stage(host) -> None:
    """The stand-in follows bootc: a locked stage is not applied and is gone after."""
    host.run("switch", "--", f"{REPO}@{B}")
    host.run("upgrade", "--download-only")
    assert host.status()["status"]["staged"]["downloadOnly"] is True
    assert host.run("switch", "--", f"{REPO}@{B}").stdout == "Image specification is unchanged.\n"
    assert host.status()["status"]["staged"]["downloadOnly"] is True  # switch does not unlock
    host.reboot()
    assert (host.booted_digest, host.status()["status"]["staged"]) == (A, None)


# -- cancelling a stage --


@pytest.mark.parametrize(
    ("transport", "ref", "argv"),
    [
        ("registry", "quay.io/example/os:latest", ["--", "quay.io/example/os:latest"]),
        (
            "containers-storage",
            "localhost/os:dev",
            ["--transport=containers-storage", "--", "localhost/os:dev"],
        ),
    ],
    ids=["tag", "containers-storage"],
)
def test_cancel_switches_back_with_the_booted_entrys_own_reference(
    bootc_host: FakeHost, tmp_path, transport, ref, argv
) -> None:
    host = bootc_host
    host.add_image(REPO, A, refs=(f"{transport}:{ref}",))
    host.add_image(REPO, B)
    host.install(ref, transport=transport)  # booted by tag / from local storage
    source = MemoryPinSource()
    source.publish(
        "worker", pin_text("worker", f"{REPO}@{B}"), PoolPolicy("worker", push_spec=REPO)
    )
    agent = make_agent(host, source, tmp_path)
    agent.coordinator.fail_drain_once = True  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError):
        agent.step()
    assert host.status()["status"]["staged"]["image"]["imageDigest"] == B
    source.publish("worker", pin_text("worker", f"{REPO}@{A}"))  # reverted before the reboot
    state = make_agent(host, source, tmp_path).step()
    assert state.phase == Phase.DONE, state.reason
    assert state.reason == f"pin went back to the booted {A}; update cancelled"
    assert calls(host, "switch")[-1] == ["switch", "--quiet", *argv]
    assert not state.holds_slot
    spec = host.status()["spec"]["image"]
    assert (spec["image"], spec["transport"]) == (ref, transport)


def test_a_failed_cancel_still_releases_the_slot(host, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path)
    agent.coordinator.fail_drain_once = True  # type: ignore[attr-defined]
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    with pytest.raises(RuntimeError):
        agent.step()
    host.inject(switch={"error": "401"})
    source.publish("worker", pin_text("worker", f"{REPO}@{A}"))
    agent = make_agent(host, source, tmp_path)
    state = agent.step()
    assert state.phase == Phase.DONE
    assert "cancelling the staged deployment failed too" in state.reason
    assert not state.holds_slot
    assert agent.coordinator.events[-1][0] == "release"  # type: ignore[attr-defined]


# -- argv and origin --


def test_an_image_starting_with_dashes_never_reaches_bootc_as_an_option(
    host, source, tmp_path
) -> None:
    text = pin_text("worker", f"{REPO}@{B}").replace(f"image: {REPO}@{B}", f"image: --apply@{B}")
    source.publish("worker", text)
    state = make_agent(host, source, tmp_path).step()
    assert state.phase == Phase.DEGRADED
    assert "spec.image" in state.reason
    assert calls(host, "switch") == []
    bootc = Bootc([str(host.bootc)])
    for attempt in (
        lambda: bootc.switch(f"--apply@{B}"),
        lambda: bootc.switch_to(ImageReference(image="--apply", transport="registry")),
    ):
        with pytest.raises(BootcError, match="refusing to switch"):
            attempt()
    assert calls(host, "switch") == []
    # and bootc itself (the stand-in, as clap): after `--` it is the image, not an option
    assert host.run("switch", "--apply").returncode == 2
    after = host.run("switch", "--", "--apply")
    assert after.returncode == 1  # a pull of an image named "--apply", which fails
    assert "unexpected argument" not in after.stderr


def test_a_pin_from_a_foreign_registry_is_refused(host, source, tmp_path) -> None:
    host.add_image("evil.example/pools/worker", B)
    source.publish("worker", pin_text("worker", f"evil.example/pools/worker@{B}"))
    state = make_agent(host, source, tmp_path).step()
    assert state.phase == Phase.DEGRADED
    assert (
        "spec.image is in 'evil.example/pools/worker', but MachineOSConfig worker pushes to "
        f"'{REPO}'" in state.reason
    )
    assert calls(host, "switch") == []


def test_a_pool_without_a_machineosconfig_applies_nothing(host, tmp_path) -> None:
    source = MemoryPinSource()
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"), PoolPolicy("worker"))
    state = make_agent(host, source, tmp_path).step()
    assert state.phase == Phase.DEGRADED
    assert "has no MachineOSConfig" in state.reason
    assert calls(host, "switch") == []


# -- /usr overlay --


def test_a_host_with_a_live_usr_overlay_is_degraded_not_done(host, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path)
    assert agent.step().phase == Phase.DONE
    assert host.run("usr-overlay").returncode == 0
    state = agent.step()
    assert state.phase == Phase.DEGRADED
    assert "/usr carries a live overlay (readWrite, transient" in state.reason
    host.reboot()  # a transient overlay is gone after a boot
    assert agent.step().phase == Phase.DONE


def test_an_update_verified_with_a_usr_overlay_is_degraded(host, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path)
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    assert agent.step().phase == Phase.REBOOTING
    host.run("usr-overlay")  # someone unlocked /usr right after the boot
    state = agent.step()
    assert state.phase == Phase.DEGRADED
    assert state.reason.startswith(f"booted {B}, but /usr carries a live overlay")


# -- live settings --

KEY_1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne admin@one"
KEY_2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITwo admin@two"
HASH = "$6$rounds=4096$salt$" + "x" * 86


def test_an_ssh_key_change_reaches_the_node_without_a_reboot(host, tmp_path) -> None:
    source = MemoryPinSource()
    first = NodeSettings(KARGS, (KEY_1,))
    source.publish(
        "worker",
        pin_text("worker", f"{REPO}@{A}", live=first.live_digest()),
        PoolPolicy("worker", push_spec=REPO),
        first,
    )
    agent = make_agent(host, source, tmp_path)
    assert agent.step().phase == Phase.DONE
    keys = tmp_path / "hostroot" / CORE_KEYS
    assert keys.read_text() == f"{KEY_1}\n"
    boot_id = host.boot_id_file.read_text()

    second = NodeSettings(KARGS, (KEY_1, KEY_2))  # the same image: only the keys moved
    source.publish(
        "worker", pin_text("worker", f"{REPO}@{A}", live=second.live_digest()), settings=second
    )
    state = agent.step()
    assert state.phase == Phase.DONE
    assert state.reason == f"booted {A}; applied core's SSH keys (2) live, without a reboot"
    assert keys.read_text() == f"{KEY_1}\n{KEY_2}\n"
    assert keys.stat().st_mode & 0o777 == 0o600
    assert host.boot_id_file.read_text() == boot_id
    assert calls(host, "switch") == []
    assert soft_reboots(host) == 0
    assert agent.step().reason == state.reason  # applied once


def test_removing_every_key_empties_the_key_file_without_a_reboot(host, tmp_path) -> None:
    # Images never carry core's keys, so when the pool stops giving any (the pin has no
    # liveConfigDigest any more) only the agent can take the last ones away.
    source = MemoryPinSource()
    first = NodeSettings(KARGS, (KEY_1,))
    source.publish(
        "worker",
        pin_text("worker", f"{REPO}@{A}", live=first.live_digest()),
        PoolPolicy("worker", push_spec=REPO),
        first,
    )
    agent = make_agent(host, source, tmp_path)
    assert agent.step().phase == Phase.DONE
    keys = tmp_path / "hostroot" / CORE_KEYS
    assert keys.read_text() == f"{KEY_1}\n"
    source.publish("worker", pin_text("worker", f"{REPO}@{A}"), settings=NodeSettings(KARGS))
    state = agent.step()
    assert state.phase == Phase.DONE
    assert state.reason == f"booted {A}; applied core's SSH keys (0) live, without a reboot"
    assert keys.read_text() == ""
    assert calls(host, "switch") == []
    assert soft_reboots(host) == 0


def test_a_password_hash_is_applied_live_and_never_written_down(host, tmp_path, caplog) -> None:
    got = tmp_path / "chpasswd-stdin"
    settings = NodeSettings(KARGS, (KEY_1,), HASH)
    source = MemoryPinSource()
    source.publish(
        "worker",
        pin_text("worker", f"{REPO}@{A}", live=settings.live_digest()),
        PoolPolicy("worker", push_spec=REPO),
        settings,
    )
    agent = make_agent(host, source, tmp_path)
    agent.live = LiveApplier(
        root=tmp_path / "hostroot", owner=None, chpasswd=("sh", "-c", f"cat > {got}")
    )
    caplog.set_level("DEBUG")
    state = agent.step()
    assert state.phase == Phase.DONE
    assert "password hash" in state.reason
    assert got.read_text() == f"core:{HASH}\n"  # on stdin only
    state_file = (tmp_path / "state/state.json").read_text()
    pin = pin_text("worker", f"{REPO}@{A}", live=settings.live_digest())
    for text in (state_file, pin, caplog.text, repr(settings), json.dumps(state.reason)):
        assert HASH not in text
        assert "$6$" not in text


def host_root_with_shadow(tmp_path: Path, core_hash: str) -> tuple[Path, LiveApplier]:
    """A host root with passwd/shadow/group and core in them, and an applier that sets
    passwords there with the real `chpasswd -e -R` (shadow-utils), as on a host."""
    root = tmp_path / "hostroot"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                     "core:x:1000:1000::/var/home/core:/bin/sh\n")  # fmt: skip
    (root / "etc/group").write_text("root:x:0:\ncore:x:1000:\n")
    (root / "etc/shadow").write_text(f"root:*:19000::::::\ncore:{core_hash}:19000::::::\n")
    (root / "etc/shadow").chmod(0o600)
    return root, LiveApplier(root=root, owner=None, chpasswd=("chpasswd", "-e", "-R", str(root)))


def shadow_hash(root: Path) -> str:
    line = next(
        ln for ln in (root / "etc/shadow").read_text().splitlines() if ln.startswith("core:")
    )
    return line.split(":")[1]


def publish(source: MemoryPinSource, settings: NodeSettings) -> None:
    source.publish(
        "worker",
        pin_text("worker", f"{REPO}@{A}", live=settings.live_digest()),
        PoolPolicy("worker", push_spec=REPO),
        settings,
    )


def test_a_password_hash_that_leaves_the_config_is_locked_as_mcd_does(host, tmp_path) -> None:
    # MCO's SetPasswordHash (pkg/daemon/update.go): the config's hash, or `*` without one.
    root, applier = host_root_with_shadow(tmp_path, "!*")
    source = MemoryPinSource()
    publish(source, NodeSettings(KARGS, (KEY_1,), HASH))
    agent = make_agent(host, source, tmp_path, live=applier)
    assert agent.step().phase == Phase.DONE
    assert shadow_hash(root) == HASH

    publish(source, NodeSettings(KARGS, (KEY_1,)))  # the hash is taken out of the config
    state = agent.step()
    assert state.phase == Phase.DONE, state.reason
    assert state.reason == (
        f"booted {A}; applied core's SSH keys (1) and a locked password for core "
        "(the config sets no hash) live, without a reboot"
    )
    assert shadow_hash(root) == "*"  # the old password no longer logs in

    publish(source, NodeSettings(KARGS, (KEY_1, KEY_2)))  # later key changes leave it be
    state = agent.step()
    assert state.reason == f"booted {A}; applied core's SSH keys (2) live, without a reboot"
    assert shadow_hash(root) == "*"
    assert calls(host, "switch") == []


def test_core_leaving_the_config_locks_the_password_the_agent_set(host, tmp_path) -> None:
    # No keys, no hash: the pin has no liveConfigDigest. MCD would clear the hash
    # (`usermod -p ""`: no password needed); this agent locks it instead.
    root, applier = host_root_with_shadow(tmp_path, "!*")
    source = MemoryPinSource()
    publish(source, NodeSettings(KARGS, (KEY_1,), HASH))
    agent = make_agent(host, source, tmp_path, live=applier)
    assert agent.step().phase == Phase.DONE
    source.publish("worker", pin_text("worker", f"{REPO}@{A}"), settings=NodeSettings(KARGS))
    state = agent.step()
    assert state.phase == Phase.DONE, state.reason
    assert "a locked password for core" in state.reason
    assert shadow_hash(root) == "*"
    assert (root / CORE_KEYS).read_text() == ""


def test_a_password_the_config_never_set_is_left_as_the_host_has_it(host, tmp_path) -> None:
    root, applier = host_root_with_shadow(tmp_path, "$6$byhand$" + "y" * 86)
    source = MemoryPinSource()
    publish(source, NodeSettings(KARGS, (KEY_1,)))
    state = make_agent(host, source, tmp_path, live=applier).step()
    assert state.reason == f"booted {A}; applied core's SSH keys (1) live, without a reboot"
    assert shadow_hash(root) == "$6$byhand$" + "y" * 86


def test_live_settings_that_do_not_match_the_pin_are_not_applied(host, tmp_path) -> None:
    source = MemoryPinSource()
    pinned = NodeSettings(KARGS, (KEY_1,))
    source.publish(
        "worker",
        pin_text("worker", f"{REPO}@{A}", live=pinned.live_digest()),
        PoolPolicy("worker", push_spec=REPO),
        NodeSettings(KARGS, (KEY_2,)),  # what the repository says now is something else
    )
    state = make_agent(host, source, tmp_path).step()
    assert state.phase == Phase.DEGRADED
    assert "cannot be read or do not match its liveConfigDigest" in state.reason
    assert not (tmp_path / "hostroot" / CORE_KEYS).exists()
