"""The node agent's state machine against the bootc stand-in (state mode).

Real: the agent's code, the bootc CLI calls it makes (a separate process, the
stand-in following the documented contract), the persisted state file. Stand-in:
bootc itself (tests/fixtures/bootc.py), reboots (the stand-in's `_reboot`), pins in
memory (`MemoryPinSource`; the Git source is covered in test_agent_cli.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.bootc import Bootc, Timeouts
from reconciler.agent import health
from reconciler.agent.agent import Agent, AgentConfig
from reconciler.agent.coordination import DrainResult, NoCoordination
from reconciler.agent.source import MemoryPinSource, PoolPolicy
from reconciler.agent.state import Phase, StateStore
from tests.fixtures.bootc import FakeHost, pin_text

REPO = "127.0.0.1:5000/pools/worker"
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


class RecordingCoordinator(NoCoordination):
    """No coordination, but remembers what was asked and can fail on demand."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.events: list[tuple[str, str]] = []
        self.fail_drain_once = False

    def _note(self, what: str) -> None:
        self.events.append((what, self.store.load().phase.value))

    def acquire(self, policy: PoolPolicy, image: str = ""):  # type: ignore[no-untyped-def]
        self._note("acquire")
        return super().acquire(policy, image)

    def release(self, policy: PoolPolicy) -> None:
        self._note("release")

    def cordon(self) -> bool:
        self._note("cordon")
        return True

    def drain(self) -> DrainResult:
        self._note("drain")
        if self.fail_drain_once:
            self.fail_drain_once = False
            raise RuntimeError("agent killed while draining")
        return DrainResult(True)

    def uncordon(self) -> None:
        self._note("uncordon")


def make_agent(host: FakeHost, source: MemoryPinSource, tmp_path: Path, **config: Any) -> Agent:
    """An agent for pool worker on `host`; `soft_reboots` and `live` go to the Agent,
    the rest to its AgentConfig."""
    store = StateStore(tmp_path / "state")
    extra = {k: config.pop(k) for k in ("soft_reboots", "live") if k in config}
    return Agent(
        config=AgentConfig(pool="worker", **config),
        source=source,
        bootc=Bootc([str(host.bootc)], timeouts=Timeouts(status=10, switch=30, rollback=10)),
        coordinator=RecordingCoordinator(store),
        store=store,
        health_checks=[health.UnitActive(systemctl=str(host.systemctl))],
        reboot_command=host.reboot_command,
        boot_id=lambda: health.read_boot_id(host.boot_id_file),
        **extra,
    )


@pytest.fixture
def host(bootc_host: FakeHost) -> FakeHost:
    for digest in (A, B, C):
        bootc_host.add_image(REPO, digest, kargs=["quiet"])
    bootc_host.install(f"{REPO}@{A}")
    return bootc_host


@pytest.fixture
def source() -> MemoryPinSource:
    src = MemoryPinSource()
    src.publish("worker", pin_text("worker", f"{REPO}@{A}"), PoolPolicy("worker", push_spec=REPO))
    return src


def switches(host: FakeHost) -> list[list[str]]:
    return [c for c in host.calls() if c[:1] == ["switch"]]


def test_nothing_to_do_when_the_pin_is_booted(host: FakeHost, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path)
    state = agent.step()
    assert state.phase == Phase.DONE
    assert switches(host) == []
    saved = tmp_path / "state/state.json"
    before = saved.stat().st_mtime_ns
    assert make_agent(host, source, tmp_path).step() == state  # a later run, same answer
    assert saved.stat().st_mtime_ns == before  # and nothing rewritten


def test_applies_a_new_pin_by_digest_and_verifies_after_reboot(host, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path)
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))

    state = agent.step()
    # switched by digest, without --apply, and asked the host to reboot
    assert switches(host) == [["switch", "--quiet", "--", f"{REPO}@{B}"]]
    assert state.phase == Phase.REBOOTING
    assert host.booted_digest == B  # the stand-in's power button ran

    state = agent.step()
    assert state.phase == Phase.DONE, state.reason
    assert "health checks passed" in state.reason
    events = [e for e, _ in agent.coordinator.events]  # type: ignore[attr-defined]
    assert events == ["release", "acquire", "acquire", "cordon", "drain", "uncordon", "release"]
    # the slot was taken while idle, drained while draining: each phase saved first
    assert ("drain", "draining") in agent.coordinator.events  # type: ignore[attr-defined]
    assert agent.step().phase == Phase.DONE
    assert len(switches(host)) == 1


def test_unhealthy_boot_rolls_back_and_never_retries_that_digest(host, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path, verify_grace=0)
    host.inject(boot={B: "unhealthy"})
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))

    assert agent.step().phase == Phase.REBOOTING
    state = agent.step()  # verify fails: rollback queued, reboot requested
    assert state.phase == Phase.ROLLING_BACK
    assert [c for c in host.calls() if c[:1] == ["rollback"]] == [["rollback"]]
    state = agent.step()
    assert state.phase == Phase.ROLLED_BACK
    assert "boot-complete.target is failed" in state.reason
    assert host.booted_digest == A
    assert state.failed_digest == B

    for _ in range(3):  # polls later: the same pin is not tried again
        assert agent.step().phase == Phase.ROLLED_BACK
    assert len(switches(host)) == 1

    source.publish("worker", pin_text("worker", f"{REPO}@{C}"))  # a new pin clears it
    assert agent.step().phase == Phase.REBOOTING
    state = agent.step()
    assert state.phase == Phase.DONE
    assert state.failed_digest is None
    assert host.booted_digest == C


def test_a_boot_that_falls_back_is_reported_rolled_back(host, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path)
    host.inject(boot={B: "fallback"})
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    agent.step()
    state = agent.step()
    assert state.phase == Phase.ROLLED_BACK
    assert "fell back" in state.reason
    assert [c for c in host.calls() if c[:1] == ["rollback"]] == []  # already on A
    agent.step()
    assert len(switches(host)) == 1
    source.publish("worker", pin_text("worker", f"{REPO}@{A}"))  # the admin reverts the pin
    state = agent.step()
    assert (state.phase, state.failed_digest) == (Phase.DONE, None)


def test_a_crash_mid_drain_resumes_draining_without_switching_again(host, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path)
    agent.coordinator.fail_drain_once = True  # type: ignore[attr-defined]
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    with pytest.raises(RuntimeError):
        agent.step()
    assert StateStore(tmp_path / "state").load().phase == Phase.DRAINING

    fresh = make_agent(host, source, tmp_path)  # a new process after the crash
    assert fresh.step().phase == Phase.REBOOTING
    assert fresh.step().phase == Phase.DONE
    assert len(switches(host)) == 1


def test_rollback_is_not_run_twice_when_the_reboot_did_not_happen(host, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path, verify_grace=0, reboot_retry=0)
    host.inject(boot={B: "unhealthy"})
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    agent.step()
    agent.reboot_command = ["false"]  # the rollback reboot fails to happen
    state = agent.step()
    assert state.phase == Phase.ROLLING_BACK
    assert "reboot command exited 1" in state.reason
    assert agent.step().phase == Phase.ROLLING_BACK  # retried the reboot only
    agent.reboot_command = host.reboot_command
    state = agent.step()
    assert state.phase == Phase.ROLLING_BACK  # the reboot happened in this step
    assert agent.step().phase == Phase.ROLLED_BACK
    assert host.booted_digest == A
    # a second `bootc rollback` would have reverted the first (contract §3)
    assert [c for c in host.calls() if c[:1] == ["rollback"]] == [["rollback"]]


def test_a_pin_reverted_before_reboot_cancels_by_switching_back(host, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path)
    agent.coordinator.fail_drain_once = True  # type: ignore[attr-defined]
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    with pytest.raises(RuntimeError):
        agent.step()
    source.publish("worker", pin_text("worker", f"{REPO}@{A}"))
    state = make_agent(host, source, tmp_path).step()
    assert state.phase == Phase.DONE
    assert "cancelled" in state.reason
    assert switches(host)[-1] == ["switch", "--quiet", "--", f"{REPO}@{A}"]
    assert host.status()["status"]["rollback"] is None or host.status()["spec"]["image"][
        "image"
    ].endswith(A)
    assert host.status()["status"]["rollbackQueued"] is False


def test_a_paused_pool_starts_nothing(host, source, tmp_path) -> None:
    source.publish(
        "worker",
        pin_text("worker", f"{REPO}@{B}"),
        PoolPolicy("worker", paused=True, push_spec=REPO),
    )
    state = make_agent(host, source, tmp_path).step()
    assert state.phase == Phase.IDLE
    assert "paused" in state.reason
    assert switches(host) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spec: [not a pin", "not valid YAML"),
        (
            pin_text("worker", f"{REPO}@{B}").replace(f"image: {REPO}@{B}", f"image: {REPO}:v2"),
            "spec.image",
        ),
        (pin_text("other", f"{REPO}@{B}"), "spec.pool is 'other'"),
        (pin_text("worker", f"{REPO}@{B}", architecture="arm64"), "pin is for arm64"),
    ],
    ids=["malformed", "not-by-digest", "other-pool", "other-arch"],
)
def test_a_bad_pin_degrades_with_a_reason_and_switches_nothing(
    host, source, tmp_path, text, expected
) -> None:
    source.publish("worker", text)
    state = make_agent(host, source, tmp_path).step()
    assert state.phase == Phase.DEGRADED
    assert expected in state.reason
    assert switches(host) == []
    saved = json.loads((tmp_path / "state/state.json").read_text())
    assert saved["phase"] == "degraded"
    assert expected in saved["reason"]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"garbage": "Segmentation fault (core dumped)"}, "not JSON"),
        ({"garbage": '{"kind": "Something"}'}, "not a BootcHost"),
        ({"hang": True}, "did not finish within 1s"),
    ],
    ids=["garbage", "wrong-json", "hang"],
)
def test_a_broken_bootc_degrades_with_a_reason(host, source, tmp_path, fault, expected) -> None:
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    agent = make_agent(host, source, tmp_path)
    agent.bootc.timeouts = Timeouts(status=1)
    host.inject(status=fault)
    state = agent.step()
    assert state.phase == Phase.DEGRADED
    assert expected in state.reason
    assert switches(host) == []


def test_a_refused_pull_degrades_releases_the_slot_and_retries_later(
    host, source, tmp_path
) -> None:
    agent = make_agent(host, source, tmp_path)
    host.inject(switch={"error": "401"})
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    state = agent.step()
    assert state.phase == Phase.DEGRADED
    assert "unauthorized: authentication required" in state.reason
    assert not state.holds_slot
    assert agent.coordinator.events[-1][0] == "release"  # type: ignore[attr-defined]
    host.inject()  # the pull secret is fixed
    assert agent.step().phase == Phase.REBOOTING
    assert agent.step().phase == Phase.DONE


def test_an_unreadable_state_file_starts_over_safely(host, source, tmp_path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state/state.json").write_text("{half a file")
    state = make_agent(host, source, tmp_path).step()
    assert state.phase == Phase.DONE
    assert (tmp_path / "state/state.json.unreadable").exists()


class CrashAfterSwitch(Bootc):
    """bootc did its work, then the agent died before it could write `staged`."""

    def switch(self, image: str, **kwargs):  # type: ignore[no-untyped-def]
        super().switch(image, **kwargs)
        raise SystemExit("killed right after bootc switch")


def test_a_crash_right_after_switch_does_not_switch_again(host, source, tmp_path) -> None:
    agent = make_agent(host, source, tmp_path)
    agent.bootc = CrashAfterSwitch([str(host.bootc)])
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    with pytest.raises(SystemExit):
        agent.step()
    assert StateStore(tmp_path / "state").load().phase == Phase.IDLE
    assert host.status()["status"]["staged"]["image"]["imageDigest"] == B

    fresh = make_agent(host, source, tmp_path)
    assert fresh.step().phase == Phase.REBOOTING  # found B staged: straight on
    assert fresh.step().phase == Phase.DONE
    assert len(switches(host)) == 1


def test_a_requested_reboot_that_has_not_happened_yet_is_not_repeated(
    host, source, tmp_path
) -> None:
    agent = make_agent(host, source, tmp_path)  # reboot_retry: 10 minutes
    agent.reboot_command = ["true"]  # `systemctl reboot` queued; the agent ran again first
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    marker = tmp_path / "reboots"
    agent.step()
    agent.reboot_command = ["sh", "-c", f"echo x >> {marker}"]
    for _ in range(2):
        assert agent.step().phase == Phase.REBOOTING
    assert not marker.exists()
    assert len(switches(host)) == 1
    host.reboot()  # the reboot happens
    assert agent.step().phase == Phase.DONE


def test_health_commands_and_pending_units(host, source, tmp_path) -> None:
    flag = tmp_path / "app-ready"
    agent = make_agent(host, source, tmp_path, verify_grace=3600)
    agent.health_checks = [
        *agent.health_checks,
        health.CommandCheck(("test", "-e", str(flag)), timeout=5),
    ]
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    agent.step()
    host.units_file.write_text(json.dumps({"boot-complete.target": "activating"}))
    state = agent.step()
    assert state.phase == Phase.VERIFYING  # the boot is not over: wait, within the grace
    assert "boot-complete.target is not active yet (activating)" in state.reason
    host.units_file.write_text(json.dumps({"boot-complete.target": "active"}))
    state = agent.step()  # the unit is fine, the admin's check not yet: ask again later
    assert state.phase == Phase.VERIFYING
    assert f"health check `test -e {flag}` failed (exit 1)" in state.reason
    flag.touch()
    assert agent.step().phase == Phase.DONE
    assert host.booted_digest == B


def test_a_boot_that_never_completes_rolls_back_after_the_grace(host, source, tmp_path) -> None:
    now = [1_000_000.0]
    agent = make_agent(host, source, tmp_path, verify_grace=300)
    agent.clock = lambda: now[0]
    source.publish("worker", pin_text("worker", f"{REPO}@{B}"))
    agent.step()
    host.units_file.write_text(json.dumps({"boot-complete.target": "inactive"}))
    assert agent.step().phase == Phase.VERIFYING
    now[0] += 301
    state = agent.step()
    assert state.phase == Phase.ROLLING_BACK
    assert "still not healthy 300s after boot: boot-complete.target is not active yet" in (
        state.reason
    )


def test_a_pool_that_does_not_exist_degrades_the_host_and_says_so_once(
    host, source, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    agent = make_agent(host, source, tmp_path)
    reports: list[tuple[str, str]] = []
    agent.coordinator.report = lambda r: reports.append((r.phase, r.reason))  # type: ignore[method-assign]
    why = "pool 'wrker' does not exist on branch 'main' (pools: worker)"
    for _ in range(3):  # the long-running agent asks on every poll
        state = agent.cannot_follow(why)
    assert (state.phase, state.reason) == (Phase.DEGRADED, why)
    assert agent.store.load().reason == why  # persisted, as `agent --once` would show it
    assert reports == [("degraded", why)]  # reported once (node annotations), not per poll
    assert host.calls() == []  # bootc is not touched
