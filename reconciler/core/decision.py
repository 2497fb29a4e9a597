"""The per-pool decision of a pass: what happens to one pool's pin.

Stage: after planning, before building. Input: what the plan says of the pool (a
problem, unmanaged, or the image it should have), its current pin, whether Git holds
it, and whether a build already failed for these inputs. Output: a `Decision`. The
reconcile pass and every prediction of it (`plan --base`, `rollback`) call `decide`, so
they cannot disagree.

The order: a pool that cannot be planned keeps its pin (stalled when the user must fix
something, failed when a retry may help); an unmanaged pool gets no image; a held pool
stays at its pin; a pin that already is the plan's image stays; otherwise the plan's
image is pinned, found by identity or built (or, when a build failed for these inputs
before, only found).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reconciler.core import pins

Action = Literal["stalled", "failed", "unmanaged", "held", "unchanged", "build"]


@dataclass(frozen=True)
class Target:
    """The image the plan gives a pool."""

    inputs_digest: str
    repository: str
    """`registry/repo` it is pushed to."""
    architecture: str


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    reuse_only: bool = False
    """`build` after a build failed for good for these inputs: pin the image only if it
    exists by now (built elsewhere), do not run the builder again."""


def satisfies(pin: pins.Pin, target: Target) -> bool:
    """Whether the pin already is the target image: same inputs, repository and
    architecture (then nothing needs doing, not even a registry request)."""
    return (
        pin.spec.inputs_digest == target.inputs_digest
        and pin.spec.image.startswith(f"{target.repository}@")
        and pin.spec.architecture == target.architecture
    )


def decide(
    *,
    target: Target | None,
    problem: str | None = None,
    transient: bool = False,
    pin: pins.Pin | None = None,
    hold: str | None = None,
    failed_inputs: str | None = None,
) -> Decision:
    """One pool's decision (see the module docstring).

    `target` is None for an unmanaged pool; `problem` why the pool cannot be planned
    (`transient`: a retry may help); `pin` its current valid pin; `hold` why Git holds
    it; `failed_inputs` the inputs digest a build failed for, for good.
    """
    if problem is not None:
        return Decision("failed" if transient else "stalled", problem)
    if target is None:
        return Decision("unmanaged", "no MachineOSConfig: no image is built for this pool")
    if pin is not None and hold is not None:
        return Decision("held", hold)
    if pin is not None and satisfies(pin, target):
        return Decision("unchanged")
    return Decision("build", reuse_only=failed_inputs == target.inputs_digest)
