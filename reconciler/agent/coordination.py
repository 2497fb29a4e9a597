"""Coordination: how many machines of a pool may be updating at once, and who.

Stage: the agent's gate before it stages, drains and reboots. A `Coordinator` grants
or refuses an update slot, drains and uncordons the node, and reports the agent's
state where the fleet can see it. Backends:

- `NoCoordination`: a single machine; the slot is always granted.
- `FleetLock`: the protocol Zincati speaks (coreos/zincati
  `docs/development/fleetlock/protocol.md`): `POST /v1/pre-reboot` takes a slot of the
  group's re-entrant counting semaphore (the server decides how many), `POST
  /v1/steady-state` releases it (unlock-if-held); body
  `{"client_params": {"id": ..., "group": ...}}`, header `fleet-lock-protocol: true`;
  errors are `{"kind": ..., "value": ...}`. The group is the pool name. Like Zincati
  the agent reports steady state when it starts and is not mid-update, so a lock held
  by a crashed earlier run is released. Draining is the lock server's business
  (poseidon/fleetlock cordons and drains itself).
- `KubernetesCoordinator` (`reconciler.agent.kubernetes`): Lease slots sized by the
  pool's `maxUnavailable`, cordon and eviction, node annotations.

`max_unavailable` is MCO's rule (`controller/node/node_controller.go`
`maxUnavailable`): default 1; an integer as is; a percentage of the pool's node count
rounded down; a result below 1 becomes 1.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Protocol

from reconciler.agent.source import PoolPolicy
from reconciler.errors import ConfigError, ConfigProblem, ReconcilerError

log = logging.getLogger(__name__)

_PERCENT_RE = re.compile(r"^(\d+)%$")


def max_unavailable(value: int | str | None, pool_size: int) -> int:
    """How many of `pool_size` nodes may be unavailable at once (MCO semantics)."""
    if value is None:
        return 1
    if isinstance(value, int):
        count = value
    else:
        m = _PERCENT_RE.match(value.strip())
        if m is None:
            if value.strip().isdigit():
                count = int(value.strip())
            else:
                raise ConfigError(
                    ConfigProblem(
                        f"maxUnavailable {value!r} is neither an integer nor a percentage",
                        kind="MachineConfigPool",
                        field="spec.maxUnavailable",
                        fix="write e.g. 2 or '20%'",
                    )
                )
        else:
            count = int(m.group(1)) * pool_size // 100  # rounded down, as MCO scales it
    return max(count, 1)


@dataclass(frozen=True)
class Grant:
    granted: bool
    detail: str = ""
    """Why not (who holds the slots), or which slot was taken."""


@dataclass(frozen=True)
class DrainResult:
    done: bool
    detail: str = ""
    """What is still in the way (a PodDisruptionBudget, a pod still terminating)."""


@dataclass(frozen=True)
class Report:
    phase: str
    reason: str
    current_image: str
    desired_image: str
    pool: str = ""
    since: float | None = None
    """When the agent entered `phase` (for the rollout's soak time)."""


class Coordinator(Protocol):
    def acquire(self, policy: PoolPolicy, image: str = "") -> Grant:
        """Take (or renew) an update slot for this node to update to `image`; re-entrant.
        The Kubernetes backend also applies the pool's progressive rollout."""
        ...

    def release(self, policy: PoolPolicy) -> None:
        """Give the slot back (no-op when none is held)."""
        ...

    def cordon(self) -> bool:
        """Mark the node unschedulable; True if this call cordoned it (it was not)."""
        ...

    def drain(self) -> DrainResult:
        """Evict what may be evicted; done when nothing evictable is left."""
        ...

    def uncordon(self) -> None: ...

    def report(self, report: Report) -> None:
        """Publish the agent's state (on transitions)."""
        ...


class NoCoordination:
    """One machine on its own: always granted, nothing to drain, report to the log."""

    def acquire(self, policy: PoolPolicy, image: str = "") -> Grant:
        return Grant(True, "no coordination")

    def release(self, policy: PoolPolicy) -> None:
        pass

    def cordon(self) -> bool:
        return False

    def drain(self) -> DrainResult:
        return DrainResult(True)

    def uncordon(self) -> None:
        pass

    def report(self, report: Report) -> None:
        log.debug("state %s: %s", report.phase, report.reason)


class FleetLock(NoCoordination):
    """A FleetLock server (airlock, poseidon/fleetlock): see the module docstring."""

    def __init__(self, url: str, node_id: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.node_id = node_id
        self.timeout = timeout

    def _post(self, path: str, group: str) -> tuple[bool, str]:
        import httpx  # noqa: PLC0415 - only FleetLock talks HTTP: not paid by every agent step

        body = {"client_params": {"id": self.node_id, "group": group}}
        try:
            resp = httpx.post(
                f"{self.url}{path}",
                json=body,
                headers={"fleet-lock-protocol": "true"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            return False, f"FleetLock {self.url}{path}: {exc.__class__.__name__}: {exc}"
        if resp.status_code == 200:
            return True, ""
        try:
            err = resp.json()
            detail = f"{err.get('kind', 'error')}: {err.get('value', '')}"
        except (ValueError, AttributeError):
            detail = resp.text.strip()[:200]
        return False, f"FleetLock {path} answered {resp.status_code} ({detail})"

    def acquire(self, policy: PoolPolicy, image: str = "") -> Grant:
        ok, detail = self._post("/v1/pre-reboot", policy.name)
        return Grant(ok, "FleetLock slot taken" if ok else detail)

    def release(self, policy: PoolPolicy) -> None:
        ok, detail = self._post("/v1/steady-state", policy.name)
        if not ok:
            raise FleetLockError(detail)


class FleetLockError(ReconcilerError):
    """The lock server refused or failed to release; retried on the next step."""

    transient = True
