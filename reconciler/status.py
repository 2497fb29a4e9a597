"""What the reconciler last saw and did, per pool: the status `reconciler status` shows.

Stage: the loop's memory between passes (and across restarts). Kept as one JSON file in
the work directory, written atomically (temporary file, fsync, rename), so a crash
leaves the previous or the new status, never half of one.

Conditions follow Kubernetes/kstatus conventions (Flux's Ready/Stalled/Reconciling):
- `Ready`: the pool's pin is the image for its current inputs (or it is held);
- `Building`: a build for the pool is running;
- `Stalled`: the pool's config cannot be built until a new commit fixes it;
- `Held`: someone other than the reconciler set the pin; it stays until inputs change.
Each condition carries a reason, a message and the time it last changed; conditions
change (and are logged) only on transitions.

Nothing here decides anything: the controller does, this records it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CONDITIONS = ("Ready", "Building", "Stalled", "Held")
MAX_BACKOFF_S = 300.0
FIRST_BACKOFF_S = 5.0


@dataclass
class Condition:
    status: bool
    reason: str
    message: str
    since: float


@dataclass
class PoolStatus:
    pool: str
    conditions: dict[str, Condition] = field(default_factory=dict)
    image: str | None = None
    """The pinned image (`repo@sha256:…`) in Git, as of the last pass."""
    source_commit: str | None = None
    inputs_digest: str | None = None
    last_error: str | None = None
    failures: int = 0
    """Consecutive transient failures (for the backoff)."""
    retry_at: float | None = None
    """When a transient failure should be retried even if Git has not moved."""
    failed_inputs: str | None = None
    """The inputs digest whose build failed for good: not rebuilt until inputs change."""

    def set(self, name: str, status: bool, reason: str, message: str, now: float) -> bool:
        """Set a condition; True when it changed (a transition worth logging)."""
        old = self.conditions.get(name)
        if old is not None and (old.status, old.reason, old.message) == (status, reason, message):
            return False
        since = old.since if old is not None and old.status == status else now
        self.conditions[name] = Condition(status, reason, message, since)
        return True

    def is_true(self, name: str) -> bool:
        cond = self.conditions.get(name)
        return bool(cond and cond.status)

    def fail_transient(self, message: str, now: float) -> None:
        self.failures += 1
        self.last_error = message
        delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (self.failures - 1))
        self.retry_at = now + delay

    def clear_failures(self) -> None:
        self.failures = 0
        self.retry_at = None


@dataclass
class Status:
    repo: str = ""
    branch: str = ""
    observed_head: str | None = None
    """The remote head the last complete pass saw (after its own push, if any)."""
    last_pass: float | None = None
    """When the last pass that was not skipped ran (it re-resolved every base image)."""
    last_commit: str | None = None
    pools: dict[str, PoolStatus] = field(default_factory=dict)

    def pool(self, name: str) -> PoolStatus:
        if name not in self.pools:
            self.pools[name] = PoolStatus(name)
        return self.pools[name]

    def next_retry(self) -> float | None:
        times = [p.retry_at for p in self.pools.values() if p.retry_at is not None]
        return min(times) if times else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Status:
        pools = {}
        for name, raw in (doc.get("pools") or {}).items():
            conditions = {k: Condition(**v) for k, v in (raw.get("conditions") or {}).items()}
            pools[name] = PoolStatus(**{**raw, "conditions": conditions})
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known and k != "pools"}, pools=pools)


class StatusStore:
    """`<work_dir>/status.json`, read once and written after every pass."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Status:
        try:
            return Status.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return Status()
        except (ValueError, TypeError, KeyError):
            # A status file from another version or damaged by hand: start over. Git
            # holds everything that matters; this only saves work and keeps timestamps.
            return Status()

    def save(self, status: Status) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".status-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(status.to_json(), out, indent=2, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
