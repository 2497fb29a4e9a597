"""`reconciler agent`: run the node agent once (`--once`, e.g. from a systemd timer)
or as a loop (a DaemonSet or a systemd service).

Stage: the agent's entry point; wires the Git pin source, the bootc driver, the
coordination backend and the health checks into `Agent` (see `agent.py`).
Exit status with `--once`: 0, or 1 when the host ends the step `degraded` or its pool
is not in the repository; 64 for a usage error (the `reconciler` group's codes).

An idle `--once` (`--pool` given, `--coordination none`, the same facts as the last
step, which changed nothing) ends from `reconciler.agent.idle` without the step: the
full wiring below, and what it imports (pydantic, the loader), is loaded only for a
full step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler import extras
from reconciler.adapters import bootc_run, git
from reconciler.agent import health, idle
from reconciler.agent.state import AgentState, Phase, StateStore
from reconciler.cli import output as cli_output
from reconciler.cli.options import git_auth_options, output_option
from reconciler.core.image import sigpolicy
from reconciler.errors import ConfigError, ConfigProblem, GitError, ReconcilerError

if TYPE_CHECKING:
    from reconciler.adapters import bootc as bootc_mod
    from reconciler.agent.source import GitPinSource
    from reconciler.core import provenance

log = logging.getLogger("reconciler.agent")


def _split(command: str, option: str) -> list[str]:
    argv = shlex.split(command)
    if not argv:
        raise click.BadParameter("must not be empty", param_hint=option)
    return argv


@click.command("agent")
@click.option("--repo", "repo_url", required=True, help="The config repository (URL or path).")
@click.option("--branch", default="main", show_default=True)
@click.option("--pool", help="The pool this machine belongs to.")
@click.option(
    "--node",
    help="This node's name; without --pool the pool is the one whose nodeSelector matches "
    "the node's labels (from the Kubernetes Node, or --node-label).",
)
@click.option(
    "--node-label", "node_labels", multiple=True, help="KEY=VALUE, for --node without Kubernetes."
)
@click.option("--once", is_flag=True, help="One step, then exit.")
@click.option("--interval", default=60.0, show_default=True, help="Seconds between steps.")
@click.option("--bootc", "bootc_path", default="bootc", show_default=True)
@click.option(
    "--state-dir",
    default="/var/lib/reconciler-agent",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--reboot-command", default="systemctl reboot", show_default=True)
@click.option(
    "--coordination",
    type=click.Choice(["none", "kubernetes", "fleetlock"]),
    default="none",
    show_default=True,
)
@click.option("--fleetlock-url", help="FleetLock server base URL (with --coordination fleetlock).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--lease-namespace",
    default=lambda: os.environ.get("POD_NAMESPACE", "reconciler-system"),
    help="Namespace of the pool slot Leases (default $POD_NAMESPACE or reconciler-system).",
)
@click.option("--lease-duration", default=3600, show_default=True, help="Seconds.")
@click.option(
    "--health-check",
    "health_checks",
    multiple=True,
    help="A command that must exit 0 after boot (repeatable).",
)
@click.option("--health-timeout", default=60.0, show_default=True, help="Seconds per health check.")
@click.option(
    "--no-boot-complete-check", is_flag=True, help="Do not wait for boot-complete.target."
)
@click.option("--systemctl", default="systemctl", show_default=True)
@click.option(
    "--verify-grace",
    default=600.0,
    show_default=True,
    help="Seconds to wait for health checks after boot.",
)
@click.option("--boot-id-file", default="/proc/sys/kernel/random/boot_id", show_default=True)
@click.option(
    "--status-timeout", default=120.0, show_default=True, help="Seconds for bootc status."
)
@click.option(
    "--switch-timeout", default=3600.0, show_default=True, help="Seconds for bootc switch."
)
@click.option(
    "--enforce-container-sigpolicy",
    is_flag=True,
    help="Pass it to every bootc switch. On by itself when the host's "
    "/etc/containers/policy.json requires signatures (an image built with imageSigning).",
)
@click.option(
    "--allowed-signers",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SSH allowed-signers file: apply a pin only from a commit signed by one of these "
    "keys. Default: /etc/bootc-reconciler/allowed-signers under --host-root when it exists "
    "(an image built with sourceVerification carries it).",
)
@click.option(
    "--soft-reboot",
    type=click.Choice(["never", "auto"]),
    default="never",
    show_default=True,
    help="auto: soft-reboot (userspace only) when bootc says the staged image can and the "
    "kernel arguments do not change; otherwise a full reboot.",
)
@click.option(
    "--host-root",
    default="/",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The host's root as seen here (where core's SSH keys are written live).",
)
@click.option(
    "--chpasswd",
    default="chpasswd -e",
    show_default=True,
    help="Sets core's password hash live (reads user:hash on stdin, on the host).",
)
@click.option(
    "--no-live-settings",
    is_flag=True,
    help="Do not apply core's SSH keys and password hash live.",
)
@click.option(
    "--metrics-addr",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics at /metrics and the probes /healthz and /readyz "
    "(e.g. :8082). Not with --once.",
)
@git_auth_options
@output_option("With --once: the step's outcome as a line or one AgentStep document.")
def agent_command(  # click passes every option by keyword
    *,
    repo_url: str,
    branch: str,
    pool: str | None,
    node: str | None,
    node_labels: tuple[str, ...],
    once: bool,
    interval: float,
    bootc_path: str,
    state_dir: Path,
    reboot_command: str,
    coordination: str,
    fleetlock_url: str | None,
    kubeconfig: Path | None,
    lease_namespace: str,
    lease_duration: int,
    health_checks: tuple[str, ...],
    health_timeout: float,
    no_boot_complete_check: bool,
    systemctl: str,
    verify_grace: float,
    boot_id_file: str,
    status_timeout: float,
    switch_timeout: float,
    enforce_container_sigpolicy: bool,
    allowed_signers: Path | None,
    soft_reboot: str,
    host_root: Path,
    chpasswd: str,
    no_live_settings: bool,
    metrics_addr: str | None,
    git_auth: git.GitAuth | None,
    output: str,
) -> None:
    """Apply this machine's pool pin with `bootc switch`, a few machines at a time."""
    if output == "json" and not once:
        raise click.UsageError("--output json needs --once (one document per step)")
    if metrics_addr and once:
        raise click.UsageError("--metrics-addr is for the long-running agent, not --once")
    if metrics_addr:
        from reconciler.adapters import metrics as metrics_server  # noqa: PLC0415 - a loop only

        try:
            metrics_server.parse_addr(metrics_addr)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--metrics-addr") from None
    node_name = node or os.uname().nodename  # gethostname(2), without the socket module
    signers = _allowed_signers(allowed_signers, host_root)
    enforce_container_sigpolicy = enforce_container_sigpolicy or _policy_requires_signatures(
        host_root
    )
    bootc_argv = _split(bootc_path, "--bootc")
    record = None
    status: str | bootc_run.BootcError | None = None  # what the idle check's bootc said
    if once and pool is not None and coordination == "none":
        record = idle.IdleRecord(state_dir)
        facts = {  # every option but the output format, which only formats the step
            **{k: v for k, v in click.get_current_context().params.items() if k != "output"},
            "repo_url": git.redact(repo_url),  # the key holds no credential, even hashed
            "nodeName": node_name,
            "pinSigners": [s.line for s in signers.pin_signers] if signers else None,
            "enforceContainerSigpolicy": enforce_container_sigpolicy,
        }
        known, status = _idle_state(
            record, facts, live=not no_live_settings, repo_url=repo_url, branch=branch,
            git_auth=git_auth, bootc_argv=bootc_argv, status_timeout=status_timeout,
            boot_id_file=boot_id_file, state_dir=state_dir,
        )  # fmt: skip
        if known is not None:
            log.debug("%s: the same facts as the last step, which changed nothing", pool)
            _print_step(node_name, pool, known, output)
            return
        record.clear()  # a full step: it records afresh if it settles
    # The full step. Imported here: pydantic (bootc status, pins), the config loader and
    # the Git mirror are what an idle step above does without.
    from reconciler.adapters import bootc as bootc_mod  # noqa: PLC0415
    from reconciler.adapters import metrics as metrics_server  # noqa: PLC0415
    from reconciler.agent import coordination as coord  # noqa: PLC0415
    from reconciler.agent.agent import Agent, AgentConfig  # noqa: PLC0415
    from reconciler.agent.live import LiveApplier  # noqa: PLC0415
    from reconciler.agent.source import (  # noqa: PLC0415
        GitPinSource,
        PoolNotFound,
        pool_for_labels,
    )

    source = GitPinSource(repo_url, state_dir / "git", branch, git_auth, signers=signers)

    coordinator: coord.Coordinator
    kube_coord = None
    if coordination == "kubernetes":
        extras.require_kubernetes("--coordination kubernetes")
        # imported here: the kubernetes client is an optional dependency, takes a
        # second to import, and a standalone host never needs it
        from reconciler.adapters import kube  # noqa: PLC0415
        from reconciler.agent.kubernetes import KubernetesCoordinator  # noqa: PLC0415

        kube_coord = KubernetesCoordinator(
            kube.Kube.connect(kubeconfig), node_name, lease_namespace, lease_duration=lease_duration
        )
        coordinator = kube_coord
    elif coordination == "fleetlock":
        if not fleetlock_url:
            raise click.BadParameter(
                "is required with --coordination fleetlock", param_hint="--fleetlock-url"
            )
        coordinator = coord.FleetLock(fleetlock_url, node_name)
    else:
        coordinator = coord.NoCoordination()

    heartbeat = None
    if metrics_addr:
        # imported only here: prometheus_client is not worth loading for a --once step
        from reconciler.agent.metrics import AgentMetrics  # noqa: PLC0415

        agent_metrics = AgentMetrics(node_name)
        coordinator = agent_metrics.wrap(coordinator)
        # a step waits at most for bootc (status, switch) and the health checks
        busy = status_timeout * 3 + switch_timeout + health_timeout * (len(health_checks) + 1)
        heartbeat = metrics_server.Heartbeat(idle_max=2 * interval + 60, busy_max=busy + 300)
        metrics_server.MetricsServer(metrics_addr, agent_metrics.registry, heartbeat).start()

    if pool is None:
        if node is None:
            raise click.UsageError(
                "pass --pool NAME, or --node NAME to find the pool from its labels"
            )
        labels = dict(_label(x) for x in node_labels)
        if not labels and kube_coord is not None:
            labels = kube_coord.node_labels()
        try:
            pool = pool_for_labels(source.pools(), labels)
        except PoolNotFound as exc:
            raise ConfigError(ConfigProblem(f"node {node_name}: {exc}")) from None
        log.info("node %s belongs to pool %s", node_name, pool)

    checks: list[health.HealthCheck] = []
    if not no_boot_complete_check:
        checks.append(health.UnitActive(systemctl=systemctl, timeout=health_timeout))
    checks.extend(
        health.CommandCheck(tuple(_split(c, "--health-check")), health_timeout)
        for c in health_checks
    )

    systemctl_argv = _split(systemctl, "--systemctl")
    live = None
    if not no_live_settings:
        live = LiveApplier(root=host_root, chpasswd=_split(chpasswd, "--chpasswd"))
    bootc = bootc_mod.Bootc(
        bootc_argv,
        timeouts=bootc_mod.Timeouts(status=status_timeout, switch=switch_timeout),
        enforce_sigpolicy=enforce_container_sigpolicy,
    )
    if status is not None:
        bootc.answered(status)  # not run (or waited for) twice
    store = StateStore(state_dir)
    agent = Agent(
        config=AgentConfig(
            pool=pool,
            verify_grace=verify_grace,
            soft_reboot="auto" if soft_reboot == "auto" else "never",
        ),
        source=source,
        bootc=bootc,
        coordinator=coordinator,
        store=store,
        health_checks=checks,
        reboot_command=_split(reboot_command, "--reboot-command"),
        boot_id=lambda: health.read_boot_id(boot_id_file),
        soft_reboots=lambda: health.read_soft_reboots(systemctl_argv),
        live=live,
    )
    last = ""
    while True:
        missing = _missing_pool(source, pool, branch)
        if missing is not None and once:
            raise missing
        if missing is not None:
            # The pool may come with a later commit: wait for it, saying so once, in
            # the log and wherever the agent reports its state (node annotations).
            agent.cannot_follow(str(missing))
            if heartbeat is not None:
                heartbeat.beat()  # alive, waiting for the pool; not ready
                heartbeat.ready(False, str(missing))
            line = f"{pool}: error: {missing}"
            if line != last:
                log.error("%s", line)
                last = line
            time.sleep(interval)
            continue
        if heartbeat is not None:
            heartbeat.beat(busy=True)
        before, boot_id = _read(store.path), _boot_id(boot_id_file)
        state = agent.step()
        if heartbeat is not None:
            heartbeat.beat()
            heartbeat.ready()
        if once:
            if record is not None:
                _record_if_idle(
                    record, facts, before, boot_id, store, bootc, state, live=live is not None
                )
            _print_step(node_name, pool, state, output)
            return
        line = _line(pool, state)
        if line != last:  # log transitions only
            log.info("%s", line)
            last = line
        time.sleep(interval)


def _idle_state(
    record: idle.IdleRecord,
    config: dict[str, object],
    *,
    live: bool,
    repo_url: str,
    branch: str,
    git_auth: git.GitAuth | None,
    bootc_argv: list[str],
    status_timeout: float,
    boot_id_file: str,
    state_dir: Path,
) -> tuple[AgentState | None, str | bootc_run.BootcError | None]:
    """The state an idle step would end in: the persisted one, when the facts are those
    the last step recorded (`reconciler.agent.idle`); None: run the full step. And what
    `bootc status` answered, if it ran (the full step then does not run it again)."""
    recorded = record.key()
    if recorded is None:
        return None, None
    path = StateStore(state_dir).path
    data, boot_id = _read(path), _boot_id(boot_id_file)
    if data is None or boot_id is None:
        return None, None
    try:
        state = AgentState.from_json(json.loads(data))
    except (ValueError, TypeError, KeyError):
        return None, None  # the full step says what is wrong with it
    if not idle.settled(state, live=live):
        return None, None
    # `git ls-remote` (with the GitPinSource mirror's timeout) while bootc answers
    heads: list[str | None] = []

    def ask_remote() -> None:
        with contextlib.suppress(GitError):  # the full step reports it
            heads.append(git.remote_head(repo_url, branch, git_auth, timeout=120.0))

    asking = threading.Thread(target=ask_remote, name="ls-remote", daemon=True)
    asking.start()
    try:
        status = bootc_run.run(bootc_argv, bootc_run.STATUS_ARGS, status_timeout, None)
    except bootc_run.BootcError as exc:
        return None, exc  # the full step reports it
    finally:
        asking.join()
    revision = heads[0] if heads else None
    if revision is None:
        return None, status
    facts = idle.Facts(config, revision, status, data, boot_id)
    return (state if facts.key() == recorded else None), status


def _record_if_idle(
    record: idle.IdleRecord,
    config: dict[str, object],
    before: bytes | None,
    boot_id: str | None,
    store: StateStore,
    bootc: bootc_mod.Bootc,
    state: AgentState,
    *,
    live: bool,
) -> None:
    """Record the step's facts when it changed nothing and left nothing due: the state
    file as it was, one `bootc status` and no other bootc call, a settled phase."""
    after = _read(store.path)
    if (
        before is None
        or after != before
        or boot_id is None
        or bootc.ran != {"status": 1}
        or bootc.status_output is None
        or not idle.settled(state, live=live)
    ):
        return
    try:
        record.save(idle.Facts(config, state.revision, bootc.status_output, before, boot_id))
    except OSError as exc:  # the next step is a full one: slower, no less right
        log.warning("could not record the idle step in %s: %s", record.path, exc)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _boot_id(path: str) -> str | None:
    try:
        return health.read_boot_id(path)
    except (OSError, ValueError):  # the step reads it again where it needs it
        return None


def _line(pool: str, state: AgentState) -> str:
    return f"{pool}: {state.phase}" + (f": {state.reason}" if state.reason else "")


def _print_step(node: str, pool: str, state: AgentState, output: str) -> None:
    """What `--once` prints and how it exits: the same for a full and an idle step."""
    if output == "json":
        click.echo(cli_output.dumps("AgentStep", _step_json(node, state)))
    else:
        click.echo(_line(pool, state))
    if state.phase == Phase.DEGRADED:
        raise SystemExit(cli_output.EXIT_ERROR)


def _missing_pool(source: GitPinSource, pool: str, branch: str) -> ConfigError | None:
    """Why `pool` cannot be followed (no MachineConfigPool of that name on the branch),
    or None. A Git failure is left to the step, which reports and retries it."""
    try:
        known = source.pools()
    except ReconcilerError:
        return None
    if pool in known:
        return None
    names = ", ".join(sorted(known)) or "none"
    return ConfigError(
        ConfigProblem(
            f"pool {pool!r} does not exist on branch {branch!r} (pools: {names})",
            fix="check --pool, or add machineconfigpools/<pool>.yaml",
        )
    )


def _step_json(node: str, state: AgentState) -> dict[str, object]:
    return {
        "node": node,
        "pool": state.pool,
        "phase": state.phase.value,
        "reason": state.reason or None,
        "image": state.desired.image if state.desired is not None else None,
        "changedAt": cli_output.rfc3339(state.changed_at),
    }


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--node-label")
    return key, value


def _allowed_signers(path: Path | None, host_root: Path) -> provenance.Policy | None:
    """The keys pin commits must be signed with (None: pins are not checked)."""
    default = host_root / sigpolicy.ALLOWED_SIGNERS_PATH.lstrip("/")
    if path is None:
        if not default.is_file():
            return None
        path = default
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError.simple(
            f"--allowed-signers {path}: cannot read it ({exc.strerror})"
        ) from None
    from reconciler.core import provenance  # noqa: PLC0415 - only where pins are checked

    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entries.append(provenance.parse_allowed_signer(line))
        except ValueError as exc:
            raise ConfigError.simple(str(exc), file=str(path), line=number) from None
    if not entries:
        raise ConfigError.simple(
            "no allowed signer in it", file=str(path), fix="list the reconciler's public key"
        )
    log.info("pins must be signed by one of %d keys in %s", len(entries), path)
    return provenance.Policy(allowed=(), pin_signers=tuple(entries))


def _policy_requires_signatures(host_root: Path) -> bool:
    try:
        data = (host_root / sigpolicy.POLICY_PATH.lstrip("/")).read_bytes()
    except OSError:
        return False
    return sigpolicy.requires_signatures(data)
