"""The node agent's step: read the pin, compare with bootc, move one phase at a time.

Stage: the agent's loop body. Inputs: a `PinSource` (pin + pool policy), the bootc
driver, a `Coordinator`, health checks, a reboot command, the boot id, a clock.
Output: the new `AgentState`, persisted before every action that leaves a phase
(see `reconciler.agent.state` for the phases and why resuming is safe).

One `step()`:
1. load the persisted state; read `bootc status` (with a timeout);
2. resume an update in flight (`rebooting` → `verifying` → done / `rolling-back`);
3. otherwise read the pin: nothing to do if booted == pin; a digest that failed here
   is not retried until the pin changes; a paused pool starts nothing new;
4. take a slot → `bootc switch` (no `--apply`) → `staged` → cordon and drain
   (`draining`) → `rebooting` (boot id recorded) → reboot command.
After the reboot, verification passes only when the booted digest equals the pin and
the health checks pass (within the verify grace); otherwise `bootc rollback` and
reboot, the digest remembered as failed (flightctl's rule for a fallback boot: no
staged entry and booted == previous ⇒ rolled back, flightctl#458).

Bad input (a malformed pin, a pin not by digest, a bootc that hangs or prints garbage)
ends the step in `degraded` (or keeps the in-flight phase) with the reason, and
nothing is switched.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reconciler.adapters import bootc as bootc_mod
from reconciler.agent.coordination import Coordinator, Report
from reconciler.agent.health import HealthCheck, run_checks
from reconciler.agent.source import PinSource, PoolPolicy, Snapshot
from reconciler.agent.state import IN_FLIGHT, AgentState, ImageTarget, Phase, StateStore
from reconciler.errors import ReconcilerError

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    pool: str
    verify_grace: float = 600.0
    """Seconds after boot to wait for pending health checks before rolling back."""
    reboot_retry: float = 600.0
    """A reboot that has not happened after this long is requested again."""
    reboot_timeout: float = 120.0


@dataclass
class Agent:
    config: AgentConfig
    source: PinSource
    bootc: bootc_mod.Bootc
    coordinator: Coordinator
    store: StateStore
    health_checks: Sequence[HealthCheck]
    reboot_command: Sequence[str]
    boot_id: Callable[[], str]
    clock: Callable[[], float] = time.time
    _started: bool = field(default=False, init=False)
    _policy: PoolPolicy | None = field(default=None, init=False)
    _saved: AgentState | None = field(default=None, init=False)

    # -- the step --

    def step(self) -> AgentState:
        """Advance as far as possible without waiting; return the persisted state."""
        state = self._saved = self.store.load()
        if self.store.load_problem:
            state = state.to(Phase.IDLE, self.store.load_problem, self.clock())
            self.store.load_problem = ""
        if state.pool != self.config.pool and state.phase not in IN_FLIGHT:
            # first run, or the machine was moved to another pool: start afresh
            state = self._save(AgentState(pool=self.config.pool, changed_at=self.clock()))
        try:
            host = self.bootc.status()
            if not host.is_bootc:
                raise bootc_mod.BootcError(
                    "bootc status shows no booted deployment: this host is not booted "
                    "from a bootc image"
                )
        except bootc_mod.BootcError as exc:
            state = self._stuck(state, f"bootc status: {exc}")
            self._report(state, None)
            return state
        try:
            state = self._advance(state, host)
        except StateCorrupt as exc:
            state = self._finish(self.store.load(), Phase.IDLE, f"{exc}; started over")
        except ReconcilerError as exc:
            state = self._stuck(self.store.load(), str(exc))
        self._report(state, host)
        return state

    def _advance(self, state: AgentState, host: bootc_mod.Host) -> AgentState:
        if not self._started:
            self._started = True
            if state.phase not in IN_FLIGHT:
                # Like Zincati's steady-state report at start: a slot left by a run that
                # died between its last steps is given back (best effort).
                try:
                    self.coordinator.release(self.policy)
                    state = self._save(state_with(state, holds_slot=False))
                except ReconcilerError as exc:
                    log.warning("could not release a leftover update slot: %s", exc)
        for _ in range(10):  # at most one pass per phase; each pass persists first
            before = state
            if state.phase == Phase.REBOOTING:
                state = self._after_reboot(state, host)
            elif state.phase == Phase.VERIFYING:
                state = self._verify(state, host)
            elif state.phase == Phase.ROLLING_BACK:
                state = self._roll_back(state, host)
            elif state.phase in (Phase.STAGED, Phase.DRAINING):
                state = self._continue_update(state, host)
            else:
                state = self._consider_pin(state, host)
            if state.phase == before.phase or state.phase not in IN_FLIGHT:
                break
            if state.phase in (Phase.REBOOTING, Phase.ROLLING_BACK) and state.boot_id:
                break  # a reboot was requested: the next step runs after it
            host = self.bootc.status()
        return state

    # -- reading the pin --

    def _snapshot(self) -> Snapshot:
        snap = self.source.current(self.config.pool)
        self._policy = snap.policy
        return snap

    @property
    def policy(self) -> PoolPolicy:
        return self._policy or PoolPolicy(self.config.pool)

    def _consider_pin(self, state: AgentState, host: bootc_mod.Host) -> AgentState:
        now = self.clock()
        snap = self._snapshot()
        state = self._save(state_with(state, revision=snap.revision))
        if snap.pin is None:
            if snap.missing:
                return self._save(state.to(Phase.IDLE, snap.problem, now))
            return self._save(state.to(Phase.DEGRADED, snap.problem, now))
        pin = snap.pin.spec
        target = ImageTarget(pin.image, pin.digest)
        arch = _booted_image(host).architecture
        if arch and pin.architecture != arch:
            return self._save(
                state.to(
                    Phase.DEGRADED,
                    f"the pin is for {pin.architecture} but this host is {arch}; "
                    "pin the per-architecture image of this pool's machines",
                    now,
                )
            )
        if host.booted_digest == target.digest:
            if host.staged_digest not in (None, target.digest):
                # something else is staged (a stale switch): a reboot would leave the pin
                self.bootc.switch(target.image)
            reason = f"booted {target.digest} as pinned at {snap.revision[:12]}"
            if state.phase == Phase.DONE and state.desired == target:
                reason = state.reason  # already done: no new words, no write, no patch
            failed = state.failed_digest if state.failed_digest == target.digest else None
            return self._finish(
                state_with(state, desired=target, failed_digest=failed), Phase.DONE, reason
            )
        if state.failed_digest == target.digest:
            return self._save(
                state.to(
                    Phase.ROLLED_BACK,
                    state.reason
                    if state.phase == Phase.ROLLED_BACK
                    else f"{target.digest} failed here before; waiting for a new pin",
                    now,
                )
            )
        if state.failed_digest is not None:
            state = state_with(state, failed_digest=None)  # a new pin clears it
        if self.policy.paused:
            return self._save(
                state.to(
                    Phase.IDLE,
                    f"pool {self.config.pool} is paused; not starting the update to "
                    f"{target.digest}",
                    now,
                )
            )
        grant = self.coordinator.acquire(self.policy)
        if not grant.granted:
            return self._save(
                state.to(Phase.IDLE, f"waiting for an update slot: {grant.detail}", now)
            )
        state = self._save(state_with(state, holds_slot=True))
        return self._stage(state, host, target)

    def _stage(self, state: AgentState, host: bootc_mod.Host, target: ImageTarget) -> AgentState:
        now = self.clock()
        booted = _booted_image(host)
        previous = state.previous
        if state.phase not in IN_FLIGHT or previous is None:
            previous = ImageTarget(booted.image.image, booted.image_digest)
        if host.staged_digest != target.digest:
            try:
                self.bootc.switch(target.image)
            except bootc_mod.BootcError as exc:
                return self._finish(
                    state, Phase.DEGRADED, f"bootc switch to {target.image} failed: {exc}"
                )
            host = self.bootc.status()
        if host.staged_digest != target.digest:
            # e.g. an index digest pinned: bootc records the per-architecture one
            self._cancel_stage(host)
            return self._finish(
                state,
                Phase.DEGRADED,
                f"bootc staged {host.staged_digest} but the pin says {target.digest}; pins "
                "must name the per-architecture image manifest, not an index",
            )
        return self._save(
            state.to(
                Phase.STAGED,
                f"staged {target.digest}",
                now,
                desired=target,
                previous=previous,
            )
        )

    def _cancel_stage(self, host: bootc_mod.Host) -> None:
        """Undo a stage by switching back to the booted image (never `bootc rollback`,
        which would also queue the rollback deployment; contract §3)."""
        booted = host.status.booted
        if host.status.staged is not None and booted is not None and booted.image is not None:
            self.bootc.switch(booted.image.image.image)

    # -- staged → draining → rebooting --

    def _continue_update(self, state: AgentState, host: bootc_mod.Host) -> AgentState:
        now = self.clock()
        desired_target = _desired(state)
        snap = self._snapshot()
        if snap.pin is None:
            # a pin broken mid-update: do not reboot into something no longer pinned
            return self._save(state.to(state.phase, f"holding: {snap.problem}", now))
        pin = snap.pin.spec
        if pin.digest != desired_target.digest:
            if pin.digest == host.booted_digest:
                self._cancel_stage(host)
                reason = f"pin went back to the booted {pin.digest}; update cancelled"
                return self._finish(
                    state_with(state, desired=ImageTarget(pin.image, pin.digest)),
                    Phase.DONE,
                    reason,
                )
            return self._stage(state, host, ImageTarget(pin.image, pin.digest))
        if host.staged_digest != desired_target.digest:
            return self._stage(state, host, desired_target)
        grant = self.coordinator.acquire(self.policy)  # renews the slot we hold
        if not grant.granted:
            return self._save(state.to(state.phase, f"lost the update slot; {grant.detail}", now))
        if state.phase == Phase.STAGED:
            state = self._save(state.to(Phase.DRAINING, "cordoning and draining", now))
        if not state.cordoned:
            cordoned = self.coordinator.cordon()
            state = self._save(state_with(state, cordoned=cordoned))
        drained = self.coordinator.drain()
        if not drained.done:
            return self._save(state.to(Phase.DRAINING, drained.detail, now))
        return self._reboot(state, Phase.REBOOTING, f"rebooting into {desired_target.digest}")

    def _reboot(self, state: AgentState, phase: Phase, reason: str) -> AgentState:
        now = self.clock()
        state = self._save(
            state.to(phase, reason, now, boot_id=self.boot_id(), reboot_requested_at=now)
        )
        argv = list(self.reboot_command)
        log.info("%s: running %s", reason, shlex.join(argv))
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.config.reboot_timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return self._save(state.to(phase, f"{reason}: reboot command failed: {exc}", now))
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [""])[-1][:300]
            return self._save(
                state.to(phase, f"{reason}: reboot command exited {proc.returncode}: {last}", now)
            )
        return state

    # -- after the reboot --

    def _after_reboot(self, state: AgentState, host: bootc_mod.Host) -> AgentState:
        now = self.clock()
        desired_target = _desired(state)
        if self.boot_id() == state.boot_id:
            if host.staged_digest != desired_target.digest:
                # the stage vanished before any reboot (someone ran bootc by hand)
                return self._save(
                    state.to(Phase.STAGED, "the staged deployment disappeared; staging again", now)
                )
            if now - state.reboot_requested_at >= self.config.reboot_retry:
                return self._reboot(state, Phase.REBOOTING, state.reason)
            return state
        return self._save(
            state.to(
                Phase.VERIFYING,
                "verifying the booted image",
                now,
                boot_id="",
                verify_started_at=now,
            )
        )

    def _verify(self, state: AgentState, host: bootc_mod.Host) -> AgentState:
        now = self.clock()
        desired_target = _desired(state)
        desired = desired_target.digest
        if host.booted_digest != desired:
            if host.booted_digest == (state.previous.digest if state.previous else None):
                reason = (
                    f"after the reboot the previous image {host.booted_digest} is booted, not "
                    f"{desired} (the bootloader or greenboot fell back); not retrying it"
                )
                return self._finish(
                    state_with(state, failed_digest=desired), Phase.ROLLED_BACK, reason
                )
            return self._finish(
                state,
                Phase.DEGRADED,
                f"after the reboot {host.booted_digest} is booted, neither the pin {desired} "
                "nor the previous image",
            )
        result = run_checks(self.health_checks)
        if result.verdict == "pass":
            return self._finish(state, Phase.DONE, f"booted {desired}; health checks passed")
        if result.verdict == "pending" and now - state.verify_started_at < self.config.verify_grace:
            return self._save(state.to(Phase.VERIFYING, f"waiting: {result.reason}", now))
        reason = result.reason
        if result.verdict == "pending":
            reason = f"still not healthy {self.config.verify_grace:g}s after boot: {reason}"
        state = self._save(
            state.to(
                Phase.ROLLING_BACK,
                f"{desired} failed verification: {reason}",
                now,
                failed_digest=desired,
                boot_id="",
            )
        )
        return self._roll_back(state, host)

    def _roll_back(self, state: AgentState, host: bootc_mod.Host) -> AgentState:
        now = self.clock()
        failed = state.failed_digest
        previous = state.previous.digest if state.previous else None
        if state.boot_id and self.boot_id() != state.boot_id:
            # the reboot into the rollback happened
            if host.booted_digest == previous:
                return self._finish(state, Phase.ROLLED_BACK, state.reason + "; rolled back")
            return self._finish(
                state,
                Phase.DEGRADED,
                f"{state.reason}; but after the rollback reboot {host.booted_digest} is booted",
            )
        if state.boot_id and host.status.rollback_queued:
            # asked for the reboot already, in this boot: ask again only after a while
            if now - state.reboot_requested_at < self.config.reboot_retry:
                return state
            return self._reboot(state, Phase.ROLLING_BACK, state.reason)
        if host.booted_digest == failed and not host.status.rollback_queued:
            if host.status.rollback is None:
                return self._finish(
                    state, Phase.DEGRADED, f"{state.reason}; no rollback deployment"
                )
            # run once: a second `bootc rollback` would revert the first (contract §3)
            self.bootc.rollback()
            host = self.bootc.status()
            if not host.status.rollback_queued:
                return self._save(
                    state.to(
                        Phase.ROLLING_BACK, f"{state.reason}; bootc rollback did not queue", now
                    )
                )
        if host.booted_digest != failed:
            return self._finish(state, Phase.ROLLED_BACK, state.reason + "; rolled back")
        return self._reboot(state, Phase.ROLLING_BACK, state.reason)

    # -- endings --

    def _finish(self, state: AgentState, phase: Phase, reason: str) -> AgentState:
        """Leave the update: uncordon if we cordoned, give the slot back, record."""
        now = self.clock()
        state = self._save(state.to(phase, reason, now, boot_id=""))
        if state.cordoned:
            self.coordinator.uncordon()
            state = self._save(state_with(state, cordoned=False))
        if state.holds_slot:
            self.coordinator.release(self.policy)
            state = self._save(state_with(state, holds_slot=False))
        return state

    def _stuck(self, state: AgentState, reason: str) -> AgentState:
        """A step that cannot go on: an update in flight keeps its phase (it resumes
        next step); otherwise the host is `degraded` with the reason. Nothing is
        switched."""
        log.warning("%s", reason)
        phase = state.phase if state.phase in IN_FLIGHT else Phase.DEGRADED
        return self._save(state.to(phase, reason, self.clock()))

    def _save(self, state: AgentState) -> AgentState:
        # unchanged state is not rewritten: a poll that finds nothing to do writes nothing
        if state != self._saved:
            self.store.save(state)
            self._saved = state
        return state

    def _report(self, state: AgentState, host: bootc_mod.Host | None) -> None:
        booted = host.status.booted if host else None
        current = booted.image.image.image if booted and booted.image else ""
        try:
            self.coordinator.report(
                Report(
                    state.phase.value,
                    state.reason,
                    current,
                    state.desired.image if state.desired else "",
                )
            )
        except ReconcilerError as exc:
            log.warning("could not report state: %s", exc)


class StateCorrupt(ReconcilerError):
    pass


def _desired(state: AgentState) -> ImageTarget:
    if state.desired is None:
        raise StateCorrupt(f"the state file says {state.phase} but names no image")
    return state.desired


def _booted_image(host: bootc_mod.Host) -> bootc_mod.ImageStatus:
    booted = host.status.booted
    if booted is None or booted.image is None:
        raise bootc_mod.BootcError(
            "the booted deployment is not from a container image (rpm-ostree layering?); "
            "switch it to an image once by hand"
        )
    return booted.image


def state_with(state: AgentState, **changes: object) -> AgentState:
    """A copy with fields changed and the phase kept."""
    return state.to(state.phase, state.reason, state.changed_at, **changes)
