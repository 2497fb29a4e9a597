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
4. take a slot → `bootc switch -- <image>` (no `--apply`) → `staged` → a stage left
   download-only is unlocked (`bootc upgrade --from-downloaded`) or reported, never
   rebooted into → cordon and drain (`draining`) → `rebooting` (the `BootMark` recorded)
   → reboot command: a full reboot (`SYSTEMCTL_SKIP_AUTO_SOFT_REBOOT=1`), or with
   `soft_reboot="auto"` a soft one when bootc says the staged entry can and the kernel
   arguments stay the same (a soft reboot keeps the kernel command line).
A reboot is recognised by what booted: the boot id, systemd's soft-reboot count, or the
booted deployment changing (a soft reboot keeps the boot id; contract §8). After it,
verification passes only when the booted digest equals the pin, /usr carries no live
overlay, and the health checks pass (within the verify grace); otherwise `bootc
rollback` and a full reboot, the digest remembered as failed (flightctl's rule for a
fallback boot: no staged entry and booted == previous ⇒ rolled back, flightctl#458).
When the booted image is the pin, settings the pin marks live (core's SSH keys and
password hash, `liveConfigDigest`) are applied without a reboot (`reconciler.agent.live`).

Bad input (a malformed pin, a pin not by digest, a bootc that hangs or prints garbage)
ends the step in `degraded` (or keeps the in-flight phase) with the reason, and
nothing is switched.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from reconciler.adapters import bootc as bootc_mod
from reconciler.agent import live as live_mod
from reconciler.agent.coordination import Coordinator, Report
from reconciler.agent.health import HealthCheck, run_checks
from reconciler.agent.source import PinSource, PoolPolicy, Snapshot
from reconciler.agent.state import (
    IN_FLIGHT,
    AgentState,
    BootMark,
    ImageTarget,
    Phase,
    StateStore,
)
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
    soft_reboot: Literal["never", "auto"] = "never"
    """`auto`: soft-reboot when bootc says the staged entry can and the kernel arguments
    do not change; otherwise (and always for rollbacks) a full reboot."""


# systemd >= 255 turns `systemctl reboot` into a soft reboot when /run/nextroot is
# populated; this in its environment forces the full reboot (systemctl(1)).
SKIP_AUTO_SOFT_REBOOT = "SYSTEMCTL_SKIP_AUTO_SOFT_REBOOT"


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
    soft_reboots: Callable[[], int | None] = lambda: None
    """systemd's `SoftRebootsCount` (None where systemd does not report it)."""
    live: live_mod.LiveApplier | None = None
    """Applies the pin's live settings (SSH keys, password hash); None: not applied."""
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

    def cannot_follow(self, reason: str) -> AgentState:
        """Record that the pool cannot be followed at all (it does not exist on the
        branch): the host is degraded with `reason` (an update in flight keeps its
        phase), reported as every step's state is, and nothing touches bootc."""
        state = self.store.load()
        if state.pool != self.config.pool and state.phase not in IN_FLIGHT:
            state = AgentState(pool=self.config.pool, changed_at=self.clock())
        if state.reason != reason:
            state = self._stuck(state, reason)
            self._report(state, None)
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
                self._cancel_stage(host)
            failed = state.failed_digest if state.failed_digest == target.digest else None
            state = state_with(state, desired=target, failed_digest=failed)
            overlay = _overlay_problem(host)
            if overlay:
                return self._finish(state, Phase.DEGRADED, f"booted {target.digest}, but {overlay}")
            reason = f"booted {target.digest} as pinned at {snap.revision[:12]}"
            if state.phase == Phase.DONE and state.desired == target:
                reason = state.reason  # already done: no new words, no write, no patch
            state, live_note, live_ok = self._apply_live(state, snap)
            if not live_ok:
                return self._finish(state, Phase.DEGRADED, f"booted {target.digest}; {live_note}")
            if live_note:
                reason = f"booted {target.digest}; {live_note}"
            if state.kernel_arguments is None:
                state = state_with(state, kernel_arguments=self._kernel_arguments(snap))
            return self._finish(state, Phase.DONE, reason)
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
        if host.status.read_only:
            return self._save(
                state.to(
                    Phase.DEGRADED,
                    "bootc status says the physical root is read-only (a live medium?): "
                    "no update is possible",
                    now,
                )
            )
        if self.policy.paused:
            return self._save(
                state.to(
                    Phase.IDLE,
                    f"pool {self.config.pool} is paused; not starting the update to "
                    f"{target.digest}",
                    now,
                )
            )
        grant = self.coordinator.acquire(self.policy, target.image)
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
        result = None
        if host.staged_digest != target.digest:
            try:
                result = self.bootc.switch(target.image, soft_reboot=self._soft_flag())
            except bootc_mod.BootcError as exc:
                return self._finish(
                    state, Phase.DEGRADED, f"bootc switch to {target.image} failed: {exc}"
                )
            host = self.bootc.status()
        if host.staged_digest != target.digest:
            problem = _stage_mismatch(host, target, result)
            problem += self._cancel_stage(host)
            return self._finish(state, Phase.DEGRADED, problem)
        return self._save(
            state.to(
                Phase.STAGED,
                f"staged {target.digest}",
                now,
                desired=target,
                previous=previous,
            )
        )

    def _cancel_stage(self, host: bootc_mod.Host) -> str:
        """Undo a stage by switching back to the booted image with its own transport,
        reference and signature mode, as status shows them (a host booted by tag or from
        `containers-storage` too); never `bootc rollback`, which would also queue the
        rollback deployment (contract §3). Returns "" or what failed, for the reason."""
        booted = host.status.booted
        if host.status.staged is None or booted is None or booted.image is None:
            return ""
        try:
            self.bootc.switch_to(booted.image.image)
        except bootc_mod.BootcError as exc:
            log.warning("could not cancel the staged deployment: %s", exc)
            return f"; cancelling the staged deployment failed too: {exc}"
        return ""

    def _soft_flag(self) -> str | None:
        # bootc prepares /run/nextroot only with --soft-reboot; we decide at reboot time
        return "auto" if self.config.soft_reboot == "auto" else None

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
                reason = f"pin went back to the booted {pin.digest}; update cancelled"
                reason += self._cancel_stage(host)
                return self._finish(
                    state_with(state, desired=ImageTarget(pin.image, pin.digest)),
                    Phase.DONE,
                    reason,
                )
            return self._stage(state, host, ImageTarget(pin.image, pin.digest))
        if host.staged_digest != desired_target.digest:
            return self._stage(state, host, desired_target)
        host, locked = self._unlock_download_only(host, desired_target)
        if locked:
            return self._save(state.to(state.phase, locked, now))
        grant = self.coordinator.acquire(self.policy, desired_target.image)  # renews our slot
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
        host = self.bootc.status()  # fresh: what the reboot will apply
        host, locked = self._unlock_download_only(host, desired_target)
        if locked:
            return self._save(state.to(Phase.DRAINING, locked, now))
        soft = self._soft_reboot_ok(state, host, snap)
        how = "soft-rebooting" if soft else "rebooting"
        return self._reboot(
            state, host, Phase.REBOOTING, f"{how} into {desired_target.digest}", soft=soft
        )

    def _unlock_download_only(
        self, host: bootc_mod.Host, target: ImageTarget
    ) -> tuple[bootc_mod.Host, str]:
        """A staged entry left `downloadOnly` (`bootc upgrade --download-only`) is not
        applied at reboot: unlock it with `bootc upgrade --from-downloaded`, or say why
        not (the caller stays in its phase; the digest is not failed)."""
        staged = host.status.staged
        if staged is None or not staged.download_only:
            return host, ""
        try:
            self.bootc.unlock_downloaded()
            host = self.bootc.status()
        except bootc_mod.BootcError as exc:
            return host, (
                f"{target.digest} is staged download-only (`bootc upgrade --download-only`), "
                f"so a reboot would not apply it, and unlocking it failed: {exc}; not "
                "rebooting (run `bootc upgrade --from-downloaded` on the host)"
            )
        staged = host.status.staged
        if staged is None or staged.digest != target.digest or staged.download_only:
            return host, (
                f"{target.digest} is staged download-only and `bootc upgrade "
                "--from-downloaded` did not unlock it; not rebooting"
            )
        log.info("unlocked the download-only stage of %s", target.digest)
        return host, ""

    def _soft_reboot_ok(self, state: AgentState, host: bootc_mod.Host, snap: Snapshot) -> bool:
        """A soft reboot keeps the kernel and its command line: only when bootc says the
        staged entry can (`softRebootCapable`: same kernel, initramfs and SELinux policy)
        and the pool's kernel arguments are known not to change."""
        staged = host.status.staged
        if self.config.soft_reboot != "auto" or staged is None or not staged.soft_reboot_capable:
            return False
        if self.live is None or snap.pin is None or state.kernel_arguments is None:
            return False
        settings = self.live.settings(self.source, self.config.pool, snap)
        return settings is not None and settings.kernel_arguments == state.kernel_arguments

    def _boot_mark(self, host: bootc_mod.Host) -> BootMark:
        booted = host.status.booted
        deployment = ""
        if booted is not None and booted.ostree is not None:
            deployment = f"{booted.ostree.checksum}.{booted.ostree.deploy_serial}"
        return BootMark(self.boot_id(), self.soft_reboots(), deployment, host.booted_digest or "")

    def _rebooted(self, state: AgentState, host: bootc_mod.Host) -> list[str]:
        """How the host shows it restarted since the reboot was requested (empty: not)."""
        if state.boot_mark is None:  # a state file from before boot marks
            return ["a new boot id"] if state.boot_id and self.boot_id() != state.boot_id else []
        return self._boot_mark(host).differs(state.boot_mark)

    def _reboot(
        self,
        state: AgentState,
        host: bootc_mod.Host,
        phase: Phase,
        reason: str,
        *,
        soft: bool = False,
    ) -> AgentState:
        now = self.clock()
        state = self._save(
            state.to(
                phase,
                reason,
                now,
                boot_id=self.boot_id(),
                boot_mark=self._boot_mark(host),
                reboot_requested_at=now,
            )
        )
        argv = list(self.reboot_command)
        env = dict(os.environ)
        if soft:
            env.pop(SKIP_AUTO_SOFT_REBOOT, None)
        else:
            env[SKIP_AUTO_SOFT_REBOOT] = "1"
        log.info("%s: running %s", reason, shlex.join(argv))
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.config.reboot_timeout,
                stdin=subprocess.DEVNULL,
                check=False,
                env=env,
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
        changed = self._rebooted(state, host)
        if not changed:
            staged = host.status.staged
            if staged is None or staged.digest != desired_target.digest:
                # no restart seen, and the stage is gone: someone ran bootc by hand
                return self._save(
                    state.to(
                        Phase.STAGED,
                        "the staged deployment disappeared before any reboot (changed by "
                        "another bootc client?); staging again",
                        now,
                    )
                )
            if staged.download_only:
                return self._save(
                    state.to(Phase.STAGED, "the stage was made download-only; unlocking", now)
                )
            if now - state.reboot_requested_at >= self.config.reboot_retry:
                return self._reboot(state, host, Phase.REBOOTING, state.reason)
            return state
        return self._save(
            state.to(
                Phase.VERIFYING,
                f"verifying the booted image after {' and '.join(changed)}",
                now,
                boot_id="",
                boot_mark=None,
                verify_started_at=now,
            )
        )

    def _verify(self, state: AgentState, host: bootc_mod.Host) -> AgentState:
        now = self.clock()
        desired_target = _desired(state)
        desired = desired_target.digest
        if host.booted_digest != desired:
            if host.staged_digest == desired:
                # the restart did not apply the stage (a soft reboot into the same root):
                # not a fallback; reboot again, fully
                return self._save(
                    state.to(
                        Phase.DRAINING,
                        f"the host restarted but still boots {host.booted_digest} with "
                        f"{desired} staged (the restart did not apply it); rebooting again",
                        now,
                    )
                )
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
        overlay = _overlay_problem(host)
        if overlay:
            return self._finish(state, Phase.DEGRADED, f"booted {desired}, but {overlay}")
        result = run_checks(self.health_checks)
        if result.verdict == "pass":
            reason = f"booted {desired}; health checks passed"
            snap = self._snapshot()
            state = state_with(state, kernel_arguments=self._kernel_arguments(snap))
            if snap.pin is not None and snap.pin.spec.digest == desired:
                state, note, _ = self._apply_live(state, snap)
                reason += f"; {note}" if note else ""
            return self._finish(state, Phase.DONE, reason)
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
                boot_mark=None,
            )
        )
        return self._roll_back(state, host)

    def _roll_back(self, state: AgentState, host: bootc_mod.Host) -> AgentState:
        now = self.clock()
        failed = state.failed_digest
        previous = state.previous.digest if state.previous else None
        if state.boot_id and self._rebooted(state, host):
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
            return self._reboot(state, host, Phase.ROLLING_BACK, state.reason)
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
        return self._reboot(state, host, Phase.ROLLING_BACK, state.reason)

    # -- live settings --

    def _apply_live(self, state: AgentState, snap: Snapshot) -> tuple[AgentState, str, bool]:
        """Apply the pin's live settings if they changed: (state, what happened, ok)."""
        pin = snap.pin
        if self.live is None or pin is None:
            return state, "", True
        want = pin.spec.live_config_digest
        if want == state.live_applied:
            return state, "", True
        settings: live_mod.NodeSettings | None
        if want is None:
            # the pool no longer gives core keys or a hash: the keys go (the image
            # never carries them, so nothing else would remove them) and a password
            # this agent set is locked (live.py, as MCO's SetPasswordHash)
            settings = live_mod.NodeSettings()
        else:
            settings = self.live.settings(self.source, self.config.pool, snap)
        if settings is None or (want is not None and settings.live_digest() != want):
            return (
                state,
                "the live settings (core's SSH keys, password hash) at the pin's "
                f"sourceCommit {pin.spec.source_commit[:12]} cannot be read or do not match "
                f"its liveConfigDigest {want}; not applied",
                False,
            )
        try:
            what = self.live.apply(settings, lock_password=state.password_applied)
        except live_mod.LiveError as exc:
            return state, f"applying live settings failed: {exc}", False
        log.info("applied %s live (pin %s)", what, snap.revision[:12])
        state = state_with(
            state, live_applied=want, password_applied=settings.password_hash is not None
        )
        return state, f"applied {what} live, without a reboot", True

    def _kernel_arguments(self, snap: Snapshot) -> tuple[str, ...] | None:
        if self.live is None or snap.pin is None:
            return None
        settings = self.live.settings(self.source, self.config.pool, snap)
        return settings.kernel_arguments if settings is not None else None

    # -- endings --

    def _finish(self, state: AgentState, phase: Phase, reason: str) -> AgentState:
        """Leave the update: uncordon if we cordoned, give the slot back, record."""
        now = self.clock()
        state = self._save(state.to(phase, reason, now, boot_id="", boot_mark=None))
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
                    pool=state.pool or self.config.pool,
                    since=state.changed_at or None,
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


def _overlay_problem(host: bootc_mod.Host) -> str:
    """Why a host whose /usr is not its image cannot count as done ("" if it is)."""
    overlay = host.status.usr_overlay
    if overlay is None:
        return ""
    return (
        f"/usr carries a live overlay ({overlay.access_mode}, {overlay.persistence}; "
        "`bootc usr-overlay`), so what runs is not the image; reboot to drop a transient "
        "overlay, or redeploy the image"
    )


def _stage_mismatch(
    host: bootc_mod.Host, target: ImageTarget, result: bootc_mod.SwitchResult | None
) -> str:
    """Say what actually happened when the stage is not the pin after a switch."""
    staged = host.status.staged
    if staged is None:
        if result is not None and result.unchanged:
            spec = host.spec.image.image if host.spec.image else "nothing"
            return (
                f"bootc switch to {target.image} answered 'Image specification is "
                f"unchanged.' and staged nothing: the host's spec already names {spec} "
                f"(booted {host.booted_digest})"
            )
        return f"bootc switch to {target.image} left no staged deployment"
    if staged.image is not None and staged.image.image.image == target.image:
        # bootc records the per-architecture manifest's digest (contract §1)
        return (
            f"bootc staged {staged.digest} for {target.image}, whose digest is "
            f"{target.digest}: pins must name the per-architecture image manifest, not an "
            "index"
        )
    shown = staged.image.image.image if staged.image else "a non-image deployment"
    return (
        f"after bootc switch to {target.image} the staged deployment is {shown} "
        f"({staged.digest}): another bootc client changed the host meanwhile"
    )


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
