"""The fleet as the agents report it: per-pool counts and the progressive rollout.

Stage: pure, shared by the node agent (may this node start the update?) and the
reconciler (the pool's status in the cluster), so both judge the same way. Input: the
pool's nodes as `NodeView`s (read from the agents' node annotations, named here), the
pinned image, the pool's `Rollout` policy and the time. Output: `FleetCounts` in MCO's
names and a `RolloutState` (phase, reason, canary nodes, failed nodes).

Counts follow MCO (`controller/node/status.go`, mco-semantics §3), with the agent's
state annotation in place of MCO's: updated = done on the pinned image; ready =
updated, Ready and schedulable; unavailable = not Ready, cordoned, or part-way through
an update; degraded = `degraded` or `rolled-back` (the pin failed there).

Rollout phases: `Canary` (the first batch is updating; others wait), `Soaking` (the
canary runs the pin; waiting out `soakSeconds`), `Progressing`, `Complete`, `Paused`
(more nodes failed the pin than `maxDegraded` allows, or a canary node did). A paused
rollout starts no node until Git changes: rolled-back nodes never retry the digest, so
the failures stand until a new pin, or a policy with a higher threshold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.core import model

ANNOTATION_PREFIX = f"{model.OUR_GROUP}/"
STATE = ANNOTATION_PREFIX + "state"
REASON = ANNOTATION_PREFIX + "reason"
CURRENT_IMAGE = ANNOTATION_PREFIX + "current-image"
DESIRED_IMAGE = ANNOTATION_PREFIX + "desired-image"
POOL = ANNOTATION_PREFIX + "pool"
STATE_SINCE = ANNOTATION_PREFIX + "state-since"

DONE = "done"
FAILED_PHASES = frozenset({"degraded", "rolled-back"})
IN_FLIGHT_PHASES = frozenset({"staged", "draining", "rebooting", "verifying", "rolling-back"})

# RolloutState.phase
CANARY = "Canary"
SOAKING = "Soaking"
PROGRESSING = "Progressing"
COMPLETE = "Complete"
PAUSED = "Paused"


@dataclass(frozen=True)
class NodeView:
    """One node as its agent reported it (empty strings: never reported)."""

    name: str
    phase: str = ""
    current_image: str = ""
    desired_image: str = ""
    since: float | None = None
    """When the agent entered `phase`."""
    available: bool = True
    """Ready and schedulable."""
    pool: str = ""
    reason: str = ""

    def updated(self, image: str) -> bool:
        return bool(image) and self.phase == DONE and self.current_image == image

    def failed(self, image: str) -> bool:
        return bool(image) and self.phase in FAILED_PHASES and self.desired_image == image


def node_view(node: Mapping[str, Any]) -> NodeView:
    """A Node object (as the API returns it) → what its agent reported."""
    meta = node.get("metadata") or {}
    notes = meta.get("annotations") or {}
    ready = False
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
    return NodeView(
        name=str(meta.get("name", "")),
        phase=str(notes.get(STATE, "")),
        current_image=str(notes.get(CURRENT_IMAGE, "")),
        desired_image=str(notes.get(DESIRED_IMAGE, "")),
        since=parse_time(notes.get(STATE_SINCE)),
        available=ready and not (node.get("spec") or {}).get("unschedulable"),
        pool=str(notes.get(POOL, "")),
        reason=str(notes.get(REASON, "")),
    )


def parse_time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class FleetCounts:
    machine_count: int = 0
    updated_machine_count: int = 0
    ready_machine_count: int = 0
    unavailable_machine_count: int = 0
    degraded_machine_count: int = 0


def count(nodes: Iterable[NodeView], image: str) -> FleetCounts:
    """MCO's machine counts for the pool's `nodes` against the pinned `image`."""
    nodes = list(nodes)
    updated = [n for n in nodes if n.updated(image)]
    return FleetCounts(
        machine_count=len(nodes),
        updated_machine_count=len(updated),
        ready_machine_count=sum(n.available for n in updated),
        unavailable_machine_count=sum(
            (not n.available) or n.phase in IN_FLIGHT_PHASES for n in nodes
        ),
        degraded_machine_count=sum(n.phase in FAILED_PHASES for n in nodes),
    )


def scale(value: int | str | None, size: int, *, round_up: bool) -> int:
    """A NodeCount (2, "2", "25%") of a pool of `size` nodes."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if value.endswith("%"):
        exact = int(value[:-1]) * size / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


@dataclass(frozen=True)
class RolloutState:
    phase: str
    reason: str = ""
    canary: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    def may_start(self, node: str) -> tuple[bool, str]:
        """Whether `node` may start updating now, and if not, why."""
        if self.phase == PAUSED:
            return False, self.reason
        if self.phase in (CANARY, SOAKING) and node not in self.canary:
            return False, self.reason
        return True, ""


def progress(
    policy: model.Rollout | None, nodes: Sequence[NodeView], image: str, now: float
) -> RolloutState:
    """Where the rollout of `image` to the pool's `nodes` stands (module docstring)."""
    size = len(nodes)
    updated = [n.name for n in nodes if n.updated(image)]
    done = COMPLETE if len(updated) == size else PROGRESSING
    if policy is None or not image:
        return RolloutState(done)
    digest = image.rpartition("@")[2][:19]
    failed = tuple(sorted(n.name for n in nodes if n.failed(image)))
    # The canary batch: nodes already on their way to the image first (so the batch
    # does not move once begun), then by name; the same on every agent.
    asked = scale(policy.canary, size, round_up=True)
    want = min(size, max(1, asked)) if asked > 0 else 0
    touched = sorted(nodes, key=lambda n: (image not in (n.desired_image, n.current_image), n.name))
    canary = tuple(n.name for n in touched[:want])
    allowed = scale(policy.max_degraded, size, round_up=False)
    failed_canary = [n for n in failed if n in canary]
    if len(failed) > allowed or failed_canary:
        why = (
            f"canary node {', '.join(failed_canary)} failed"
            if failed_canary
            else f"{len(failed)} of {size} nodes failed ({', '.join(failed)}), more than "
            f"maxDegraded {policy.max_degraded}"
        )
        return RolloutState(
            PAUSED,
            f"rollout of {digest} paused: {why}; resume with a new pin or a rollout change in Git",
            canary,
            failed,
        )
    by_name = {n.name: n for n in nodes}
    waiting = [c for c in canary if not by_name[c].updated(image)]
    if waiting:
        return RolloutState(
            CANARY, f"canary {', '.join(waiting)} updating to {digest} first", canary, failed
        )
    soaking = [
        c
        for c in canary
        if not by_name[c].available
        or (by_name[c].since or now) + policy.soak_seconds > now
        or (policy.soak_seconds and by_name[c].since is None)
    ]
    if soaking:
        return RolloutState(
            SOAKING,
            f"canary {', '.join(canary)} runs {digest}; soaking for {policy.soak_seconds}s "
            "(healthy and Ready) before the rest",
            canary,
            failed,
        )
    return RolloutState(done, "", canary, failed)
