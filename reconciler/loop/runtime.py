"""The run-forever runtime: signals, the repository watcher, the webhook, the loop.

Stage: the edge of `reconciler run` without `--once`. Inputs: a `Reconciler`, the Git
source, the poll interval, the webhook settings, and optionally a metrics address (the
`/metrics`, `/healthz`, `/readyz` server) and a `LeaderElector`. Output: none; returns
on SIGTERM or Ctrl-C after stopping the helpers (and releasing the leader Lease).

With leader election the loop runs passes only while this replica leads; it stands by
otherwise (ready, beating) and takes over when the Lease is free or expires.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.adapters import git
from reconciler.adapters.watch import RepositoryWatcher
from reconciler.loop import controller
from reconciler.loop.webhook import WebhookServer

if TYPE_CHECKING:  # imported at run time only with --metrics-addr / --leader-elect
    from reconciler.adapters.metrics import Heartbeat
    from reconciler.loop.leader import LeaderElector
    from reconciler.loop.metrics import LoopMetrics

log = logging.getLogger("reconciler.cli")


class HeartbeatObserver:
    """Beats the heartbeat at each pass's start and end; ready after the first pass."""

    def __init__(self, heartbeat: Heartbeat) -> None:
        self.heartbeat = heartbeat

    def pass_started(self) -> None:
        self.heartbeat.beat(busy=True)

    def pass_finished(self, outcome: controller.PassOutcome) -> None:
        self.heartbeat.beat(busy=False)
        self.heartbeat.ready()


def run_forever(
    reconciler: controller.Reconciler,
    url: str,
    branch: str,
    interval: float,
    webhook_listen: str | None,
    webhook_secret_file: str | None,
    *,
    metrics_addr: str | None = None,
    metrics: LoopMetrics | None = None,
    elector: LeaderElector | None = None,
    busy_max: float = 4 * 3600.0,
    stop: threading.Event | None = None,
) -> None:
    stop = stop or threading.Event()
    trigger = threading.Event()

    def on_term(*_: object) -> None:
        stop.set()
        trigger.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    helpers: list[Any] = []
    local = Path(url)
    if local.is_dir():
        helpers.append(RepositoryWatcher(local, trigger).start())
    if webhook_listen and webhook_secret_file:
        host, _, port = webhook_listen.rpartition(":")
        secret = Path(webhook_secret_file).read_bytes().strip()
        bind = host or "0.0.0.0"  # noqa: S104 - the admin chose to listen on every address
        helpers.append(WebhookServer(bind, int(port), secret, branch, trigger).start())
    heartbeat = None
    if metrics_addr:
        from reconciler.adapters.metrics import Heartbeat, MetricsServer  # noqa: PLC0415
        from reconciler.loop.metrics import LoopMetrics  # noqa: PLC0415

        metrics = metrics or LoopMetrics()
        # between passes the loop wakes at least every interval; a pass may build
        heartbeat = Heartbeat(idle_max=2 * interval + 60, busy_max=busy_max)
        reconciler.observers += [metrics, HeartbeatObserver(heartbeat)]
        helpers.append(MetricsServer(metrics_addr, metrics.registry, heartbeat).start())
    log.info("watching %s (%s) every %.0fs", git.redact(url), branch, interval)
    try:
        if elector is None:
            reconciler.run(stop, trigger, interval)
        else:
            _run_as_candidate(reconciler, elector, stop, trigger, interval, heartbeat, metrics)
    except KeyboardInterrupt:
        stop.set()
    finally:
        for helper in helpers:
            helper.stop()


def _run_as_candidate(
    reconciler: controller.Reconciler,
    elector: LeaderElector,
    stop: threading.Event,
    trigger: threading.Event,
    interval: float,
    heartbeat: Heartbeat | None,
    metrics: LoopMetrics | None,
) -> None:
    """Passes while leading, standing by otherwise; the elector runs in a thread."""
    passes = threading.Event()  # set: stop running passes (stopping, or not leading)
    changed = threading.Event()

    def on_change(leading: bool) -> None:
        if metrics is not None:
            metrics.leader.set(int(leading))
        if not leading:
            passes.set()
            trigger.set()
        changed.set()

    def standby_beat() -> None:
        if heartbeat is not None and not elector.leading:
            heartbeat.beat()
            heartbeat.ready()  # a healthy standby is ready: it takes over when needed

    elector.on_change = on_change
    thread = threading.Thread(
        target=elector.run, args=(stop, standby_beat), name="leader-election", daemon=True
    )
    thread.start()
    try:
        while not stop.is_set():
            if not elector.leading:
                changed.wait(1.0)
                changed.clear()
                continue
            passes.clear()
            threading.Thread(target=_relay, args=(stop, passes, trigger), daemon=True).start()
            reconciler.run(passes, trigger, interval)
            if not stop.is_set():
                log.warning("not the leader any more: standing by")
    finally:
        stop.set()
        thread.join(timeout=elector.retry_period + 30)


def _relay(stop: threading.Event, passes: threading.Event, trigger: threading.Event) -> None:
    """A stop (SIGTERM) also ends the passes, and wakes the loop."""
    stop.wait()
    passes.set()
    trigger.set()
