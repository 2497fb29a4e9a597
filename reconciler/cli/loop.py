"""The reconcile loop's commands: run (once or forever) and status."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from reconciler import extras
from reconciler.adapters import builders, git
from reconciler.adapters import metrics as metrics_server
from reconciler.adapters.registry import signatures
from reconciler.cli.options import (
    ContainerfileBuilder,
    GitSource,
    RegistryOptions,
    builder_options,
    containerfile_builder_option,
    git_options,
    image_signing_option,
    output_option,
    parse_author,
    registry_options,
    require_kubernetes_for,
)
from reconciler.cli.output import echo_json, rfc3339
from reconciler.errors import ConfigError
from reconciler.loop import builds, controller, holds, parallel, runtime
from reconciler.loop.status import Status, StatusStore, status_document
from reconciler.review import output as review_output


@click.command()
@git_options
@click.option("--once", is_flag=True, help="One pass, then exit (0 ok, 1 if a pool failed).")
@click.option(
    "--interval",
    default=60.0,
    show_default=True,
    help="Seconds between polls of the remote (a webhook or a local commit starts a pass at once).",
)
@click.option(
    "--base-poll",
    default=300.0,
    show_default=True,
    help="Seconds between re-resolving base image tags when Git does not move.",
)
@click.option(
    "--registry-connections",
    type=click.IntRange(min=1),
    default=parallel.DEFAULT_CONNECTIONS,
    show_default=True,
    help="Pools whose registry work (existence checks, uploads, manifests) runs at once, "
    "one connection each.",
)
@click.option(
    "--builds",
    "parallel_builds",
    type=click.IntRange(min=0),
    default=builds.DEFAULT_BUILDS,
    show_default=True,
    help="Containerfile builds (buildah or Job) running at once in the background while "
    "passes pin everything else; a build that ends is pinned by the next pass. 0: build "
    "inside the pass, which waits.",
)
@click.option(
    "--author",
    default=f"{controller.DEFAULT_AUTHOR[0]} <{controller.DEFAULT_AUTHOR[1]}>",
    show_default=True,
    help="Author of pin commits, 'Name <email>'.",
)
@click.option(
    "--webhook-listen",
    metavar="HOST:PORT",
    help="Serve push webhooks (GitHub, GitLab, Gitea/Forgejo) at http://HOST:PORT/hooks/git.",
)
@click.option(
    "--webhook-secret-file",
    type=click.Path(exists=True, dir_okay=False),
    help="The webhook secret (HMAC key, or GitLab's token). Required with --webhook-listen.",
)
@click.option(
    "--commit-signing-key",
    metavar="FILE",
    help="Sign every pin commit with this OpenSSH private key (unencrypted, mode 0600), in "
    "Git's SSH signature format: `git verify-commit` with gpg.format=ssh accepts it.",
)
@image_signing_option
@click.option(
    "--metrics-addr",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics at /metrics and the probes /healthz and /readyz "
    "(e.g. :8081). Not with --once.",
)
@click.option(
    "--leader-elect",
    is_flag=True,
    help="Run passes only while holding the coordination.k8s.io Lease 'reconciler-leader' "
    "in --namespace (for replicas > 1); the others stand by.",
)
@click.option(
    "--cluster-status",
    is_flag=True,
    help="Keep a BootcPool per pool in --namespace (conditions, pin, fleet counts, rollout) "
    "and record Events on its transitions.",
)
@click.option(
    "--namespace",
    default=lambda: os.environ.get("POD_NAMESPACE", "default"),
    help="Namespace of the leader Lease, the BootcPools and their Events "
    "(default $POD_NAMESPACE, else 'default').",
)
@click.option(
    "--leader-lease-duration",
    type=click.FloatRange(min=3),
    default=15.0,
    show_default=True,
    help="Seconds a standby waits for an unrenewed leader Lease before taking over (the "
    "leader renews every 2s and stands down after 2/3 of this without renewing).",
)
@containerfile_builder_option
@registry_options
@builder_options
@output_option("With --once: the pass's report as text or one PassReport document.")
def run(
    source: GitSource,
    once: bool,
    interval: float,
    base_poll: float,
    registry_connections: int,
    parallel_builds: int,
    author: str,
    webhook_listen: str | None,
    webhook_secret_file: str | None,
    commit_signing_key: str | None,
    image_signer: signatures.KeySigner | None,
    metrics_addr: str | None,
    leader_elect: bool,
    cluster_status: bool,
    namespace: str,
    leader_lease_duration: float,
    containerfile_builder: ContainerfileBuilder,
    registry: RegistryOptions,
    builder_opts: dict[str, Any],
    output: str,
) -> None:
    """Reconcile the repository: build what changed and commit pins back (long-running).

    Each pass: fetch (one ls-remote when nothing moved), load, plan, build what is
    missing, write pins, one commit, push (compare-and-swap, retried on a race).
    Containerfile builds run in the background (--builds); the pass after one ends
    pins it. --once waits for the builds it starts and pins them before it exits.
    """
    work = source.work
    settings = controller.RunSettings(
        branch=source.branch,
        author=parse_author(author),
        default_builder=containerfile_builder,
        base_poll_s=base_poll,
        image_signer=image_signer,
        registry_connections=registry_connections,
        builds=parallel_builds,
    )
    signing_key = git.SshSigningKey.load(commit_signing_key) if commit_signing_key else None
    if webhook_listen and not webhook_secret_file:
        raise click.UsageError("--webhook-listen needs --webhook-secret-file")
    if output == "json" and not once:
        raise click.UsageError("--output json needs --once (a report per pass)")
    if once and (metrics_addr or leader_elect or cluster_status):
        raise click.UsageError(
            "--metrics-addr, --leader-elect and --cluster-status are for the long-running "
            "loop, not --once"
        )
    if metrics_addr:
        _check_addr(metrics_addr)
    require_kubernetes_for(containerfile_builder)
    if leader_elect or cluster_status:
        extras.require_kubernetes("--leader-elect and --cluster-status")
    with controller.WorkDirLock(work), registry.client() as client:
        mirror: Any = git.Mirror(source.url, work / "mirror", source.auth, signing_key=signing_key)
        registry_client: Any = client
        metrics = None
        if metrics_addr:
            # imported only here: prometheus_client is not worth loading for other commands
            from reconciler.loop.metrics import LoopMetrics  # noqa: PLC0415

            metrics = LoopMetrics()
            mirror = metrics.instrument(mirror, "git")
            registry_client = metrics.instrument(client, "registry")
        available = builders.available(registry_client, work_dir=work,
                                       parallel_builds=parallel_builds, **builder_opts)  # fmt: skip
        reconciler = controller.Reconciler(mirror, registry_client, work, settings, available)
        forever: dict[str, Any] = {}
        if not once:
            forever = {"metrics_addr": metrics_addr, "metrics": metrics,
                       "busy_max": _busy_max(builder_opts)}  # fmt: skip
        if leader_elect or cluster_status:
            from reconciler.adapters import kube  # noqa: PLC0415 - an optional dependency

            api = kube.Kube.connect(builder_opts.get("kubeconfig"))
            if cluster_status:
                from reconciler.loop import clusterstatus  # noqa: PLC0415

                rollouts = clusterstatus.RolloutsInGit(mirror)
                reconciler.observers.append(clusterstatus.ClusterStatus(api, namespace, rollouts))
            if leader_elect:
                from reconciler.loop.leader import LeaderElector  # noqa: PLC0415

                identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
                forever["elector"] = LeaderElector(
                    api, namespace, identity,
                    lease_duration=leader_lease_duration,
                    renew_deadline=leader_lease_duration * 2 / 3,
                    retry_period=min(2.0, leader_lease_duration / 5),
                )  # fmt: skip
        try:
            _run(reconciler, source, once, output, interval, webhook_listen, webhook_secret_file,
                 **forever)  # fmt: skip
        finally:
            reconciler.builds.stop()
            reconciler.workers.close()


def _run(
    reconciler: controller.Reconciler,
    source: GitSource,
    once: bool,
    output: str,
    interval: float,
    webhook_listen: str | None,
    webhook_secret_file: str | None,
    **forever: Any,
) -> None:
    """One pass (`--once`) and its report, or passes forever (`forever`: the runtime's
    metrics, probes and leader-election settings)."""
    if once:
        # Only what is due (the remote moved, a retry, the base-image poll): an
        # idle `run --once` from a timer is one ls-remote, and reports what the
        # last pass recorded. Builds it starts are waited for and pinned.
        report = reconciler.reconcile_until_built()
        if report.skipped:
            report.pools = recorded_reports(reconciler.status)
        if not report.pools:
            raise ConfigError.simple(
                f"no MachineConfigPool on branch {source.branch!r} of "
                f"{git.redact(source.url)} at {report.head[:10]}: nothing to reconcile",
                fix="check --repo and --branch (see repo-layout/)",
            )
        if output == "json":
            echo_json("PassReport", _pass_json(report))
        else:
            click.echo(_pass_text(report))
        if any(r.state in ("failed", "stalled") for r in report.pools.values()):
            raise SystemExit(1)
        return
    runtime.run_forever(
        reconciler,
        source.url,
        source.branch,
        interval,
        webhook_listen,
        webhook_secret_file,
        **forever,
    )


def _check_addr(addr: str) -> None:
    try:
        metrics_server.parse_addr(addr)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics-addr") from None


def _busy_max(builder_opts: Mapping[str, Any]) -> float:
    """How long a pass may run before liveness fails: a pass builds pools one after
    another, each bounded by --build-timeout; four of them and some margin."""
    return 4 * float(builder_opts.get("build_timeout_s") or 3600.0) + 600.0


def recorded_reports(recorded: Status) -> dict[str, controller.PoolReport]:
    """Each pool as the last pass left it (for a pass that found nothing due)."""
    return {
        name: controller.PoolReport(
            name, pool.recorded_state(), pool.last_error or "", image=pool.image,
            transient=pool.retry_at is not None,
        )
        for name, pool in sorted(recorded.pools.items())
    }  # fmt: skip


def _pass_text(report: controller.PassReport) -> str:
    lines = []
    for pool in sorted(report.pools):
        r = report.pools[pool]
        image = f" {r.image}" if r.image else ""
        lines.append(f"{pool}: {r.state}{image}")
        if r.message and r.state not in ("pinned", "unchanged"):
            lines += [f"  {line}" for line in r.message.splitlines()]
    if report.commit:
        lines += [f"pin commit {c} pushed" for c in report.commits or [report.commit]]
    elif not report.skipped:
        lines.append(f"no commit: pins at {report.head[:10]} are current")
    else:
        lines.append(f"nothing due: {report.head[:10]} was reconciled by the last pass")
    return "\n".join(lines)


def _pass_json(report: controller.PassReport) -> dict[str, Any]:
    pools = {
        name: {
            "state": r.state,
            "image": r.image,
            "message": r.message,
            "transient": r.transient,
        }
        for name, r in sorted(report.pools.items())
    }
    return {"head": report.head, "commit": report.commit, "skipped": report.skipped,
            "commits": report.commits or ([report.commit] if report.commit else []),
            "pools": pools}  # fmt: skip


@click.command()
@git_options
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    help="Read the recorded status from the cluster's BootcPools (in a pod, its service "
    "account is used without this); otherwise from the work directory.",
)
@click.option(
    "--namespace",
    default=lambda: os.environ.get("POD_NAMESPACE", "default"),
    help="Namespace of the BootcPools (default $POD_NAMESPACE, else 'default').",
)
@output_option()
def status(
    source: GitSource,
    kubeconfig: str | None,
    namespace: str,
    output: str,
) -> None:
    """Each pool's pin in Git, with the conditions the last pass recorded
    (Ready, Building, Stalled, Held) and its last error; read from a cluster, the
    fleet's counts and the rollout too."""
    cluster = None
    if kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST"):
        extras.require_kubernetes("status from the cluster (--kubeconfig, or in a pod)")
        from reconciler.adapters import kube  # noqa: PLC0415 - an optional dependency
        from reconciler.adapters.bootcpools import BootcPools  # noqa: PLC0415
        from reconciler.loop.clusterstatus import status_from_cluster  # noqa: PLC0415

        objects = BootcPools(kube.Kube.connect(kubeconfig), namespace).list()
        recorded, cluster = status_from_cluster(objects)
    else:
        recorded = StatusStore(source.work / "status.json").load()
    head = git.remote_head(source.url, source.branch, source.auth)
    if head is None:
        raise ConfigError.simple(f"branch {source.branch!r} not found in {git.redact(source.url)}")
    scratch = Path(tempfile.mkdtemp(prefix="reconciler-status-"))
    mirror = git.Mirror(source.url, scratch, source.auth)
    try:
        mirror.fetch(source.branch, depth=1, filter="blob:none")
        pinned = holds.read_pins(mirror, head)
    finally:
        shutil.rmtree(mirror.path, ignore_errors=True)
    doc = status_document(head, pinned, recorded, cluster)
    if output == "json":
        echo_json("Status", _rfc3339_times(doc))
        return
    click.echo(_status_text(doc, color=review_output.use_color(sys.stdout)))


def _status_text(doc: dict[str, Any], now: float | None = None, color: bool = False) -> str:
    """An aligned table like `oc get mcp` (pool, ready, state, pin as a short digest, age
    of the state), then one line per pool that needs a word (held, stalled, last error)."""
    import time  # noqa: PLC0415 - only the status table reads the clock

    when = time.time() if now is None else now
    lines = [f"head {doc['head'][:10]}"]
    if doc["lastPass"] is None:
        lines.append("no pass recorded in this work directory (conditions unknown)")
    elif not doc["statusIsCurrent"]:
        lines.append(f"last pass saw {str(doc['observedHead'])[:10]}: the remote has moved since")
    fleet = doc.get("recordedIn") == "cluster"
    if fleet:
        lines.append("recorded in the cluster (BootcPools)")
    rows = [("POOL", "READY", "STATE", "PIN", "SOURCE", "AGE") + (("MACHINES",) if fleet else ())]
    notes: list[str] = []
    for name, pool in sorted(doc["pools"].items()):
        conditions = pool.get("conditions", {})
        true = [k for k in ("Building", "Stalled", "Held") if conditions.get(k, {}).get("status")]
        ready = conditions.get("Ready", {})
        state = ", ".join(true) or (ready.get("reason") or "-" if conditions else "-")
        since = [conditions[k]["since"] for k in (*true, "Ready") if k in conditions]
        rows.append((
            name,
            ("True" if ready.get("status") else "False") if conditions else "Unknown",
            state,
            _short_pin(pool),
            str(pool.get("sourceCommit") or "-")[:10],
            _age(when - since[0]) if since else "-",
        ) + ((_machines(pool),) if fleet else ()))  # fmt: skip
        paused = (pool.get("rollout") or {}).get("phase") == "Paused"
        if paused:
            notes.append(f"{name}: {pool['rollout']['reason']}")
        for key in ("Building", "Held", "Stalled"):
            if conditions.get(key, {}).get("status"):
                notes.append(f"{name}: {key.lower()}: {conditions[key]['message'].splitlines()[0]}")
        if pool.get("lastError") and not conditions.get("Stalled", {}).get("status"):
            notes.append(f"{name}: last error: {pool['lastError'].splitlines()[0]}")
        if pool.get("pinError"):
            notes.append(f"{name}: {pool['pinError'].splitlines()[0]}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        text = "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        if color and i == 0:
            text = click.style(text, bold=True)
        elif color and row[1] != "True":
            text = click.style(text, fg="red" if "Stalled" in row[2] else "yellow")
        lines.append(text)
    warnings = [f"warning: {w}" for w in doc.get("warnings", [])]
    return "\n".join(lines + notes + warnings)


def _rfc3339_times(doc: dict[str, Any]) -> dict[str, Any]:
    """`status_document` with its Unix times (`lastPass`, `since`, `retryAt`) as RFC 3339."""
    pools = {}
    for name, pool in doc["pools"].items():
        entry = dict(pool)
        if "retryAt" in entry:
            entry["retryAt"] = rfc3339(entry["retryAt"])
        if "conditions" in entry:
            entry["conditions"] = {
                k: {**c, "since": rfc3339(c["since"])} for k, c in entry["conditions"].items()
            }
        pools[name] = entry
    return {**doc, "lastPass": rfc3339(doc["lastPass"]), "pools": pools}


def _machines(pool: Mapping[str, Any]) -> str:
    """`updated/total` and the degraded ones, as `oc get mcp` counts them."""
    counts = pool.get("fleet") or {}
    text = f"{counts.get('updatedMachineCount', 0)}/{counts.get('machineCount', 0)} updated"
    if counts.get("degradedMachineCount"):
        text += f", {counts['degradedMachineCount']} degraded"
    return text


def _short_pin(pool: Mapping[str, Any]) -> str:
    """`repo@sha256:<64 hex>` → `sha256:<12 hex>` (the full reference is in `-o json`)."""
    image = pool.get("pin")
    if not image:
        return "invalid" if pool.get("pinError") else "none"
    digest = str(image).rpartition("@")[2]
    return digest[:19] if digest.startswith("sha256:") else str(image)


def _age(seconds: float) -> str:
    """kubectl's way: 45s, 12m, 3h, 5d."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
