"""The per-pool decision of a pass: what happens to one pool's pin.

Stage: after planning, before building. Input: what the plan says of the pool (a
problem, unmanaged, or the image it should have), its current pin, whether Git holds
it, and whether a build already failed for these inputs. Output: a `Decision`. The
reconcile pass and every prediction of it (`plan --base`, `rollback`) call `decide`, so
they cannot disagree.

The order: a pool that cannot be planned keeps its pin (stalled when the user must fix
something, failed when a retry may help); an unmanaged pool gets no image; a held pool
stays at its pin; a pin that already is the plan's image, with the plan's live
settings, stays; otherwise the plan's image is pinned, found by identity or built (or,
when a build failed for these inputs before, only found). A pin whose image is right
but whose `liveConfigDigest` is not is pinned again too (`Decision.live_only`): the
same image, found by identity, with the new digest; nodes apply it without a reboot.
A Containerfile build of the plan's inputs that runs in the background
(`loop/builds.py`) makes the pool `building` (its pin stays) until it ends; a failed
one is reported as a build failure would be, by the pass after it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reconciler.core import pins

Action = Literal["stalled", "failed", "unmanaged", "held", "unchanged", "building", "build"]


@dataclass(frozen=True)
class Target:
    """The image the plan gives a pool."""

    inputs_digest: str
    repository: str
    """`registry/repo` it is pushed to."""
    architecture: str
    live_config_digest: str | None = None
    """What nodes apply live (core's SSH keys and password hash), by digest
    (`pins.live_config_digest`); None when the pool has none."""


@dataclass(frozen=True)
class BuildState:
    """A background Containerfile build of a pool's target inputs, as a pass saw it."""

    inputs_digest: str
    running: bool
    message: str
    """Running: who builds what, since when; ended: the failure (with its log tail)."""
    failed: bool = False
    transient: bool = False
    """For a failed build: whether a retry may help (else: wait for new inputs)."""


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    reuse_only: bool = False
    """`build` after a build failed for good for these inputs: pin the image only if it
    exists by now (built elsewhere), do not run the builder again."""
    live_only: bool = False
    """`build` where only the live settings differ from the pin: the image stays (so
    nothing is built and no node reboots); only `liveConfigDigest` changes."""
    failed_inputs: str | None = None
    """`stalled` by a build that failed for good: the inputs it failed for (recorded,
    so they are not built again until they change)."""


def same_image(pin: pins.Pin, target: Target) -> bool:
    """Whether the pin already names the target image: same inputs, repository and
    architecture."""
    return (
        pin.spec.inputs_digest == target.inputs_digest
        and pin.spec.image.startswith(f"{target.repository}@")
        and pin.spec.architecture == target.architecture
    )


def satisfies(pin: pins.Pin, target: Target) -> bool:
    """Whether the pin already is the target: its image and its live settings (then
    nothing needs doing, not even a registry request)."""
    return same_image(pin, target) and pin.spec.live_config_digest == target.live_config_digest


def decide(
    *,
    target: Target | None,
    problem: str | None = None,
    transient: bool = False,
    pin: pins.Pin | None = None,
    hold: str | None = None,
    failed_inputs: str | None = None,
    build: BuildState | None = None,
) -> Decision:
    """One pool's decision (see the module docstring).

    `target` is None for an unmanaged pool; `problem` why the pool cannot be planned
    (`transient`: a retry may help); `pin` its current valid pin; `hold` why Git holds
    it; `failed_inputs` the inputs digest a build failed for, for good; `build` a
    background build of some inputs of the pool (only one of `target`'s counts: a build
    of inputs the pool has moved away from is never pinned).
    """
    if problem is not None:
        return Decision("failed" if transient else "stalled", problem)
    if target is None:
        return Decision("unmanaged", "no MachineOSConfig: no image is built for this pool")
    if pin is not None and hold is not None:
        return Decision("held", hold)
    if pin is not None and satisfies(pin, target):
        return Decision("unchanged")
    if build is not None and build.inputs_digest == target.inputs_digest:
        if build.running:
            return Decision("building", build.message)
        if build.failed:
            if build.transient:
                return Decision("failed", build.message)
            return Decision("stalled", build.message, failed_inputs=target.inputs_digest)
        # ended well: `build`, and the loop pins what it pushed
    live_only = pin is not None and same_image(pin, target)
    return Decision("build", reuse_only=failed_inputs == target.inputs_digest, live_only=live_only)
