"""The reconcile loop: fetch, load, plan, build what is missing, write pins, commit, push.

Stage: the main job. Input: the config repository (a remote URL or a local path) and a
branch. Output: at most one commit per pass, touching only `pins/`, pushed as a
compare-and-swap; and `status.json` in the work directory.

The steps, per-pool isolation and crash safety: docs/design/loop.md.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from reconciler import failpoints
from reconciler.adapters.git import CommitInfo, Mirror
from reconciler.adapters.registry import RegistryClient
from reconciler.core import cosign, decision, history, load, model, pins, poolplan, verdict
from reconciler.errors import (
    GitError,
    InternalError,
    PushRejected,
    ReconcilerError,
    first_lines,
    is_transient,
)
from reconciler.loop import building, builds, holds, loading, parallel, planning, sources
from reconciler.loop.status import (
    BUILDING,
    HELD,
    READY,
    STALLED,
    PoolStatus,
    Reason,
    Status,
    StatusStore,
)

log = logging.getLogger("reconciler.controller")  # the logger keeps its name across moves

PoolState = Literal["pinned", "unchanged", "held", "stalled", "failed", "unmanaged", "building"]
DEFAULT_AUTHOR = ("reconciler", "reconciler@gitops.bootc.dev")


@dataclass(frozen=True)
class RunSettings:
    branch: str = "main"
    author: tuple[str, str] = DEFAULT_AUTHOR
    push_attempts: int = 5
    default_builder: Literal["buildah", "job"] = "buildah"
    base_poll_s: float = 300.0
    """Re-resolve base image tags at least this often even when Git does not move."""
    image_signer: cosign.Signer | None = None
    """Signs every image a pass pins, built or reused (`--image-signing-key`)."""
    registry_connections: int = parallel.DEFAULT_CONNECTIONS
    """Pools whose registry work (existence check, uploads, manifest) runs at once."""
    builds: int = builds.DEFAULT_BUILDS
    """Containerfile builds running at once in the background (`loop/builds.py`); 0:
    inside the pass, which then waits for them (the way before issue 13)."""


@dataclass(frozen=True)
class PoolReport:
    pool: str
    state: PoolState
    message: str = ""
    pin: pins.Pin | None = None
    transient: bool = False
    inputs_digest: str | None = None
    """For a build that failed for good: the inputs it failed for (not retried)."""
    image: str | None = None
    """The image the pool is pinned to (the pin's; or the status record's, for a pool
    reported from what the last pass recorded)."""
    builder: str | None = None
    """Who made or failed to make the image (native, buildah, job, reused), if a build
    was tried (or, `building`, is running)."""

    def __post_init__(self) -> None:
        if self.image is None and self.pin is not None:
            object.__setattr__(self, "image", self.pin.spec.image)


@dataclass
class PassReport:
    head: str
    """The remote head at the end of the pass (our pin commit if we pushed one)."""
    skipped: bool = False
    """The remote had not moved and nothing was due: only `ls-remote` ran."""
    commit: str | None = None
    pools: dict[str, PoolReport] = field(default_factory=dict)
    attempts: int = 0
    warnings: list[str] = field(default_factory=list)
    """The repository's warnings at `head` (keys Ignition would ignore, ...): they
    block nothing, but `status` shows them."""

    commits: list[str] = field(default_factory=list)
    """`run --once` (`reconcile_until_built`): the pin commits of each of its passes."""

    @property
    def changed(self) -> list[str]:
        return sorted(p for p, r in self.pools.items() if r.state == "pinned")

    @property
    def building(self) -> list[str]:
        return sorted(p for p, r in self.pools.items() if r.state == "building")


@dataclass(frozen=True)
class PassOutcome:
    """What observers (metrics, the cluster status, the heartbeat) learn of each pass."""

    report: PassReport | None
    """None when the pass failed as a whole (`error`)."""
    error: BaseException | None
    seconds: float
    status: Status
    """The status after the pass (read it, do not change it)."""


class PassObserver(Protocol):
    def pass_started(self) -> None: ...

    def pass_finished(self, outcome: PassOutcome) -> None:
        """Called after every pass of `run`; must not raise (it is logged if it does)."""
        ...


class Reconciler:
    """One config repository and branch, reconciled into pins (see the module docstring)."""

    def __init__(
        self,
        mirror: Mirror,
        registry: RegistryClient,
        work_dir: Path,
        settings: RunSettings = RunSettings(),
        builders: Mapping[str, building.ContainerfileBuilder] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mirror = mirror
        self.registry = registry
        self.settings = settings
        self.builders = dict(builders or {})
        self.clock = clock
        self.work_dir = work_dir
        self.store = StatusStore(work_dir / "status.json")
        self.status = self.store.load()
        self.status.repo = mirror.display_url
        self.status.branch = settings.branch
        self.hold_finder = holds.HoldFinder(mirror)
        # across passes: a pass re-parses and re-plans only what changed (issue 13)
        self.blob_cache: dict[str, bytes] = {}  # the config and pin files' blobs, by id
        self.load_cache = loading.LoadCache()
        self.verdict_cache = verdict.VerdictCache()
        self.plan_cache = planning.PlanCache()
        self.pin_cache: holds.PinCache = {}
        self.workers = parallel.RegistryWorkers(registry, settings.registry_connections)
        self.builds = builds.Builds(self.builders, max(1, settings.builds), clock)
        self._seen = self.builds.snapshot()
        # a build recorded as running when this process started (a restart): the first
        # pass is due, to find it (its lock, its Job) or its image
        self._resume = any(p.is_true(BUILDING) for p in self.status.pools.values())
        self._save_lock = threading.Lock()
        self.observers: list[PassObserver] = []

    # --- the pass -------------------------------------------------------------------------

    def reconcile_once(self, *, force: bool = False) -> PassReport:
        """One pass; see the module docstring for the steps."""
        now = self.clock()
        head = self.mirror.fetch(self.settings.branch)  # 1. fetch (one ls-remote if idle)
        if not force and not self._due(head, now):
            return PassReport(head=head, skipped=True)
        self._seen = self.builds.snapshot()  # the background builds, as this pass sees them
        report = PassReport(head=head)
        for attempt in range(1, self.settings.push_attempts + 1):
            report = PassReport(head=head, attempts=attempt)
            changes, source = self._plan_and_build(head, report)  # 2-5. load, plan, build
            if not changes:
                break
            commit = self._commit(head, source, changes)  # 6. one commit for every pool moved
            failpoints.hit("after-commit")
            try:
                self.mirror.push(commit, self.settings.branch, head)  # 7. compare-and-swap
            except PushRejected as exc:
                log.info("push rejected (%s); fetching and planning again", exc)
                head = self.mirror.fetch(self.settings.branch)
                continue
            failpoints.hit("after-push")
            report.commit = report.head = commit
            break
        else:
            raise GitError(
                f"pushing pins to {self.mirror.display_url} was rejected "
                f"{self.settings.push_attempts} times in a row: another writer keeps moving "
                f"{self.settings.branch}; will retry",
                transient=True,
            )
        self._record(report, now)
        return report

    def _due(self, head: str, now: float) -> bool:
        status = self.status
        if head != status.observed_head or self.builds.has_ended() or self._resume:
            return True
        retry = status.next_retry()
        if retry is not None and retry <= now:
            return True
        # every pass that is not skipped re-resolves the base images
        last = status.last_pass
        return last is None or now - last >= self.settings.base_poll_s

    def _plan_and_build(
        self, head: str, report: PassReport
    ) -> tuple[list[history.PinChange], CommitInfo]:
        # 2. load: the config and the pins at `head`, straight from the mirror (one read)
        files = self.mirror.read_files(head, _config_or_pin, self.blob_cache)
        repo = self.load_cache.load({p: d for p, d in files.items() if load.is_config_path(p)})
        report.warnings = [str(w) for w in repo.warnings]
        failpoints.hit("after-load")
        current = holds.read_pins(self.mirror, head, self.pin_cache, files)
        refused = sources.refusal(self.mirror, head, repo)  # 2b. signed changes only
        if refused is not None:
            for pool in sorted(set(repo.pools) | set(current)):
                pin = current.get(pool)
                pinned_now = pin if isinstance(pin, pins.Pin) else None
                report.pools[pool] = PoolReport(pool, "stalled", refused, pinned_now)
            return [], self._source_commit(head)
        # 3. plan: judge, render, resolve bases, identities (one lookup per base image);
        # pools with a pin are judged too, so a pool whose own file broke keeps its pin
        self.plan_cache.start()
        planner = planning.Planner(
            self.registry,
            default_builder=self.settings.default_builder,
            cache=self.plan_cache,
            verdicts=self.verdict_cache,
        )
        outcomes = planner.plan_pools(repo, known=current)
        failpoints.hit("after-plan")
        source = self._source_commit(head)
        pinned = {
            p: pin for p, pin in current.items() if isinstance(pin, pins.Pin) and p in outcomes
        }
        held = self.hold_finder.holds(head, repo, pinned)
        changes: list[history.PinChange] = []
        # 4-5. decide, and build what is missing (the pools' registry work in parallel)
        jobs: list[tuple[poolplan.PoolPlan, pins.Pin | None, decision.Decision]] = []
        for pool in sorted(outcomes):
            outcome, existing = outcomes[pool], pinned.get(pool)
            hold = held[pool].reason if pool in held else None
            running = self._seen.state(outcome.inputs_digest) if isinstance(
                outcome, poolplan.PoolPlan) else None  # fmt: skip
            choice = planning.decide(outcome, existing, hold, self.status.pool(pool).failed_inputs,
                                     running)  # fmt: skip
            if choice.action != "build":
                # (a background build's pool: building, or its build failed)
                by_build = running is not None and choice.action in ("building", "stalled",
                                                                     "failed")  # fmt: skip
                report.pools[pool] = PoolReport(
                    pool, choice.action, choice.reason, existing, choice.action == "failed",
                    choice.failed_inputs, builder=getattr(outcome, "builder", None) if by_build
                    else None,
                )  # fmt: skip
                continue
            assert isinstance(outcome, poolplan.PoolPlan)  # noqa: S101 - decide() says so
            jobs.append((outcome, existing, choice))

        def build(
            registry: RegistryClient,
            job: tuple[poolplan.PoolPlan, pins.Pin | None, decision.Decision],
        ) -> history.PinChange | None:
            # (every pool's status exists: decide() above read it, so threads only read
            # the mapping; report.pools gets one key per pool)
            plan, existing, choice = job
            return self._build(plan, existing, source, report, reuse_only=choice.reuse_only,
                               live_only=choice.live_only, registry=registry)  # fmt: skip

        for (plan, _, _), change in zip(jobs, self.workers.map(build, jobs), strict=True):
            pool = plan.pool
            if change is not None:
                if isinstance(current.get(pool), pins.PinError):
                    log.warning("pool %s: replacing an invalid pin (%s)", pool, current[pool])
                changes.append(change)
        failpoints.hit("after-build")
        return changes, source

    def _build(
        self,
        plan: poolplan.PoolPlan,
        existing: pins.Pin | None,
        source: CommitInfo,
        report: PassReport,
        *,
        reuse_only: bool,
        live_only: bool = False,
        registry: RegistryClient | None = None,
    ) -> history.PinChange | None:
        """One pool's build; `registry` is the client of the thread it runs in."""
        registry = registry or self.registry
        pool_status = self.status.pool(plan.pool)
        try:
            if reuse_only and building.find_existing(registry, plan) is None:
                # A build that failed for good is not rerun for the same inputs on every
                # commit elsewhere in the repository: the pool waits for its inputs to change.
                report.pools[plan.pool] = PoolReport(
                    plan.pool, "stalled", pool_status.last_error or "the build failed",
                    existing, inputs_digest=plan.inputs_digest,
                )  # fmt: skip
                return None
            if self.settings.builds > 0:
                # 5. found, native, or ended in the background: pinned now; else started
                found = self._find_or_start(plan, registry)
                if isinstance(found, builds.Build):
                    report.pools[plan.pool] = PoolReport(
                        plan.pool, "building", found.describe(self.clock()), existing,
                        builder=plan.builder,
                    )  # fmt: skip
                    return None
                result = found
            else:
                if plan.builder != "native" and not live_only:
                    # Containerfile builds take a while: say so before, for `status`
                    # (a live-only change finds the pinned image: nothing to build).
                    if pool_status.set(BUILDING, True, Reason.BUILDING, f"{plan.builder} build "
                                       f"of {plan.target}", self.clock()):  # fmt: skip
                        log.info("pool %s: building image for inputs %s with %s", plan.pool,
                                 plan.inputs_digest[:19], plan.builder)  # fmt: skip
                    with self._save_lock:
                        self.store.save(self.status)
                result = building.ensure_image(
                    registry, plan, self.builders, self.settings.image_signer
                )
        except ReconcilerError as exc:
            transient = is_transient(exc)
            report.pools[plan.pool] = PoolReport(
                plan.pool, "failed" if transient else "stalled", first_lines(exc), existing,
                transient, None if transient else plan.inputs_digest, plan.builder,
            )  # fmt: skip
            return None
        except Exception as exc:
            log.debug("pool %s: unexpected error", plan.pool, exc_info=True)
            error = InternalError(f"building pool {plan.pool}", exc)
            report.pools[plan.pool] = PoolReport(
                plan.pool, "failed", str(error), existing, True, builder=plan.builder
            )
            return None
        pin = make_pin(plan, result, source.sha, existing)
        report.pools[plan.pool] = PoolReport(
            plan.pool, "pinned", result.built_by, pin, builder=result.built_by
        )
        return history.PinChange(pin, existing)

    def _find_or_start(
        self, plan: poolplan.PoolPlan, registry: RegistryClient
    ) -> building.BuildResult | builds.Build:
        """The plan's image: built in the background by now, found (one HEAD), or built
        natively; else its Containerfile build, started in the background."""
        result = self._seen.result(plan.inputs_digest) or building.find_or_build_native(
            registry, plan
        )
        if result is None:
            return self.builds.start(plan)
        if self.settings.image_signer is not None:
            building.sign(registry, result, self.settings.image_signer)
        return result

    def _commit(self, head: str, source: CommitInfo, changes: list[history.PinChange]) -> str:
        rendered = {
            pins.pin_path(c.pool): (pins.render_pin(c.pin).encode(), c.pin) for c in changes
        }
        files: dict[str, bytes | None] = {path: data for path, (data, _) in rendered.items()}
        message = history.pin_commit_message(changes, source.subject)
        commit = self.mirror.commit(head, files, message, author=self.settings.author)
        # the next pass reads these pins back: it knows them already (parse_pin of a
        # rendered pin is the pin, tests/unit/test_pin_render.py)
        self.pin_cache.update({(path, data): pin for path, (data, pin) in rendered.items()})
        return commit

    # --- what Git says ----------------------------------------------------------------------

    def _source_commit(self, head: str) -> CommitInfo:
        """The newest commit at `head` that is not a reconciler pin commit: the config
        commit the pins are computed from (the same on every replica)."""
        [newest] = self.mirror.log(head, max_count=1)  # mostly it (parsed alone: the
        if not history.is_reconciler_commit(newest):  # trailers of pin commits are long)
            return newest
        for commit in self.mirror.log(head, max_count=50):
            if not history.is_reconciler_commit(commit):
                return commit
        return newest

    # --- status -----------------------------------------------------------------------------

    def _record(self, report: PassReport, now: float) -> None:
        status = self.status
        status.observed_head = report.head
        status.last_pass = now
        self._resume = False
        if report.commit:
            status.last_commit = report.commit
            log.info("pin commit %s pushed to Git (%s)", report.commit[:10],
                     ", ".join(report.changed))  # fmt: skip
        if not report.skipped:
            for new in sorted(set(report.warnings) - set(status.warnings)):
                log.warning("repository warning: %s", new)  # once, when it appears
            status.warnings = list(report.warnings)
        for pool, result in report.pools.items():
            _apply(status.pool(pool), result, now)
        for gone in set(status.pools) - set(report.pools):
            del status.pools[gone]
        self.store.save(status)
        self.builds.forget(self._seen.ended())  # pinned or reported now

    # --- running --------------------------------------------------------------------------

    def next_wakeup(self, interval: float) -> float:
        """Seconds until the next pass is due: the poll interval, or sooner for a retry."""
        retry = self.status.next_retry()
        wait = interval
        if retry is not None:
            wait = min(wait, max(0.0, retry - self.clock()))
        return wait

    def run(self, stop: threading.Event, trigger: threading.Event, interval: float) -> None:
        """Pass after pass until `stop`; `trigger` (a webhook, a local commit) starts
        the next pass at once. Errors of a whole pass are logged and retried."""
        failures = 0
        self.builds.wake = trigger.set  # a build that ends starts the pass that pins it
        while not stop.is_set():
            self._notify(None)
            started = time.monotonic()
            try:
                report = self.reconcile_once()
                failures = 0
                wait = self.next_wakeup(interval)
                self._notify(PassOutcome(report, None, time.monotonic() - started, self.status))
            except Exception as exc:
                self._notify(PassOutcome(None, exc, time.monotonic() - started, self.status))
                failures += 1
                wait = min(interval, 2.0 ** min(failures, 8))
                if not isinstance(exc, ReconcilerError):
                    log.debug("unexpected error in a pass", exc_info=True)
                    exc = InternalError("reconciling", exc)
                level = logging.WARNING if is_transient(exc) else logging.ERROR
                log.log(level, "pass failed (retrying in %.0fs): %s", wait, exc)
            trigger.wait(wait)
            trigger.clear()

    def reconcile_until_built(self) -> PassReport:
        """`run --once`: a pass, then, while Containerfile builds it started run, wait
        for them and pass again (each pass makes its own commit), so a one-shot job
        never exits with a build nobody pins. The report holds each pool's last state
        (`pinned` if any of the passes pinned it) and every pass's commit."""
        report = self.reconcile_once()
        commits = [report.commit] if report.commit else []
        while self.builds.running() or self.builds.has_ended():
            waiting = self.builds.running()
            if waiting:
                log.info("waiting for %d build(s): %s", len(waiting),
                         ", ".join(f"{b.pool} ({b.builder})" for b in waiting))  # fmt: skip
                self.builds.wait()
            later = self.reconcile_once()
            if later.skipped:
                break
            for pool, result in later.pools.items():
                if not (result.state == "unchanged" and pool in report.changed):
                    report.pools[pool] = result
            report.head, report.warnings = later.head, later.warnings
            if later.commit:
                report.commit = later.commit
                commits.append(later.commit)
        report.commits = commits
        return report

    def _notify(self, outcome: PassOutcome | None) -> None:
        """Tell the observers a pass starts (None) or how it ended; their failures are
        theirs (logged), never the pass's."""
        for observer in self.observers:
            try:
                if outcome is None:
                    observer.pass_started()
                else:
                    observer.pass_finished(outcome)
            except Exception as exc:
                log.warning("observer %s failed: %s", type(observer).__name__, exc)
                log.debug("observer failure", exc_info=True)


def make_pin(
    plan: poolplan.PoolPlan,
    result: building.BuildResult,
    source_commit: str,
    existing: pins.Pin | None = None,
) -> pins.Pin:
    """The pin for a pool's image: what agents apply, and the provenance auditors read.

    When `existing` already pins this very image (a change of live settings only), its
    build facts stay: they say how the image came to be, which has not changed, so such
    a pin commit changes only `liveConfigDigest`, `renderedConfig` and `sourceCommit`.
    """
    build = pins.BuildFacts(builder=result.built_by, base_image_digest=plan.base.digest)
    if (
        existing is not None
        and existing.spec.digest == result.digest
        and existing.spec.inputs_digest == plan.inputs_digest
        and existing.spec.build.base_image_digest == plan.base.digest
    ):
        build = existing.spec.build
    return pins.Pin(
        metadata=model.ObjectMeta(name=plan.pool),
        spec=pins.PinSpec(
            pool=plan.pool,
            image=str(result.image),
            digest=result.digest,
            architecture=plan.architecture,
            rendered_config=plan.rendered.name,
            inputs_digest=plan.inputs_digest,
            base_image=plan.base_image,
            source_commit=source_commit,
            build=build,
            live_config_digest=plan.live_config_digest,
        ),
    )


def _apply(pool: PoolStatus, result: PoolReport, now: float) -> None:
    """Fold one pass's result for a pool into its conditions; log transitions only."""
    changed = []
    if result.pin is not None:
        pool.image = result.pin.spec.image
        pool.source_commit = result.pin.spec.source_commit
        pool.inputs_digest = result.pin.spec.inputs_digest
    building_now = result.state == "building"
    changed.append(pool.set(BUILDING, building_now, Reason.BUILDING if building_now else
                            Reason.IDLE, result.message if building_now else "", now))  # fmt: skip
    pool.failed_inputs = result.inputs_digest if result.state == "stalled" else None
    if result.state in ("pinned", "unchanged"):
        pool.clear_failures()
        pool.last_error = None
        changed += [
            pool.set(READY, True, Reason.PINNED, f"pinned to {pool.image}", now),
            pool.set(STALLED, False, "", "", now),
            pool.set(HELD, False, "", "", now),
        ]
    elif result.state == "held":
        pool.clear_failures()
        changed += [
            pool.set(READY, True, Reason.HELD, result.message, now),
            pool.set(HELD, True, Reason.MANUAL_PIN, result.message, now),
            pool.set(STALLED, False, "", "", now),
        ]
    elif result.state == "stalled":
        pool.clear_failures()
        pool.last_error = result.message
        changed += [
            pool.set(READY, False, Reason.CONFIG_ERROR, result.message, now),
            pool.set(STALLED, True, Reason.CONFIG_ERROR, result.message, now),
        ]
    elif result.state == "failed":
        pool.fail_transient(result.message, now)
        changed += [
            pool.set(READY, False, Reason.RETRYING, result.message, now),
            pool.set(STALLED, False, "", "", now),
        ]
    elif result.state == "unmanaged":
        # (a pool stalled before is not any more: it has nothing to build)
        pool.clear_failures()
        pool.last_error = None
        changed += [
            pool.set(READY, False, Reason.UNMANAGED, result.message, now),
            pool.set(STALLED, False, "", "", now),
            pool.set(HELD, False, "", "", now),
        ]
    elif building_now:
        # the old pin stays until the build ends; the pass after it pins or reports it
        pool.clear_failures()
        changed += [
            pool.set(READY, False, Reason.BUILDING, result.message, now),
            pool.set(STALLED, False, "", "", now),
            pool.set(HELD, False, "", "", now),
        ]
    if any(changed):
        level = logging.WARNING if result.state in ("stalled", "failed") else logging.INFO
        detail = f" ({result.message.splitlines()[0]})" if result.message else ""
        pinned = f" {result.pin.spec.digest[:19]}" if result.pin is not None else ""
        log.log(level, "pool %s: %s%s%s", result.pool, result.state, pinned, detail)


def _config_or_pin(path: str) -> bool:
    return load.is_config_path(path) or holds.is_pin_path(path)


class WorkDirLock:
    """One reconciler process per work directory (its mirror is not shareable)."""

    def __init__(self, work_dir: Path) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        self.path = work_dir / "lock"
        self._fd: int | None = None

    def __enter__(self) -> WorkDirLock:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ReconcilerError(
                f"{self.path.parent} is in use by another reconciler; give each its own --work-dir"
            ) from None
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
