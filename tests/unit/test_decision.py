"""The per-pool decision (`core.decision.decide`), as a table: every combination of what
the plan says, the current pin, a hold and an earlier failed build, and what a pass does
with the pool. The loop and `plan`'s prediction both call this one function."""

from __future__ import annotations

import pytest

from reconciler.core import decision, model, pins

INPUTS = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64
REPO = "registry.example.com/fleet/worker"
LIVE = "sha256:" + "5" * 64
LIVE_2 = "sha256:" + "6" * 64
TARGET = decision.Target(INPUTS, REPO, "amd64")
LIVE_TARGET = decision.Target(INPUTS, REPO, "amd64", LIVE)


def pin(
    inputs: str = INPUTS, repo: str = REPO, arch: str = "amd64", live: str | None = None
) -> pins.Pin:
    digest = "sha256:" + "3" * 64
    return pins.Pin(
        metadata=model.ObjectMeta(name="worker"),
        spec=pins.PinSpec(
            pool="worker",
            image=f"{repo}@{digest}",
            digest=digest,
            architecture=arch,
            rendered_config="rendered-worker-0",
            inputs_digest=inputs,
            base_image="quay.io/fedora/fedora-bootc:42",
            source_commit="a" * 40,
            build=pins.BuildFacts(builder="native", base_image_digest="sha256:" + "4" * 64),
            live_config_digest=live,
        ),
    )


RUNNING = decision.BuildState(INPUTS, True, "buildah build of ... running (this reconciler)")
RUNNING_OLD = decision.BuildState(OTHER, True, "buildah build of ... running (this reconciler)")
BUILT = decision.BuildState(INPUTS, False, "")
HOLD = "pin set by Admin in abc (revert); held until the pool's inputs change"
# (id, decide(...) keywords, expected action, expected reuse_only[, expected live_only])
TABLE = [
    ("config problem, pinned", {"target": None, "problem": "bad", "pin": pin()}, "stalled", False),
    ("config problem, never pinned", {"target": None, "problem": "bad"}, "stalled", False),
    ("transient problem", {"target": None, "problem": "503", "transient": True}, "failed", False),
    ("problem beats a hold", {"target": None, "problem": "bad", "pin": pin(), "hold": HOLD}, "stalled", False),
    ("unmanaged", {"target": None}, "unmanaged", False),
    ("unmanaged with a stale pin", {"target": None, "pin": pin()}, "unmanaged", False),
    ("held", {"target": TARGET, "pin": pin(OTHER), "hold": HOLD}, "held", False),
    ("held even when it matches", {"target": TARGET, "pin": pin(), "hold": HOLD}, "held", False),
    ("a hold without a pin builds", {"target": TARGET, "hold": HOLD}, "build", False),
    ("unchanged", {"target": TARGET, "pin": pin()}, "unchanged", False),
    ("inputs changed", {"target": TARGET, "pin": pin(OTHER)}, "build", False),
    ("push repository changed", {"target": TARGET, "pin": pin(repo=REPO + "-2")}, "build", False),
    ("repository prefix is not the repository", {"target": decision.Target(INPUTS, REPO[:-1], "amd64"), "pin": pin()}, "build", False),
    ("architecture changed", {"target": TARGET, "pin": pin(arch="arm64")}, "build", False),
    ("never pinned", {"target": TARGET}, "build", False),
    ("failed before for these inputs", {"target": TARGET, "failed_inputs": INPUTS}, "build", True),
    ("failed before for other inputs", {"target": TARGET, "failed_inputs": OTHER}, "build", False),
    ("failed before, but the pin matches", {"target": TARGET, "pin": pin(), "failed_inputs": INPUTS}, "unchanged", False),
    # live settings (issue 12): the same image with another liveConfigDigest is re-pinned
    ("live settings unchanged", {"target": LIVE_TARGET, "pin": pin(live=LIVE)}, "unchanged", False),
    ("live settings changed", {"target": LIVE_TARGET, "pin": pin(live=LIVE_2)}, "build", False, True),
    ("live settings added", {"target": LIVE_TARGET, "pin": pin()}, "build", False, True),
    ("live settings removed", {"target": TARGET, "pin": pin(live=LIVE)}, "build", False, True),
    ("live and image changed", {"target": LIVE_TARGET, "pin": pin(OTHER, live=LIVE_2)}, "build", False, False),
    ("live changed, other repository", {"target": LIVE_TARGET, "pin": pin(repo=REPO + "-2")}, "build", False, False),
    ("live changed, but held", {"target": LIVE_TARGET, "pin": pin(live=LIVE_2), "hold": HOLD}, "held", False),
    ("live changed, never pinned", {"target": LIVE_TARGET}, "build", False, False),
    # background builds (issue 13): a running build of the target's inputs keeps the pin
    ("building these inputs", {"target": TARGET, "pin": pin(OTHER), "build": RUNNING}, "building", False),
    ("building an obsolete build", {"target": TARGET, "pin": pin(OTHER), "build": RUNNING_OLD}, "build", False),
    ("building, but held", {"target": TARGET, "pin": pin(OTHER), "hold": HOLD, "build": RUNNING}, "held", False),
    ("building, but a config problem", {"target": None, "problem": "bad", "pin": pin(), "build": RUNNING}, "stalled", False),
    ("built: pin it", {"target": TARGET, "pin": pin(OTHER), "build": BUILT}, "build", False),
]  # fmt: skip

BUILD_FAILED = "pool worker: the build failed (a RUN step or the Containerfile)"


@pytest.mark.parametrize(
    ("kw", "action", "reuse_only", "live_only"),
    [(*t[1:], *(() if len(t) > 4 else (False,))) for t in TABLE],
    ids=[t[0] for t in TABLE],
)
def test_decision_table(kw: dict, action: str, reuse_only: bool, live_only: bool) -> None:  # type: ignore[type-arg]
    got = decision.decide(**kw)
    assert (got.action, got.reuse_only, got.live_only) == (action, reuse_only, live_only)
    if action in ("stalled", "failed"):
        assert got.reason == kw["problem"]  # the pool's status says why
    if action == "held":
        assert got.reason == HOLD


@pytest.mark.parametrize(("transient", "action"), [(False, "stalled"), (True, "failed")])
def test_a_failed_background_build_is_reported_like_a_failed_build(
    transient: bool, action: str
) -> None:
    failed = decision.BuildState(INPUTS, False, BUILD_FAILED, failed=True, transient=transient)
    got = decision.decide(target=TARGET, pin=pin(OTHER), build=failed)
    assert (got.action, got.reason) == (action, BUILD_FAILED)
    # for good: these inputs are recorded, so later passes do not build them again
    assert got.failed_inputs == (None if transient else INPUTS)
    # a failure of inputs the pool has left says nothing about its new inputs
    old = decision.BuildState(OTHER, False, BUILD_FAILED, failed=True, transient=transient)
    assert decision.decide(target=TARGET, pin=pin(OTHER), build=old).action == "build"


def test_a_running_build_says_who_builds_in_the_pools_reason() -> None:
    got = decision.decide(target=TARGET, build=RUNNING)
    assert got.reason == RUNNING.message
