"""Leader election: one reconciler replica builds and commits; the others stand by.

Stage: the run-forever runtime's gate (`reconciler run --leader-elect`). Input: the
Kubernetes API (a coordination.k8s.io/v1 Lease in the reconciler's namespace), this
replica's identity, the durations. Output: whether this replica leads, kept current by
`LeaderElector.run`.

The semantics are client-go's `tools/leaderelection` (`tryAcquireOrRenew`):
- the Lease's `holderIdentity`, `leaseDurationSeconds`, `acquireTime`, `renewTime` and
  `leaseTransitions` are the record; every write is a PUT with the `resourceVersion`
  read just before (or a create), so two candidates never both win (409 → lost);
- a candidate takes the Lease only when it is free, or when its record has not changed
  for `lease_duration` *as observed on this replica's own clock* (client-go's
  `observedTime`: no trust in another machine's clock); taking it over bumps
  `leaseTransitions` and sets `acquireTime`;
- the leader renews every `retry_period`; when it could not renew for `renew_deadline`
  it stops leading (it may no longer be the leader), before another can take over
  (`renew_deadline < lease_duration`);
- a replica that stops cleanly releases the Lease (`holderIdentity` emptied,
  `leaseDurationSeconds: 1`: client-go's `ReleaseOnCancel`), so the other takes over at
  once; one that dies is replaced within `lease_duration`.

Git stays the lock that matters (pushes are compare-and-swap): leadership only keeps
two replicas from building the same images.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from reconciler.adapters import kube as kubeapi
from reconciler.errors import ReconcilerError

log = logging.getLogger("reconciler.leader")

LEASE_NAME = "reconciler-leader"


def micro_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api: kubeapi.Kube,
        namespace: str,
        identity: str,
        *,
        name: str = LEASE_NAME,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("leader election needs retry period < renew deadline < lease duration")
        self.api = api
        self.namespace = namespace
        self.identity = identity
        self.name = name
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self.monotonic = monotonic
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._leading = threading.Event()
        self.on_change: Callable[[bool], None] = lambda leading: None

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    def holder(self) -> str | None:
        lease = self.api.get_lease(self.namespace, self.name)
        return ((lease or {}).get("spec") or {}).get("holderIdentity") or None

    # -- one attempt --

    def try_acquire_or_renew(self) -> bool:
        """One client-go `tryAcquireOrRenew`: True when this replica holds the Lease."""
        now = self.clock()
        lease = self.api.get_lease(self.namespace, self.name)
        if lease is None:
            body = self._body(None, now)
            try:
                self.api.create_lease(self.namespace, body)
            except kubeapi.Conflict:
                return False  # another candidate created it first
            self._observe(body["spec"])
            return True
        spec = lease.get("spec") or {}
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and self._observed_at + duration > self.monotonic():
            return False  # held by another, and renewed within its duration (as seen here)
        body = self._body(lease, now)
        try:
            self.api.replace_lease(self.namespace, body)
        except kubeapi.Conflict:
            return False  # someone else wrote it in between
        self._observe(body["spec"])
        return True

    def _observe(self, spec: dict[str, Any]) -> None:
        record = tuple(spec.get(k) for k in ("holderIdentity", "renewTime", "leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, self.monotonic()

    def _body(self, lease: dict[str, Any] | None, now: float) -> dict[str, Any]:
        spec = dict((lease or {}).get("spec") or {})
        stamp = micro_time(now)
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = stamp
            if lease is not None:
                spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            else:
                spec["leaseTransitions"] = 0
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=int(self.lease_duration),
            renewTime=stamp,
        )
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if lease is not None:
            meta = {**lease["metadata"], **meta}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": spec}  # fmt: skip

    def release(self) -> None:
        """Give the Lease up now (a clean stop), if this replica holds it."""
        try:
            lease = self.api.get_lease(self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1,
                    "renewTime": micro_time(self.clock())}  # fmt: skip
            self.api.replace_lease(self.namespace, {**lease, "spec": spec})
            log.info("released the leader Lease %s/%s", self.namespace, self.name)
        except ReconcilerError as exc:
            log.warning("could not release the leader Lease: %s", exc)

    # -- the loop --

    def run(self, stop: threading.Event, beat: Callable[[], None] = lambda: None) -> None:
        """Until `stop`: stand by, acquire, renew; `leading` says where it stands, and
        `on_change(leading)` is called on each change. Releases the Lease at the end."""
        last_renew = self.monotonic()
        failing = ""
        while not stop.is_set():
            try:
                ok = self.try_acquire_or_renew()
                if failing:
                    log.info("leader election: the API answers again")
                failing = ""
            except ReconcilerError as exc:
                if str(exc) != failing:  # once per kind of failure, not every retry
                    log.warning("leader election: %s", exc)
                failing = str(exc)
                ok = False
            now = self.monotonic()
            if ok:
                last_renew = now
                if not self.leading:
                    log.info("became the leader (Lease %s/%s)", self.namespace, self.name)
                    self._set(True)
            elif self.leading and now - last_renew >= self.renew_deadline:
                log.warning(
                    "could not renew the leader Lease for %.0fs; standing down", now - last_renew
                )
                self._set(False)
            beat()
            stop.wait(self.retry_period)
        if self.leading:
            self._set(False)
            self.release()

    def _set(self, leading: bool) -> None:
        if leading:
            self._leading.set()
        else:
            self._leading.clear()
        self.on_change(leading)
