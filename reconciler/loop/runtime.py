"""The run-forever runtime: signals, the repository watcher, the webhook, the loop.

Stage: the edge of `reconciler run` without `--once`. Inputs: a `Reconciler`, the Git
source, the poll interval and the webhook settings. Output: none; returns on SIGTERM or
Ctrl-C after stopping the watcher and the webhook server.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from reconciler.adapters import git
from reconciler.adapters.watch import RepositoryWatcher
from reconciler.loop import controller
from reconciler.loop.webhook import WebhookServer


def run_forever(
    reconciler: controller.Reconciler,
    url: str,
    branch: str,
    interval: float,
    webhook_listen: str | None,
    webhook_secret_file: str | None,
) -> None:
    stop, trigger = threading.Event(), threading.Event()

    def on_term(*_: object) -> None:
        stop.set()
        trigger.set()

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
    logging.getLogger("reconciler.cli").info(
        "watching %s (%s) every %.0fs", git.redact(url), branch, interval
    )
    try:
        reconciler.run(stop, trigger, interval)
    except KeyboardInterrupt:
        pass
    finally:
        for helper in helpers:
            helper.stop()
