"""Health checks: is the freshly booted image good enough to keep?

Stage: the agent's `verifying` phase. Inputs: checks (the systemd unit
`boot-complete.target` by default, plus admin commands), each with a timeout.
Output: a `HealthResult` that is passed, failed (roll back now) or pending (not
decided yet: the agent asks again until its verify grace runs out, then rolls back).
A unit in state `failed` is final; an admin command that fails is pending, because a
service may need a few seconds after boot (greenboot likewise retries its checks).
Checks run in order and the first that does not pass decides, so admin commands are
only judged once `boot-complete.target` is active.

Why `boot-complete.target`: greenboot orders its required checks before it and
systemd's boot assessment uses it; Flight Control learnt to declare success only once
it is active, else the agent commits the new image before greenboot rolls back
(flightctl#2470; reference `bootc-contract.md` §5). `systemctl is-active` answers
`active` (pass), `activating`/`inactive` (pending: the boot is not over) or `failed`
(fail).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Verdict = Literal["pass", "fail", "pending"]


@dataclass(frozen=True)
class HealthResult:
    verdict: Verdict
    reason: str = ""


class HealthCheck(Protocol):
    @property
    def name(self) -> str: ...

    def run(self) -> HealthResult: ...


def _run(argv: Sequence[str], timeout: float) -> tuple[int | None, str]:
    """(exit code or None on timeout/not found, last output line)."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"did not finish within {timeout:g}s"
    except OSError as exc:
        return None, f"cannot run {argv[0]!r}: {exc.strerror}"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode, (lines[-1][:300] if lines else "")


@dataclass(frozen=True)
class UnitActive:
    """`systemctl is-active UNIT` must say `active`."""

    unit: str = "boot-complete.target"
    systemctl: str = "systemctl"
    timeout: float = 30.0

    @property
    def name(self) -> str:
        return self.unit

    def run(self) -> HealthResult:
        code, out = _run([self.systemctl, "is-active", self.unit], self.timeout)
        state = out.strip()
        if code == 0 and state == "active":
            return HealthResult("pass")
        if state in ("activating", "inactive", "reloading") or code is None:
            detail = state or out
            return HealthResult("pending", f"{self.unit} is not active yet ({detail})")
        return HealthResult("fail", f"{self.unit} is {state or f'not active (exit {code})'}")


@dataclass(frozen=True)
class CommandCheck:
    """An admin's command: exit 0 passes; anything else (or a timeout) is pending until
    the agent's verify grace runs out."""

    argv: tuple[str, ...]
    timeout: float = 60.0

    @property
    def name(self) -> str:
        return " ".join(self.argv)

    def run(self) -> HealthResult:
        code, out = _run(self.argv, self.timeout)
        if code == 0:
            return HealthResult("pass")
        why = out if code is None else f"exit {code}" + (f": {out}" if out else "")
        return HealthResult("pending", f"health check `{self.name}` failed ({why})")


def run_checks(checks: Sequence[HealthCheck]) -> HealthResult:
    """In order; the first check that does not pass decides."""
    for check in checks:
        result = check.run()
        if result.verdict != "pass":
            return result
    return HealthResult("pass")


def read_boot_id(path: str | os.PathLike[str] = "/proc/sys/kernel/random/boot_id") -> str:
    """The kernel's id of this boot: it changes on every reboot."""
    with open(path) as handle:
        return handle.read().strip()


def read_soft_reboots(
    systemctl: Sequence[str] = ("systemctl",), timeout: float = 30.0
) -> int | None:
    """systemd's count of soft reboots since the kernel booted (`SoftRebootsCount`,
    systemd >= 256); None where it is not reported. A soft reboot keeps the boot id,
    so this is one of the signs that one happened (contract §8)."""
    try:
        proc = subprocess.run(
            [*systemctl, "show", "-P", "SoftRebootsCount"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = proc.stdout.strip()
    return int(text) if proc.returncode == 0 and text.isdigit() else None
