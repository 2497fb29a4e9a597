"""Builders: turn a `PoolPlan` into an image in the registry and return its digest.

`native` (native.py) pushes config-only images in-process; plans with RUN steps go to a
Containerfile builder: `buildah` (buildah.py, on this machine) or `job` (kubejob.py, a
Kubernetes Job running buildah). Both run the same `build.sh` (script.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from reconciler import extras
from reconciler.adapters.builders import buildah, buildlock
from reconciler.adapters.registry import RegistryClient

log = logging.getLogger(__name__)


def available(
    registry: RegistryClient,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    build_timeout_s: float | None = None,
    build_log_dir: str | os.PathLike[str] | None = None,
    storage_driver: str = "vfs",
    kubeconfig: str | os.PathLike[str] | None = None,
    in_cluster: bool | None = None,
    namespace: str | None = None,
    builder_image: str | None = None,
    build_lock_dir: str | os.PathLike[str] | None = None,
    parallel_builds: int = 1,
) -> dict[str, Any]:
    """The Containerfile builders this machine can run, by name (`buildah`, `job`).

    - `buildah` when `buildah` is on PATH; its storage, build directories and logs live
      under `work_dir` (default: a `reconciler` directory in the system temp dir), logs
      in `build_log_dir` if given; `parallel_builds` storages (builds at once); one
      build per inputs digest among the processes sharing `build_lock_dir` (default
      `buildlock.default_dir()`: this user's, on this host).
    - `job` when a kubeconfig is given, or when running in a pod
      (`KUBERNETES_SERVICE_HOST`, or `in_cluster=True`); Jobs go to `namespace`
      (default: the pod's own namespace, else `default`).

    `build_timeout_s` bounds a build in both. A pool whose builder is missing fails in
    `building.ensure_image` saying so. `job` needs the `kubernetes` extra: asked for
    with a kubeconfig it raises `extras.MissingExtra`; found only in a pod, it is left
    out (the `buildah` builder may still serve) with a warning that names the extra.
    """
    found: dict[str, Any] = {}
    timeout = build_timeout_s if build_timeout_s is not None else buildah.DEFAULT_TIMEOUT_S
    if shutil.which("buildah") is not None:
        base = (
            Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir()) / "reconciler"
        )
        found["buildah"] = buildah.BuildahBuilder(
            registry,
            base,
            timeout_s=timeout,
            log_dir=Path(build_log_dir) if build_log_dir is not None else None,
            storage_driver=storage_driver,
            locks=buildlock.BuildLocks(Path(build_lock_dir) if build_lock_dir else None),
            storages=max(1, parallel_builds),
        )
    if in_cluster is None:
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if kubeconfig is None and in_cluster and not extras.has_kubernetes():
        log.warning(
            "in a pod, but Job builds need the %r extra: pip install '%s[%s]'",
            extras.KUBERNETES, extras.DISTRIBUTION, extras.KUBERNETES,
        )  # fmt: skip
    elif kubeconfig is not None or in_cluster:
        extras.require_kubernetes("--kubeconfig (Containerfile builds as Kubernetes Jobs)")
        # imported here: the kubernetes client is an optional dependency
        from reconciler.adapters.builders import kubejob  # noqa: PLC0415

        found["job"] = kubejob.JobBuilder.connect(
            registry,
            kubeconfig=kubeconfig,
            namespace=namespace,
            timeout_s=timeout,
            builder_image=builder_image,
        )
    log.debug("Containerfile builders available: %s", ", ".join(found) or "none")
    return found
