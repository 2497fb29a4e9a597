"""The pools' status in the cluster: one BootcPool per pool, and Events on transitions.

Stage: an observer of `Reconciler.run` (`--cluster-status`), after every pass, skipped
ones too (nodes roll while Git stands still). Inputs: the loop's `Status`, the Nodes
and their agents' annotations (`reconciler.core.rollout` names them), the pools'
rollout policies at the observed head. Effects: `BootcPool/<pool>` in the namespace,
created when missing, its `/status` replaced only when it changed (with the
resourceVersion read: a conflict is read again and retried once); BootcPools of pools
gone from Git deleted; an Event on the BootcPool when Ready, Stalled, Held, Degraded or
the rollout's phase changes. Why a CRD: docs/design/cluster.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from reconciler.adapters import kube as kubeapi
from reconciler.adapters.bootcpools import API_VERSION, KIND, BootcPools
from reconciler.adapters.git import Mirror
from reconciler.core import load, model, rollout
from reconciler.errors import ReconcilerError
from reconciler.loop.controller import PassOutcome
from reconciler.loop.status import CONDITIONS, READY, Condition, PoolStatus, Reason, Status

log = logging.getLogger("reconciler.clusterstatus")

MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "bootc-reconciler"
DEGRADED = "Degraded"
NODE_DEGRADED = "NodeDegraded"
"""Degraded: nodes of the pool are degraded or rolled back (MCO's reason)."""
# Conditions whose transitions are worth an Event.
EVENT_CONDITIONS = (READY, "Stalled", "Held", DEGRADED)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pool_status_doc(
    pool: PoolStatus,
    status: Status,
    members: Sequence[rollout.NodeView],
    policy: model.Rollout | None,
    now: float,
) -> dict[str, Any]:
    """A BootcPool's `.status`: conditions, pin, counts in MCO's names, rollout."""
    image = pool.image or ""
    counts = rollout.count(members, image)
    state = rollout.progress(policy, members, image, now)
    conditions = []
    for name in CONDITIONS:
        cond = pool.conditions.get(name)
        if cond is None:
            continue
        conditions.append({
            "type": name,
            "status": "True" if cond.status else "False",
            "reason": cond.reason or Reason.AS_EXPECTED,
            "message": cond.message[:32768],
            "lastTransitionTime": rfc3339(cond.since),
        })  # fmt: skip
    failed = [n for n in members if n.phase in rollout.FAILED_PHASES]
    conditions.append({
        "type": DEGRADED,
        "status": "True" if failed else "False",
        "reason": NODE_DEGRADED if failed else Reason.AS_EXPECTED,
        "message": "; ".join(f"{n.name}: {n.phase}: {n.reason}" for n in failed)[:32768],
        "lastTransitionTime": "",  # set from the previous status by the writer
    })  # fmt: skip
    doc: dict[str, Any] = {
        "conditions": conditions,
        "machineCount": counts.machine_count,
        "updatedMachineCount": counts.updated_machine_count,
        "readyMachineCount": counts.ready_machine_count,
        "unavailableMachineCount": counts.unavailable_machine_count,
        "degradedMachineCount": counts.degraded_machine_count,
        "rollout": {
            "phase": state.phase if image else "",
            "reason": state.reason,
            "canaryMachines": list(state.canary),
            "failedMachines": list(state.failed),
        },
    }
    if status.observed_head:
        doc["observedHead"] = status.observed_head
    if image:
        doc["image"] = image
        doc["digest"] = image.rpartition("@")[2][:19]
    if pool.source_commit:
        doc["sourceCommit"] = pool.source_commit
    return doc


def _keep_transition_times(new: dict[str, Any], old: Mapping[str, Any], now: float) -> None:
    """A condition's lastTransitionTime moves only when its status does (Kubernetes
    API conventions); the Degraded one has no time of its own in `Status`."""
    before = {c.get("type"): c for c in old.get("conditions") or []}
    for cond in new["conditions"]:
        prev = before.get(cond["type"])
        if cond["lastTransitionTime"] == "":
            same = prev is not None and prev.get("status") == cond["status"]
            cond["lastTransitionTime"] = prev["lastTransitionTime"] if same else rfc3339(now)  # type: ignore[index]


class RolloutsInGit:
    """Each pool's MachineOSConfig `rollout` at a head of the mirror, loaded again only
    when the head moves."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self._head: str | None = None
        self._policies: dict[str, model.Rollout | None] = {}

    def __call__(self, head: str) -> Mapping[str, model.Rollout | None]:
        if head != self._head:
            try:
                repo = load.load_repository(self.mirror.read_files(head, load.is_config_path))
                self._policies = {
                    name: loaded.obj.spec.rollout for name, loaded in repo.os_configs.items()
                }
            except ReconcilerError as exc:
                log.warning("cannot read the rollout policies at %s: %s", head[:10], exc)
                self._policies = {}
            self._head = head
        return self._policies


class ClusterStatus:
    """Writes BootcPools and their Events (see the module docstring)."""

    def __init__(
        self,
        api: kubeapi.Kube,
        namespace: str,
        rollouts: Callable[[str], Mapping[str, model.Rollout | None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.pools = BootcPools(api, namespace)
        self.rollouts = rollouts
        """Each pool's rollout policy at a head (`RolloutsInGit`)."""
        self.clock = clock
        self._failing = ""

    def pass_started(self) -> None:
        pass

    def pass_finished(self, outcome: PassOutcome) -> None:
        """Publish; a failure is logged when it starts or changes, not every pass."""
        try:
            self.publish(outcome.status)
        except ReconcilerError as exc:
            if str(exc) != self._failing:
                hint = ""
                if isinstance(exc, kubeapi.NotFound):
                    hint = "; is the BootcPool CRD applied (kubectl apply -k deploy/crds/)?"
                log.warning("cannot write the pools' status to the cluster: %s%s", exc, hint)
            self._failing = str(exc)
            return
        if self._failing:
            log.info("writing the pools' status to the cluster works again")
        self._failing = ""

    def publish(self, status: Status) -> None:
        if status.observed_head is None:
            return
        now = self.clock()
        nodes = [rollout.node_view(n) for n in self.api.list_nodes(None)]
        policies = self.rollouts(status.observed_head)
        existing = {o["metadata"]["name"]: o for o in self.pools.list()}
        for name, pool in sorted(status.pools.items()):
            members = [n for n in nodes if n.pool == name]
            doc = pool_status_doc(pool, status, members, policies.get(name), now)
            obj = existing.get(name)
            if obj is None:
                obj = self.pools.create(name, {MANAGED_BY: COMPONENT})
            self._write(obj, doc, now)
        for name, obj in existing.items():
            labels = obj["metadata"].get("labels") or {}
            if name not in status.pools and labels.get(MANAGED_BY) == COMPONENT:
                self.pools.delete(name)
                log.info("pool %s is gone from Git: deleted its BootcPool", name)

    def _write(self, obj: dict[str, Any], doc: dict[str, Any], now: float) -> None:
        for attempt in range(2):
            old = obj.get("status") or {}
            _keep_transition_times(doc, old, now)
            if doc == old:
                return
            try:
                written = self.pools.replace_status({**obj, "status": doc})
            except kubeapi.Conflict:
                fresh = self.pools.get(obj["metadata"]["name"])
                if fresh is None or attempt:
                    raise
                obj = fresh
                continue
            self._events(written, old, doc)
            return

    # -- events --

    def _events(self, obj: dict[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        before = {c.get("type"): c for c in old.get("conditions") or []}
        for cond in new.get("conditions") or []:
            if cond["type"] not in EVENT_CONDITIONS:
                continue
            prev = before.get(cond["type"]) or {}
            key = ("status", "reason", "message")
            if tuple(prev.get(k) for k in key) == tuple(cond[k] for k in key):
                continue
            if not prev and cond["status"] == "False" and cond["type"] != READY:
                continue  # a new pool's quiet conditions are no news
            warning = (cond["type"] == READY and cond["status"] == "False") or (
                cond["type"] in ("Stalled", DEGRADED) and cond["status"] == "True"
            )
            self._event(obj, cond["reason"], cond["message"] or cond["type"], warning)
        phase = (new.get("rollout") or {}).get("phase") or ""
        if phase and phase != (old.get("rollout") or {}).get("phase"):
            reason = (new.get("rollout") or {}).get("reason") or f"rollout {phase.lower()}"
            self._event(obj, f"Rollout{phase}", reason, phase == rollout.PAUSED)

    def _event(self, obj: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        meta = obj["metadata"]
        stamp = rfc3339(self.clock())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                "namespace": self.namespace, "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "bootc-reconciler"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }  # fmt: skip
        try:
            self.api.create_event(self.namespace, body)
        except kubeapi.KubeError as exc:  # best effort: the status is the record
            log.warning("could not record event %s on BootcPool %s: %s", reason, meta["name"], exc)


# -- reading it back (`reconciler status` in a cluster) --

FLEET_KEYS = (
    "machineCount", "updatedMachineCount", "readyMachineCount", "unavailableMachineCount",
    "degradedMachineCount",
)  # fmt: skip


def status_from_cluster(
    objects: Sequence[Mapping[str, Any]],
) -> tuple[Status, dict[str, dict[str, Any]]]:
    """BootcPools → the `Status` they were written from (conditions, pin, head) and,
    per pool, what only the cluster knows: the fleet counts and the rollout."""
    status = Status()
    extra: dict[str, dict[str, Any]] = {}
    for obj in objects:
        name = obj["metadata"]["name"]
        doc = obj.get("status") or {}
        pool = status.pool(name)
        pool.image = doc.get("image")
        pool.source_commit = doc.get("sourceCommit")
        for cond in doc.get("conditions") or []:
            if cond.get("type") not in CONDITIONS:
                continue
            reason = cond.get("reason") or ""
            pool.conditions[cond["type"]] = Condition(
                cond.get("status") == "True",
                "" if reason == Reason.AS_EXPECTED else reason,
                cond.get("message") or "",
                rollout.parse_time(cond.get("lastTransitionTime")) or 0.0,
            )
            if cond["type"] == READY and cond.get("status") != "True":
                pool.last_error = cond.get("message") or None
        if doc.get("observedHead"):
            status.observed_head = doc["observedHead"]
        extra[name] = {
            "fleet": {k: int(doc.get(k) or 0) for k in FLEET_KEYS},
            "rollout": dict(doc.get("rollout") or {}),
        }
    return status, extra
