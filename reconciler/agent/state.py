"""The agent's persisted state machine: where an update stands on this host.

Stage: the agent's memory between steps, crashes and reboots. Input/output: one JSON
file, `<state-dir>/state.json`, written atomically (temp file in the same directory,
fsync, rename, fsync of the directory) so a power cut leaves either the old or the new
state, never half of one.

Phases (DESIGN §7):

    idle ─► staged ─► draining ─► rebooting ─► verifying ─► done
                                                   │
                                                   └─► rolling-back ─► rolled-back
    any step that cannot go on ─► degraded (with a reason; re-evaluated next step)

Each phase is written *before* the action that leaves it starts, and each action is
safe to resume: `bootc switch` is idempotent ("Image specification is unchanged."),
cordon and eviction are idempotent, a reboot is recognised by what booted (`BootMark`:
the boot id, systemd's soft-reboot count and the booted deployment; a soft reboot keeps
the boot id, contract §8), and
`bootc rollback` (which reverts when run twice) is only run when status shows no
rollback queued. So a crash at any point resumes in the recorded phase and never
repeats a half step.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

STATE_VERSION = 1


class Phase(enum.StrEnum):
    IDLE = "idle"
    STAGED = "staged"
    DRAINING = "draining"
    REBOOTING = "rebooting"
    VERIFYING = "verifying"
    ROLLING_BACK = "rolling-back"
    DONE = "done"
    ROLLED_BACK = "rolled-back"
    DEGRADED = "degraded"


# Phases in which the host is part-way through an update (a slot is held).
IN_FLIGHT = frozenset(
    {Phase.STAGED, Phase.DRAINING, Phase.REBOOTING, Phase.VERIFYING, Phase.ROLLING_BACK}
)


@dataclass(frozen=True)
class ImageTarget:
    image: str
    """`repo@sha256:...` as given to `bootc switch`."""
    digest: str


@dataclass(frozen=True)
class BootMark:
    """What identifies the running boot. Any field changing means the host restarted:
    a full reboot changes `boot_id`; a systemd soft reboot keeps it but counts up
    `soft_reboots` (`SoftRebootsCount`, systemd >= 256) and, into a staged deployment,
    changes the booted `deployment` (ostree checksum.serial) and `digest`."""

    boot_id: str
    soft_reboots: int | None = None
    """None where systemd does not report it (< 256)."""
    deployment: str = ""
    digest: str = ""

    def differs(self, other: BootMark) -> list[str]:
        """What changed from `other` to self, in words (empty: the same boot)."""
        changed = []
        if self.boot_id != other.boot_id:
            changed.append("a new boot id")
        if None not in (self.soft_reboots, other.soft_reboots) and (
            self.soft_reboots != other.soft_reboots
        ):
            changed.append("a soft reboot")
        if self.deployment != other.deployment or self.digest != other.digest:
            changed.append("another booted deployment")
        return changed


@dataclass(frozen=True)
class AgentState:
    phase: Phase = Phase.IDLE
    reason: str = ""
    """Why the agent is where it is (what it waits for, what failed)."""
    pool: str = ""
    revision: str = ""
    """The config repository commit the current pin was read at."""
    desired: ImageTarget | None = None
    """The pin being applied (or applied last)."""
    previous: ImageTarget | None = None
    """What was booted before the switch: what a rollback returns to."""
    failed_digest: str | None = None
    """A digest that failed verification here; not retried until the pin changes."""
    holds_slot: bool = False
    """A coordination slot (Lease / FleetLock) is held and must be released."""
    cordoned: bool = False
    """The agent cordoned the node (and so must uncordon it)."""
    boot_id: str = ""
    """The boot id when a reboot was requested (kept for older state files)."""
    boot_mark: BootMark | None = None
    """What was running when a reboot was requested: any change means it happened."""
    live_applied: str | None = None
    """The pin's `liveConfigDigest` last applied live on this host."""
    password_applied: bool = False
    """This agent set core's password hash from the config (never the hash itself):
    when the config stops giving one, the agent locks the password."""
    kernel_arguments: tuple[str, ...] | None = None
    """The pool's kernel arguments at the pin last done here (None: unknown), to tell
    whether an update changes them (a soft reboot would not apply them)."""
    reboot_requested_at: float = 0.0
    verify_started_at: float = 0.0
    changed_at: float = 0.0
    """When the phase last changed (seconds since the epoch)."""

    def to(self, phase: Phase, reason: str = "", now: float = 0.0, **changes: Any) -> AgentState:
        """A copy in `phase`; `changed_at` moves only when the phase does."""
        changed = now if phase != self.phase else self.changed_at
        return replace(self, phase=phase, reason=reason, changed_at=changed, **changes)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["version"] = STATE_VERSION
        doc["phase"] = self.phase.value
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AgentState:
        if doc.get("version") != STATE_VERSION:
            raise ValueError(f"state version {doc.get('version')!r}, expected {STATE_VERSION}")
        fields = {k: v for k, v in doc.items() if k != "version"}
        fields["phase"] = Phase(fields.get("phase", "idle"))
        for key in ("desired", "previous"):
            if fields.get(key) is not None:
                fields[key] = ImageTarget(**fields[key])
        if fields.get("boot_mark") is not None:
            fields["boot_mark"] = BootMark(**fields["boot_mark"])
        if fields.get("kernel_arguments") is not None:
            fields["kernel_arguments"] = tuple(fields["kernel_arguments"])
        return cls(**fields)


class StateStore:
    """`state.json` in the state directory, read and written whole and atomically."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "state.json"
        self.load_problem = ""
        """Set by `load` when the file was unreadable and the agent started over."""

    def load(self) -> AgentState:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return AgentState()
        try:
            return AgentState.from_json(json.loads(raw))
        except (ValueError, TypeError, KeyError) as exc:
            # Starting over is safe: every phase is re-derived from `bootc status`.
            # Keep the bad file for a human to look at.
            aside = self.path.with_name("state.json.unreadable")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            self.load_problem = (
                f"{self.path} was unreadable ({exc}); moved to {aside.name} and started over"
            )
            return AgentState()

    def save(self, state: AgentState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".state.json.{os.getpid()}.tmp")
        data = json.dumps(state.to_json(), indent=2, sort_keys=True).encode() + b"\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
