"""The node agent's Prometheus metrics, from what it reports (no agent internals).

Stage: a `Coordinator` wrapper (`ReportingMetrics`): every `report()` the agent makes
(its phase, booted and desired image) also sets the metrics, then goes on to the real
coordinator. Imported only with `--metrics-addr` (it imports `prometheus_client`).

- `reconciler_agent_phase{node, pool, phase}`: 1 for the phase the agent is in, 0 for
  the others (one series per phase, so `max by (phase)` and alerts on `degraded` work);
- `reconciler_agent_booted_image_info{node, pool, image, digest}`: 1;
- `reconciler_agent_desired_image_info{node, pool, image, digest}`: 1 (absent when the
  agent has no target yet);
- `reconciler_agent_phase_transitions_total{node, pool, phase}`: entries into a phase;
- `reconciler_agent_last_report_timestamp_seconds{node}`.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge

from reconciler.agent.coordination import Coordinator, DrainResult, Grant, Report
from reconciler.agent.source import PoolPolicy
from reconciler.agent.state import Phase


class AgentMetrics:
    def __init__(self, node: str, registry: CollectorRegistry | None = None) -> None:
        self.node = node
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.phase = Gauge(
            "reconciler_agent_phase",
            "The agent's phase: 1 for the one it is in, 0 for the others.",
            ["node", "pool", "phase"],
            registry=r,
        )
        self.transitions = Counter(
            "reconciler_agent_phase_transitions",
            "How often the agent entered each phase.",
            ["node", "pool", "phase"],
            registry=r,
        )
        self.booted = Gauge(
            "reconciler_agent_booted_image_info",
            "The image the node runs (value 1; the labels are the facts).",
            ["node", "pool", "image", "digest"],
            registry=r,
        )
        self.desired = Gauge(
            "reconciler_agent_desired_image_info",
            "The image the agent moves the node to (value 1; the labels are the facts).",
            ["node", "pool", "image", "digest"],
            registry=r,
        )
        self.last_report = Gauge(
            "reconciler_agent_last_report_timestamp_seconds",
            "When the agent last reported its state (Unix time).",
            ["node"],
            registry=r,
        )
        self._pool: str | None = None
        self._phase = ""
        self._booted: tuple[str, ...] | None = None
        self._desired: tuple[str, ...] | None = None

    def observe(self, report: Report) -> None:
        pool = report.pool
        if self._pool is not None and self._pool != pool:
            for phase in Phase:  # the node moved to another pool
                with contextlib.suppress(KeyError):
                    self.phase.remove(self.node, self._pool, phase.value)
        for phase in Phase:
            self.phase.labels(self.node, pool, phase.value).set(int(phase.value == report.phase))
        if (self._pool, self._phase) != (pool, report.phase):
            self.transitions.labels(self.node, pool, report.phase).inc()
        self._pool, self._phase = pool, report.phase
        self._booted = self._info(self.booted, self._booted, pool, report.current_image)
        self._desired = self._info(self.desired, self._desired, pool, report.desired_image)
        self.last_report.labels(self.node).set_to_current_time()

    def _info(
        self, gauge: Gauge, old: tuple[str, ...] | None, pool: str, image: str
    ) -> tuple[str, ...] | None:
        """Set the info series for `image`, removing the one it replaces."""
        new = (self.node, pool, image, image.rpartition("@")[2]) if image else None
        if old is not None and old != new:
            with contextlib.suppress(KeyError):
                gauge.remove(*old)
        if new is not None:
            gauge.labels(*new).set(1)
        return new

    def wrap(self, inner: Coordinator) -> Coordinator:
        return ReportingMetrics(inner, self)


class ReportingMetrics:
    """A `Coordinator` that sets the metrics on every report, then delegates."""

    def __init__(self, inner: Coordinator, metrics: AgentMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def acquire(self, policy: PoolPolicy, image: str = "") -> Grant:
        return self.inner.acquire(policy, image)

    def release(self, policy: PoolPolicy) -> None:
        self.inner.release(policy)

    def cordon(self) -> bool:
        return self.inner.cordon()

    def drain(self) -> DrainResult:
        return self.inner.drain()

    def uncordon(self) -> None:
        self.inner.uncordon()

    def report(self, report: Report) -> None:
        self.metrics.observe(report)
        self.inner.report(report)
