"""The progressive rollout and the fleet counts (`reconciler.core.rollout`), as an agent
and the reconciler both judge them: which nodes may start, when the rest may follow,
when the pool pauses, and MCO's counts."""

from __future__ import annotations

import pytest

from reconciler.core import model, rollout
from reconciler.core.rollout import NodeView

OLD, NEW = "r/p@sha256:" + "a" * 64, "r/p@sha256:" + "b" * 64
NOW = 10_000.0


def fleet(n: int, **overrides: NodeView) -> list[NodeView]:
    nodes = {f"n{i}": NodeView(f"n{i}", "done", OLD, OLD, NOW - 5000) for i in range(n)}
    nodes.update(overrides)
    return sorted(nodes.values(), key=lambda v: v.name)


def done(name: str, since: float = NOW - 5000) -> NodeView:
    return NodeView(name, "done", NEW, NEW, since)


def policy(**kw: object) -> model.Rollout:
    return model.Rollout.model_validate(kw)


@pytest.mark.parametrize(("canary", "size", "batch"), [(1, 10, 1), ("10%", 10, 1),
                         ("25%", 10, 3), ("1%", 10, 1), (20, 10, 10), ("0", 10, 0)])  # fmt: skip
def test_the_canary_batch_is_n_nodes_or_a_percentage_rounded_up(canary, size, batch) -> None:
    state = rollout.progress(policy(canary=canary), fleet(size), NEW, NOW)
    assert len(state.canary) == batch
    assert state.canary == tuple(sorted(f"n{i}" for i in range(size))[:batch])


def test_only_the_canary_starts_until_it_is_done_and_has_soaked() -> None:
    p = policy(canary=1, soak_seconds=600)
    state = rollout.progress(p, fleet(10), NEW, NOW)
    assert state.phase == rollout.CANARY
    assert state.may_start("n0") == (True, "")
    allowed, why = state.may_start("n5")
    assert not allowed
    assert "canary n0 updating to sha256:bbbbbbbbbbbb first" in why
    soaking = rollout.progress(p, fleet(10, n0=done("n0", NOW - 60)), NEW, NOW)
    assert soaking.phase == rollout.SOAKING
    assert not soaking.may_start("n5")[0]
    soaked = rollout.progress(p, fleet(10, n0=done("n0", NOW - 600)), NEW, NOW)
    assert soaked.phase == rollout.PROGRESSING
    assert soaked.may_start("n5") == (True, "")


def test_a_canary_that_is_not_ready_does_not_soak() -> None:
    p = policy(canary=1, soak_seconds=60)
    unready = NodeView("n0", "done", NEW, NEW, NOW - 6000, available=False)
    assert rollout.progress(p, fleet(3, n0=unready), NEW, NOW).phase == rollout.SOAKING


def test_the_batch_does_not_move_once_begun() -> None:
    # n7 already took the new pin (say, the canary chosen before n0 joined): it stays the canary
    moving = NodeView("n7", "staged", OLD, NEW, NOW)
    state = rollout.progress(policy(canary=1), fleet(10, n7=moving), NEW, NOW)
    assert state.canary == ("n7",)


def test_a_failed_canary_pauses_the_pool_until_git_changes() -> None:
    failed = NodeView("n0", "rolled-back", OLD, NEW, NOW)
    state = rollout.progress(policy(canary=1, max_degraded=3), fleet(10, n0=failed), NEW, NOW)
    assert state.phase == rollout.PAUSED
    assert state.failed == ("n0",)
    assert "canary node n0 failed" in state.reason
    assert "resume with a new pin or a rollout change in Git" in state.reason
    assert not state.may_start("n0")[0]
    assert not state.may_start("n4")[0]
    # a new pin (a fix) is another rollout: the old failure is not on it
    fixed = rollout.progress(policy(canary=1), fleet(10, n0=failed), "r/p@sha256:" + "c" * 64, NOW)
    assert fixed.phase == rollout.CANARY


def test_more_failures_than_max_degraded_pause_the_rest() -> None:
    nodes = fleet(
        10, n0=done("n0"), n1=NodeView("n1", "degraded", OLD, NEW, NOW),
        n2=NodeView("n2", "rolled-back", OLD, NEW, NOW),
    )  # fmt: skip
    assert rollout.progress(policy(max_degraded=2), nodes, NEW, NOW).phase == rollout.PROGRESSING
    state = rollout.progress(policy(max_degraded="10%"), nodes, NEW, NOW)
    assert state.phase == rollout.PAUSED
    assert "2 of 10 nodes failed (n1, n2), more than maxDegraded 10%" in state.reason


def test_without_a_policy_nothing_is_held_back() -> None:
    failed = NodeView("n0", "rolled-back", OLD, NEW, NOW)
    state = rollout.progress(None, fleet(3, n0=failed), NEW, NOW)
    assert state.phase == rollout.PROGRESSING
    assert state.may_start("n1") == (True, "")


def test_fleet_counts_in_mcos_names() -> None:
    nodes = [
        done("a"),
        NodeView("b", "done", NEW, NEW, NOW, available=False),  # updated, NotReady
        NodeView("c", "rebooting", OLD, NEW, NOW),
        NodeView("d", "rolled-back", OLD, NEW, NOW),
        NodeView("e", "degraded", OLD, NEW, NOW),
        NodeView("f", "idle", OLD, NEW, NOW),
        NodeView("g"),  # no agent report yet
    ]
    assert rollout.count(nodes, NEW) == rollout.FleetCounts(
        machine_count=7, updated_machine_count=2, ready_machine_count=1,
        unavailable_machine_count=2, degraded_machine_count=2,
    )  # fmt: skip


def test_node_views_read_the_agents_annotations() -> None:
    node = {
        "metadata": {"name": "n1", "annotations": {
            rollout.STATE: "done", rollout.CURRENT_IMAGE: NEW, rollout.DESIRED_IMAGE: NEW,
            rollout.POOL: "edge", rollout.STATE_SINCE: "2026-12-01T10:00:00Z",
            rollout.REASON: "booted",
        }},
        "spec": {"unschedulable": True},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }  # fmt: skip
    view = rollout.node_view(node)
    assert (view.pool, view.phase, view.reason, view.available) == ("edge", "done", "booted", False)
    assert view.since == 1796119200.0
    assert view.updated(NEW)
    assert rollout.node_view({"metadata": {"name": "bare"}}).phase == ""


@pytest.mark.parametrize("bad", [{"canary": "ten"}, {"canary": -1}, {"maxDegraded": "5 %"},
                                 {"soakSeconds": -5}, {"canaryNodes": 1}])  # fmt: skip
def test_a_bad_rollout_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's ValidationError is a ValueError
        model.Rollout.model_validate(bad)


def test_a_bad_rollout_in_the_repository_names_file_field_and_fix() -> None:
    from reconciler.core import load

    text = (
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineOSConfig\n"
        "metadata:\n  name: edge\nspec:\n  machineConfigPool:\n    name: edge\n"
        "  renderedImagePushSpec: r.example.com/edge:latest\n  rollout:\n    canary: ten\n"
    )
    problems = [str(p) for p in load.load_repository({"machineosconfigs/edge.yaml": text}).problems]
    assert any(
        p.startswith("machineosconfigs/edge.yaml:10: MachineOSConfig edge: spec.rollout.canary:")
        and "write e.g. 2 or '10%'" in p
        for p in problems
    ), problems
