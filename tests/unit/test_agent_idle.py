"""The idle record of `agent --once` (reconciler/agent/idle.py): which states leave
nothing due, and that every fact a step decides on is in the key."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from reconciler.agent import idle
from reconciler.agent.state import IN_FLIGHT, AgentState, ImageTarget, Phase

A = ImageTarget("127.0.0.1:5000/pools/edge@sha256:" + "a" * 64, "sha256:" + "a" * 64)
DONE = AgentState(Phase.DONE, "booted", "edge", "1" * 40, A, kernel_arguments=("audit=1",))
FACTS = idle.Facts({"pool": "edge", "interval": 60.0}, "1" * 40, '{"kind": "BootcHost"}',
                   b'{"phase": "done"}\n', "boot-1")  # fmt: skip


@pytest.mark.parametrize("phase", sorted(Phase))
def test_only_done_and_rolled_back_are_settled(phase: Phase) -> None:
    state = dataclasses.replace(DONE, phase=phase)
    assert idle.settled(state, live=True) is (phase in (Phase.DONE, Phase.ROLLED_BACK))
    if phase in IN_FLIGHT:  # a health check, a reboot or rollback timer, a drain is due
        assert not idle.settled(state, live=False)


def test_a_held_slot_or_a_cordon_is_due_work() -> None:
    assert not idle.settled(dataclasses.replace(DONE, holds_slot=True), live=False)
    assert not idle.settled(dataclasses.replace(DONE, cordoned=True), live=False)


def test_unknown_kernel_arguments_are_read_again_when_live_settings_are_applied() -> None:
    unknown = dataclasses.replace(DONE, kernel_arguments=None)
    assert not idle.settled(unknown, live=True)
    assert idle.settled(unknown, live=False)  # --no-live-settings: never read
    rolled_back = dataclasses.replace(unknown, phase=Phase.ROLLED_BACK)
    assert idle.settled(rolled_back, live=True)  # a rolled-back step reads no settings


@pytest.mark.parametrize(
    "change",
    [
        {"config": {"pool": "edge", "interval": 30.0}},
        {"config": {"pool": "edge", "interval": 60.0, "allowed_signers": "/etc/s"}},
        {"revision": "2" * 40},
        {"bootc_status": '{"kind": "BootcHost", "status": {}}'},
        {"state": b'{"phase": "done"} \n'},
        {"boot_id": "boot-2"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_every_fact_is_in_the_key(change: dict[str, object]) -> None:
    assert dataclasses.replace(FACTS, **change).key() != FACTS.key()  # type: ignore[arg-type]


def test_the_key_depends_on_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    before = FACTS.key()
    assert FACTS.key() == before
    monkeypatch.setattr(idle, "__version__", "9.9.9")
    assert FACTS.key() != before
    monkeypatch.undo()
    monkeypatch.setattr(idle, "program_fingerprint", lambda: "another build")
    assert FACTS.key() != before


def test_the_program_fingerprint_covers_every_module(tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "agent.py").write_text("x = 1\n")
    (tmp_path / "__init__.py").write_text("")
    first = idle.program_fingerprint(tmp_path)
    assert idle.program_fingerprint(tmp_path) == first
    (tmp_path / "agent" / "__pycache__").mkdir()
    (tmp_path / "agent" / "__pycache__" / "agent.cpython-311.py").write_text("")
    assert idle.program_fingerprint(tmp_path) == first  # byte code is not the program
    os.utime(tmp_path / "agent" / "agent.py", ns=(0, 10**18))
    second = idle.program_fingerprint(tmp_path)
    assert second != first  # an upgraded module, same size
    (tmp_path / "agent" / "idle.py").write_text("")
    assert idle.program_fingerprint(tmp_path) not in (first, second)
    assert idle.program_fingerprint() == idle.program_fingerprint()  # the real package


def test_the_key_does_not_depend_on_the_order_of_the_options() -> None:
    reordered = dataclasses.replace(FACTS, config={"interval": 60.0, "pool": "edge"})
    assert reordered.key() == FACTS.key()


def test_a_record_round_trips_and_a_bad_one_is_no_record(tmp_path: Path) -> None:
    record = idle.IdleRecord(tmp_path)
    assert record.key() is None
    record.save(FACTS)
    assert record.key() == FACTS.key()
    assert record.path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["idle.json"]  # no temp file left
    for junk in (b"", b"{", b"[]", b'{"version": 2, "key": "x"}', b'{"version": 1}'):
        record.path.write_bytes(junk)
        assert record.key() is None, junk
    record.clear()
    record.clear()  # clearing nothing is fine
    assert not record.path.exists()
