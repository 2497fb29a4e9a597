"""The reconciler's Prometheus metrics, fed by observing passes (no controller internals).

Stage: an observer of `Reconciler.run` (`PassObserver`) plus call counters around the
Git mirror and the registry client. Imported only with `--metrics-addr` (it imports
`prometheus_client`). Names follow the Prometheus conventions: a `reconciler_` prefix,
base units in the name (`_seconds`), `_total` on counters, `_info` for the value-is-1
gauges whose labels carry the facts, and a label per dimension:

Every metric, its type and labels: docs/design/cluster.md ("Metrics").
Flux's `gotk_reconcile_duration_seconds` and `gotk_reconcile_condition` are the model.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reconciler.errors import PushRejected, ReconcilerError
from reconciler.loop.controller import PassOutcome
from reconciler.loop.status import CONDITIONS

BUILD_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class LoopMetrics:
    """The reconciler's metrics in their own registry (so tests and two loops in one
    process do not collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.pass_duration = Histogram(
            "reconciler_pass_duration_seconds",
            "How long a reconcile pass took (fetch to push).",
            ["result"],
            buckets=BUILD_BUCKETS,
            registry=r,
        )
        self.builds = Counter(
            "reconciler_builds",
            "Images made or found for a pool, by builder and result.",
            ["builder", "result"],
            registry=r,
        )
        self.condition = Gauge(
            "reconciler_pool_condition",
            "A pool's condition: 1 for the status it has, 0 for the other.",
            ["pool", "type", "status"],
            registry=r,
        )
        self.pinned = Gauge(
            "reconciler_pool_pinned_image_info",
            "The image pinned for a pool in Git (value 1; the labels are the facts).",
            ["pool", "image", "digest", "source_commit"],
            registry=r,
        )
        self.pin_commits = Counter(
            "reconciler_pin_commits", "Pin commits pushed to Git.", registry=r
        )
        self.push_retries = Counter(
            "reconciler_push_retries",
            "Pin pushes rejected because the branch moved, then planned and tried again.",
            registry=r,
        )
        self.git_errors = Counter(
            "reconciler_git_errors",
            "Failed Git operations, by operation and kind.",
            ["operation", "kind"],
            registry=r,
        )
        self.registry_errors = Counter(
            "reconciler_registry_errors",
            "Failed registry operations, by operation and kind.",
            ["operation", "kind"],
            registry=r,
        )
        self.leader = Gauge(
            "reconciler_leader", "1 while this replica holds the leader Lease.", registry=r
        )
        self.last_pass = Gauge(
            "reconciler_last_pass_timestamp_seconds",
            "When the last pass ended (Unix time).",
            registry=r,
        )
        self._pinned_labels: dict[str, tuple[str, str, str, str]] = {}
        self._condition_pools: set[str] = set()

    # -- the observer --

    def pass_started(self) -> None:
        pass

    def pass_finished(self, outcome: PassOutcome) -> None:
        report = outcome.report
        result = "error" if report is None else ("skipped" if report.skipped else "ok")
        self.pass_duration.labels(result).observe(outcome.seconds)
        self.last_pass.set_to_current_time()
        if report is None:
            return
        if report.commit:
            self.pin_commits.inc()
        if report.attempts > 1:
            self.push_retries.inc(report.attempts - 1)
        for pool in report.pools.values():
            # a build that is still running is counted by the pass that pins or fails it
            if pool.builder is not None and pool.state != "building":
                ok = pool.state == "pinned"
                self.builds.labels(pool.builder, "success" if ok else "failure").inc()
        self._pools(outcome)

    def _pools(self, outcome: PassOutcome) -> None:
        pools = outcome.status.pools
        for gone in self._condition_pools - set(pools):
            for cond in CONDITIONS:
                for status in ("True", "False"):
                    self._remove(self.condition, gone, cond, status)
        for gone in set(self._pinned_labels) - set(pools):
            self._remove(self.pinned, *self._pinned_labels.pop(gone))
        self._condition_pools = set(pools)
        for name, pool in pools.items():
            for cond in CONDITIONS:
                value = pool.is_true(cond)
                self.condition.labels(name, cond, "True").set(int(value))
                self.condition.labels(name, cond, "False").set(int(not value))
            if pool.image:
                labels = (name, pool.image, pool.image.rpartition("@")[2],
                          pool.source_commit or "")  # fmt: skip
                old = self._pinned_labels.get(name)
                if old is not None and old != labels:
                    self._remove(self.pinned, *old)
                self.pinned.labels(*labels).set(1)
                self._pinned_labels[name] = labels

    @staticmethod
    def _remove(metric: Gauge, *labels: str) -> None:
        with contextlib.suppress(KeyError):
            metric.remove(*labels)

    # -- counting errors at the Git and registry adapters --

    def instrument(self, target: Any, component: str) -> Any:
        """`target` (a Mirror or a RegistryClient) with every method call that raises one
        of our errors counted under `reconciler_<component>_errors_total`."""
        counter = self.git_errors if component == "git" else self.registry_errors
        return _Counted(target, counter)


def error_kind(exc: ReconcilerError) -> str:
    if isinstance(exc, PushRejected):
        return "rejected"
    return "transient" if exc.transient else "permanent"


class _Counted:
    """A transparent proxy: attributes pass through; callables count our errors."""

    def __init__(self, target: Any, counter: Counter) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_counter", counter)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)  # e.g. the request counters parallel.py folds

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name.startswith("_") or not callable(value):
            return value
        if name == "clone":  # a worker thread's own client (loop/parallel.py): counted too
            return lambda *a, **kw: _Counted(value(*a, **kw), self._counter)
        return _counting(value, name, self._counter)


def _counting(fn: Callable[..., Any], operation: str, counter: Counter) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ReconcilerError as exc:
            counter.labels(operation, error_kind(exc)).inc()
            raise

    return call
