"""Kubernetes coordination: Lease slots per pool, cordon + eviction, node annotations.

Stage: the agent's gate in a cluster (DaemonSet). Inputs: the API (through
`reconciler.adapters.kube`), this node's name, the pool's policy. Effects:

- **Slots.** A pool has `max_unavailable(pool)` slots, Leases
  `reconciler-agent-<pool>-<i>` (coordination.k8s.io/v1) in the agent's namespace,
  labelled `gitops.bootc.dev/pool=<pool>`. Taking one is a create (409 → someone else
  did) or a PUT of a free or expired Lease with its resourceVersion (409 → someone
  else won); so two nodes never hold the same slot, and at most N hold slots. The
  holder renews it on every step; `leaseDurationSeconds` (default 1 h) must cover a
  drain, reboot and verification, and only expires a slot whose holder died. Like
  MCO (`capacity = maxUnavailable - unavailable`), nodes of the pool that are
  unavailable for other reasons (NotReady or cordoned) and hold no slot take capacity
  too: only slots `0 .. N - that - 1` are tried. That count comes from a node list
  read just before, so it is as fresh as MCO's informer cache, not a lock.
- **Drain.** Cordon (`spec.unschedulable`), then evict every pod on the node through
  the Eviction API, so PodDisruptionBudgets are honoured (429 → try again next step,
  never a plain delete); DaemonSet pods, mirror pods and finished pods are left, as
  `kubectl drain --ignore-daemonsets` does. No timeout forces it: a node whose drain
  is blocked stays `draining`, with the blocking budget in its reason.
- **Rollout.** With a `rollout` in the pool's MachineOSConfig, a node starts only when
  `reconciler.core.rollout.progress`, over the pool's nodes' annotations, lets it (the
  canary batch first, then the soak, never while paused); the reason is the refusal.
- **Annotations** (in the spirit of MCO's `machineconfiguration.openshift.io/*`, named
  in `reconciler.core.rollout`, documented in deploy/README.md):
  `gitops.bootc.dev/state`, `/reason`, `/current-image`, `/desired-image`, `/pool`,
  `/state-since`; and an Event on the node when the phase changes to one worth telling
  (`EVENT_REASONS`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from reconciler.adapters import kube as kubeapi
from reconciler.agent.coordination import DrainResult, Grant, Report, max_unavailable
from reconciler.agent.source import PoolPolicy
from reconciler.core import model, rollout

log = logging.getLogger(__name__)

ANNOTATION_PREFIX = rollout.ANNOTATION_PREFIX
POOL_LABEL = "gitops.bootc.dev/pool"
HOLDER_LABEL = "gitops.bootc.dev/holder"


def _micro_time(ts: float) -> str:
    # Lease times are MicroTime: RFC 3339 with microseconds
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str | None) -> float | None:
    return rollout.parse_time(text)


# The phases an Event is recorded for, with its reason and type: what an admin watching
# `kubectl get events` wants to see, not every step.
EVENT_REASONS: dict[str, tuple[str, str]] = {
    "staged": ("UpdateStarted", "Normal"),
    "done": ("Updated", "Normal"),
    "rolled-back": ("RolledBack", "Warning"),
    "degraded": ("UpdateDegraded", "Warning"),
}


def selector_string(selector: model.LabelSelector | None) -> str | None:
    """A LabelSelector as the `labelSelector` query string."""
    if selector is None:
        return None
    terms = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    for req in selector.match_expressions:
        if req.operator in ("In", "NotIn"):
            terms.append(f"{req.key} {req.operator.lower()} ({','.join(req.values)})")
        elif req.operator == "Exists":
            terms.append(req.key)
        else:
            terms.append(f"!{req.key}")
    return ",".join(terms) or None


def node_unavailable(node: dict[str, Any]) -> bool:
    """MCO's notion (`status.go`): not Ready, or unschedulable."""
    if (node.get("spec") or {}).get("unschedulable"):
        return True
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") != "True")
    return True


class KubernetesCoordinator:
    def __init__(
        self,
        api: kubeapi.Kube,
        node: str,
        namespace: str,
        *,
        lease_duration: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.node = node
        self.namespace = namespace
        self.lease_duration = lease_duration
        self.clock = clock
        self._reported: dict[str, str] = {}
        self._last_phase = ""

    # -- slots --

    def _lease_name(self, pool: str, index: int) -> str:
        return f"reconciler-agent-{pool}-{index}"

    def _live_holder(self, lease: dict[str, Any]) -> str | None:
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        if not holder:
            return None
        renewed = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
        duration = spec.get("leaseDurationSeconds") or self.lease_duration
        if renewed is not None and renewed + duration < self.clock():
            return None  # expired: its holder stopped renewing
        return str(holder)

    def _lease_body(self, pool: str, index: int, lease: dict[str, Any] | None) -> dict[str, Any]:
        now = _micro_time(self.clock())
        spec = dict((lease or {}).get("spec") or {})
        if spec.get("holderIdentity") != self.node:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (lease is not None)
        spec.update(
            holderIdentity=self.node, renewTime=now, leaseDurationSeconds=self.lease_duration
        )
        meta: dict[str, Any] = {
            "name": self._lease_name(pool, index),
            "namespace": self.namespace,
            "labels": {POOL_LABEL: pool},
        }
        if lease is not None:
            meta["resourceVersion"] = lease["metadata"]["resourceVersion"]
            meta["labels"] = {**(lease["metadata"].get("labels") or {}), POOL_LABEL: pool}
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    def acquire(self, policy: PoolPolicy, image: str = "") -> Grant:
        pool = policy.name
        leases = self.api.list_leases(self.namespace, f"{POOL_LABEL}={pool}")
        mine = [le for le in leases if (le.get("spec") or {}).get("holderIdentity") == self.node]
        if mine:
            lease = mine[0]
            index = int(lease["metadata"]["name"].rsplit("-", 1)[1])
            try:
                self.api.replace_lease(self.namespace, self._lease_body(pool, index, lease))
            except kubeapi.Conflict:
                return Grant(False, f"renewing {lease['metadata']['name']} raced; retrying")
            return Grant(True, f"holding {lease['metadata']['name']}")
        # A pool without a nodeSelector selects no node in MCO; count this one only.
        selector = selector_string(policy.node_selector)
        nodes = self.api.list_nodes(selector) if selector else []
        names = {n["metadata"]["name"] for n in nodes}
        if policy.rollout is not None and image:
            # the pool's nodes as their agents report them (as the reconciler counts
            # them): a node of a custom pool that `worker`'s selector also matches, or
            # one whose agent never reported, is not a candidate for the canary
            everyone = [rollout.node_view(n) for n in nodes]
            me = next((v for v in everyone if v.name == self.node), None)
            views = [v for v in everyone if v.pool == pool and v.name != self.node]
            views.append(dataclasses.replace(me, pool=pool) if me else rollout.NodeView(self.node))
            state = rollout.progress(policy.rollout, views, image, self.clock())
            may, why = state.may_start(self.node)
            if not may:
                return Grant(False, why)
        size = len(names | {self.node})
        limit = max_unavailable(policy.max_unavailable, size)
        holders = {h for le in leases if (h := self._live_holder(le)) and h != self.node}
        others_down = sorted(
            n["metadata"]["name"]
            for n in nodes
            if n["metadata"]["name"] not in holders
            and n["metadata"]["name"] != self.node
            and node_unavailable(n)
        )
        usable = limit - len(others_down)
        if len(holders) >= usable:
            detail = (
                f"all {limit} update slot(s) of pool {pool} in use (maxUnavailable of {size} nodes)"
            )
            if holders:
                detail += f"; updating: {', '.join(sorted(holders))}"
            if others_down:
                detail += f"; unavailable: {', '.join(others_down)}"
            return Grant(False, detail)
        by_name = {le["metadata"]["name"]: le for le in leases}
        for index in range(usable):
            name = self._lease_name(pool, index)
            slot = by_name.get(name)
            try:
                if slot is None:
                    self.api.create_lease(self.namespace, self._lease_body(pool, index, None))
                elif self._live_holder(slot) is None:
                    self.api.replace_lease(self.namespace, self._lease_body(pool, index, slot))
                else:
                    continue
            except kubeapi.Conflict:
                continue  # another node took this slot first
            return Grant(True, f"took {name}")
        return Grant(False, f"the free update slots of pool {pool} were taken by other nodes")

    def release(self, policy: PoolPolicy) -> None:
        for _ in range(5):
            leases = self.api.list_leases(self.namespace, f"{POOL_LABEL}={policy.name}")
            mine = [
                le for le in leases if (le.get("spec") or {}).get("holderIdentity") == self.node
            ]
            if not mine:
                return
            try:
                for lease in mine:
                    body = {
                        **lease,
                        "spec": {
                            **lease.get("spec", {}),
                            "holderIdentity": None,
                            "renewTime": None,
                        },
                    }
                    self.api.replace_lease(self.namespace, body)
            except kubeapi.Conflict:
                continue
            return
        raise kubeapi.KubeError(
            f"could not release the update slot of {self.node}: kept conflicting"
        )

    # -- node --

    def cordon(self) -> bool:
        node = self.api.get_node(self.node)
        if (node.get("spec") or {}).get("unschedulable"):
            return False
        self.api.patch_node(self.node, {"spec": {"unschedulable": True}})
        return True

    def uncordon(self) -> None:
        self.api.patch_node(self.node, {"spec": {"unschedulable": None}})

    def drain(self) -> DrainResult:
        waiting: list[str] = []
        for pod in self.api.pods_on_node(self.node):
            meta = pod["metadata"]
            ref = f"{meta.get('namespace')}/{meta['name']}"
            if _skip_on_drain(pod):
                continue
            if meta.get("deletionTimestamp"):
                waiting.append(f"{ref} is terminating")
                continue
            try:
                self.api.evict(meta.get("namespace", "default"), meta["name"])
            except kubeapi.NotFound:
                continue
            except kubeapi.EvictionBlocked as exc:
                waiting.append(f"{ref}: {exc}")
                continue
            log.info("evicted %s", ref)
        if waiting:
            return DrainResult(False, "waiting for evictions: " + "; ".join(waiting))
        return DrainResult(True)

    def report(self, report: Report) -> None:
        annotations = {
            rollout.STATE: report.phase,
            rollout.REASON: report.reason[:1000],
            rollout.CURRENT_IMAGE: report.current_image,
            rollout.DESIRED_IMAGE: report.desired_image,
            rollout.POOL: report.pool,
            rollout.STATE_SINCE: _micro_time(report.since)[:-8] + "Z" if report.since else "",
        }
        if not self._reported:  # a new process (e.g. --once): what does the node say?
            current = self.api.get_node(self.node)["metadata"].get("annotations") or {}
            self._reported = {k: v for k, v in current.items() if k in annotations}
            self._last_phase = self._reported.get(rollout.STATE, "")
        if annotations == self._reported:
            return
        self.api.patch_node(self.node, {"metadata": {"annotations": annotations}})
        self._reported = annotations
        finished = report.phase != "done" or self._last_phase in rollout.IN_FLIGHT_PHASES
        if report.phase != self._last_phase and report.phase in EVENT_REASONS and finished:
            self._event(report)  # "done" only after an update, not at every start
        self._last_phase = report.phase

    def _event(self, report: Report) -> None:
        now = _micro_time(self.clock())[:-8] + "Z"
        reason, kind = EVENT_REASONS[report.phase]
        try:
            self.api.create_event(
                "default",
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"generateName": f"{self.node}."},
                    "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": self.node},
                    "reason": reason,
                    "message": report.reason[:1000],
                    "type": kind,
                    "source": {"component": "reconciler-agent", "host": self.node},
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                    "count": 1,
                },
            )
        except kubeapi.KubeError as exc:  # an event is best effort; the annotation is the record
            log.warning("could not record event: %s", exc)

    def node_labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.api.get_node(self.node)["metadata"].get("labels") or {}
        return labels


def _skip_on_drain(pod: dict[str, Any]) -> bool:
    meta = pod["metadata"]
    if any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or []):
        return True
    if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
        return True  # static pod: the kubelet owns it
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
