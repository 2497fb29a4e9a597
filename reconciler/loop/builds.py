"""Background builds: Containerfile builds run beside the passes, not inside them.

Stage: the build step of a pass hands a build it needs (`start`) to a background
thread and goes on; input: a `PoolPlan` whose image is not in the registry. Output,
per inputs digest, a `Build` record: running (by this process, or waited for: another
process's lock or Job), or ended with a `BuildResult` or an error. Each pass reads
the records once (`snapshot`) and decides with them (`decision.decide`: a running
build makes its pool `building`, a failed one stalled or failed); the pass that has
pinned or reported an ended build `forget`s it. An ended build calls `wake`, so the
loop's next pass starts at once.

At most `limit` builds run at once (more wait for a slot, reported as queued). One
record per inputs digest: a pass never starts the inputs a build already runs. A build
whose pool has moved on to other inputs is left to finish (its image is pushed under
its own inputs tag, so a revert finds it) and never pinned: decisions look at the
pool's current inputs only. docs/design/loop.md has the whole picture.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from reconciler.adapters.builders.buildah import BuiltElsewhere
from reconciler.core import decision, reference
from reconciler.core.poolplan import PoolPlan
from reconciler.errors import InternalError, ReconcilerError, first_lines, is_transient
from reconciler.loop import building

log = logging.getLogger("reconciler.builds")

DEFAULT_BUILDS = 2
"""Containerfile builds at once: one slow build never holds another pool's, and a
machine building locally (each build in a buildah storage of its own) is not swamped."""


@runtime_checkable
class Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Build:
    """One background build, as of the moment it was read."""

    pool: str
    inputs_digest: str
    builder: str
    target: str
    queued_at: float
    started_at: float | None = None
    """None while it waits for a slot."""
    by: str | None = None
    """Who builds, when not this process: another process's lock, an existing Job."""
    running: bool = True
    result: building.BuildResult | None = None
    error: ReconcilerError | None = None

    @property
    def elsewhere_done(self) -> bool:
        """Ended without a result of ours: someone else built it (look it up)."""
        return not self.running and self.result is None and self.error is None

    def describe(self, now: float) -> str:
        if self.started_at is None:
            return f"{self.builder} build of {self.target} queued ({now - self.queued_at:.0f}s)"
        who = self.by or "this reconciler"
        return (
            f"{self.builder} build of {self.target} running for {now - self.started_at:.0f}s "
            f"({who})"
        )

    def state(self, now: float) -> decision.BuildState | None:
        """What `decision.decide` is told (None for a build someone else finished: the
        registry has the answer)."""
        if self.running:
            return decision.BuildState(self.inputs_digest, True, self.describe(now))
        if self.error is not None:
            return decision.BuildState(self.inputs_digest, False, first_lines(self.error),
                                       failed=True, transient=is_transient(self.error))  # fmt: skip
        if self.result is None:
            return None
        return decision.BuildState(self.inputs_digest, False, "")


@dataclass(frozen=True)
class Snapshot:
    """The builds as one pass sees them (read once at its start, so every attempt of
    the pass decides alike)."""

    builds: Mapping[str, Build]
    taken_at: float

    def state(self, inputs_digest: str) -> decision.BuildState | None:
        build = self.builds.get(inputs_digest)
        return build.state(self.taken_at) if build is not None else None

    def result(self, inputs_digest: str) -> building.BuildResult | None:
        build = self.builds.get(inputs_digest)
        return build.result if build is not None else None

    def ended(self) -> list[str]:
        return [d for d, b in self.builds.items() if not b.running]


class Builds:
    """The background builds of one reconciler (module docstring)."""

    def __init__(
        self,
        builders: Mapping[str, building.ContainerfileBuilder],
        limit: int = DEFAULT_BUILDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.builders = builders
        self.limit = limit
        self.clock = clock
        self.wake: Callable[[], None] | None = None
        """Called when a build ends (the loop's trigger: the next pass pins it)."""
        self._builds: dict[str, Build] = {}
        self._cond = threading.Condition()
        self._slots = threading.BoundedSemaphore(limit)
        self._stopping = threading.Event()

    def start(self, plan: PoolPlan) -> Build:
        """Start (or queue) the plan's Containerfile build; a build of the same inputs
        that this reconciler knows of is returned instead (never a second one)."""
        builder = building.containerfile_builder(plan, self.builders)  # none: fails now
        with self._cond:
            found = self._builds.get(plan.inputs_digest)
            if found is not None and not found.elsewhere_done:
                return found  # running, or ended and not yet pinned or reported
            # (ended elsewhere and not in the registry: that build failed; build here)
            build = Build(plan.pool, plan.inputs_digest, plan.builder, str(plan.target),
                          queued_at=self.clock())  # fmt: skip
            self._builds[plan.inputs_digest] = build
        log.info("pool %s: building image for inputs %s with %s (in the background)",
                 plan.pool, plan.inputs_digest[:19], plan.builder)  # fmt: skip
        threading.Thread(
            target=self._run, args=(plan, builder), name=f"build-{plan.pool}", daemon=True
        ).start()
        return build

    def snapshot(self) -> Snapshot:
        with self._cond:
            return Snapshot(dict(self._builds), self.clock())

    def forget(self, inputs_digests: Iterable[str]) -> None:
        """Drop ended builds a pass has pinned or reported."""
        with self._cond:
            for digest in inputs_digests:
                build = self._builds.get(digest)
                if build is not None and not build.running:
                    del self._builds[digest]

    def running(self) -> list[Build]:
        with self._cond:
            return [b for b in self._builds.values() if b.running]

    def has_ended(self) -> bool:
        """Whether a build has ended that no pass has pinned or reported yet."""
        with self._cond:
            return any(not b.running for b in self._builds.values())

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until no build is running (True) or `timeout_s` passed (False)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not any(b.running for b in self._builds.values()), timeout_s
            )

    def stop(self) -> None:
        """Shutting down: queued builds do not start, running local builds are killed
        (their builders' `stop`), Jobs are left to the cluster (the next process finds
        them by name)."""
        self._stopping.set()
        for builder in self.builders.values():
            if isinstance(builder, Stoppable):
                builder.stop()

    # --- the build thread -----------------------------------------------------------------

    def _run(self, plan: PoolPlan, builder: building.ContainerfileBuilder) -> None:
        digest = plan.inputs_digest
        result: building.BuildResult | None = None
        error: ReconcilerError | None = None
        with self._slots:
            started = self.clock()
            self._update(digest, started_at=started)
            try:
                if self._stopping.is_set():
                    raise ReconcilerError(f"pool {plan.pool}: the reconciler is stopping")
                pushed = builder.build(plan, lambda who: self._update(digest, by=who))
                image = reference.with_digest(plan.target, pushed)
                result = building.BuildResult(plan.pool, image, pushed, plan.builder)
            except BuiltElsewhere:
                pass  # the next pass finds the image by its tag (or builds again)
            except ReconcilerError as exc:
                error = exc
            except Exception as exc:
                log.debug("pool %s: unexpected error in a build", plan.pool, exc_info=True)
                error = InternalError(f"building pool {plan.pool}", exc)
        took = self.clock() - started
        self._update(digest, running=False, result=result, error=error)
        outcome = "failed" if error else "ended elsewhere" if result is None else "pushed"
        log.info("pool %s: background %s build %s after %.1fs", plan.pool, plan.builder,
                 outcome, took)  # fmt: skip
        if self.wake is not None:
            self.wake()

    def _update(self, digest: str, **changes: object) -> None:
        with self._cond:
            self._builds[digest] = replace(self._builds[digest], **changes)  # type: ignore[arg-type]
            self._cond.notify_all()
