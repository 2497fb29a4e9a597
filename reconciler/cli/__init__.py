"""The `reconciler` command: click commands over the core and adapters.

Errors become exit codes and one-line messages on stderr; a traceback only with
`--debug`. Exit codes (`cli_output`, docs/cli.md): 0 success, 1 an error (bad config,
failed build, ...), 2 only "some pool changes" under `plan --detailed-exitcode`, 3 an
unexpected failure (a bug), 64 a usage error. `-o json` prints one enveloped document.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from reconciler import extras
from reconciler.adapters import builders, directory, git
from reconciler.adapters.git import local as localgit
from reconciler.adapters.registry import RegistryClient
from reconciler.adapters.watch import RepositoryWatcher
from reconciler.cli import output as cli_output
from reconciler.cli.agent import agent_command
from reconciler.cli.options import (
    ContainerfileBuilder,
    GitSource,
    RegistryOptions,
    builder_options,
    containerfile_builder_option,
    git_options,
    parse_author,
    registry_options,
    repo_option,
)
from reconciler.core import containerfile as containerfile_gen
from reconciler.core import identity, imageplan, load, pins, schemas, verdict
from reconciler.errors import ConfigError, ConfigProblem, InternalError, ReconcilerError
from reconciler.loop import building, controller, holds, planning
from reconciler.loop.status import Status, StatusStore
from reconciler.loop.webhook import WebhookServer
from reconciler.review import output as review_output
from reconciler.review import revisions as review

F = TypeVar("F", bound=Callable[..., Any])


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (unit files, dropins) as `|` blocks, readable in a terminal."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = (
        "|" if "\n" in data and all(line == line.rstrip() for line in data.split("\n")) else None
    )
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _str_presenter)


def dump(obj: Any, output: str) -> str:
    """Objects as JSON or YAML, keys sorted (the same object always prints the same)."""
    if output == "json":
        return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
    text: str = yaml.dump(
        obj, Dumper=_BlockDumper, sort_keys=True, allow_unicode=True, width=1 << 16
    )
    return text.rstrip()


class _Commands(click.Group):
    """The CLI's error boundary: our errors become `error: ...` lines on stderr and exit
    1; anything else is a bug, said in one line with exit 3. Tracebacks only with
    `--debug`, the same under `main()` and click's test runner."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:  # the group's own options
            exc.exit_code = cli_output.EXIT_USAGE  # type: ignore[misc]  # click: a ClassVar
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # click's 2 is what `plan --detailed-exitcode` says for "changes": a typo in
            # a CI step must not read as success with changes.
            exc.exit_code = cli_output.EXIT_USAGE  # type: ignore[misc]  # click: a ClassVar
            raise
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            code = cli_output.EXIT_ERROR
            if not isinstance(exc, ReconcilerError):
                exc = InternalError(f"running {ctx.invoked_subcommand}", exc)
                code = cli_output.EXIT_INTERNAL
            for line in str(exc).splitlines():
                click.echo(f"error: {line}", err=True)
            ctx.exit(code)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_name=extras.DISTRIBUTION, prog_name="reconciler", message="%(prog)s %(version)s"
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """GitOps for image-mode (bootc) machine pools.

    MachineConfigs, MachineConfigPools and MachineOSConfigs in Git become one pinned,
    layered bootc image per pool.

    Exit codes: 0 fine, 1 an error, 2 "changes" (only `plan --detailed-exitcode`), 3 a
    bug, 64 a usage error. Shell completion (bash; zsh and fish alike):
    eval "$(_RECONCILER_COMPLETE=bash_source reconciler)"
    """
    ctx.obj = {"debug": debug}
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:  # one line per HTTP request is debugging detail, not a transition
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)


def load_checked(repo_dir: Path) -> load.Repository:
    """The work tree's repository; a directory with no configuration in it is an error
    (a wrong --repo must not pass as "nothing to do")."""
    repo = load.load_repository(directory.read_config_files(repo_dir))
    if not (repo.machine_configs or repo.pools or repo.os_configs or repo.broken
            or repo.problems):  # fmt: skip
        raise ConfigError.simple(
            f"{repo_dir}: no MachineConfig, MachineConfigPool or MachineOSConfig found",
            fix="pass --repo with the config repository's work tree (see repo-layout/)",
        )
    return repo


output_option = click.option(
    "--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True
)


def echo_json(kind: str, body: dict[str, Any]) -> None:
    click.echo(cli_output.dumps(kind, body))


def pinned_pools(repo_dir: Path) -> list[str]:
    """Pools with a pin file in the work tree: judged too, as the loop judges them."""
    return sorted(p.stem for p in (repo_dir / load.PINS_DIR).glob("*.yaml"))


@cli.command()
@repo_option
@output_option
def validate(repo_dir: Path, output: str) -> None:
    """Check every file, render every pool and plan its image; list all problems and
    which pools they block (exit 1 if any, or if the directory holds no configuration).
    The loop's own judgement: `run` pins the pools this reports as fine, and no other."""
    repo = load_checked(repo_dir)
    verdicts = verdict.judge(repo, pinned_pools(repo_dir))
    problems = verdict.problems_of(verdicts, repo)
    if output == "json":
        echo_json("ValidationResult", _validation_json(repo, verdicts, problems))
        if problems:
            raise SystemExit(cli_output.EXIT_ERROR)
        return
    # Warnings (unused keys, install-time storage, unlabelled configs) never block a
    # pool and do not change the exit code.
    for warning in repo.warnings:
        click.echo(f"warning: {warning}", err=True)
    for problem in problems:
        click.echo(str(problem), err=True)
    blocked = sorted(p for p, v in verdicts.items() if isinstance(v, verdict.Blocked))
    fine = {p: v for p, v in verdicts.items() if isinstance(v, verdict.Ready)}
    if problems:
        click.echo(f"{len(problems)} problem(s) found", err=True)
        if blocked:
            click.echo(f"blocked (keep their pins): {', '.join(blocked)}", err=True)
        if fine:
            click.echo(f"fine (would be pinned): {', '.join(sorted(fine))}", err=True)
        raise SystemExit(1)
    click.echo(
        f"ok: {len(repo.machine_configs)} MachineConfigs, {len(fine)} pools "
        f"({', '.join(f'{p}={v.rendered.name}' for p, v in fine.items())})"
    )


def _problem_json(problem: ConfigProblem) -> dict[str, Any]:
    return {"file": problem.file, "line": problem.line, "kind": problem.kind,
            "name": problem.name, "field": problem.field, "problem": problem.problem,
            "fix": problem.fix, "message": str(problem)}  # fmt: skip


def _validation_json(
    repo: load.Repository,
    verdicts: Mapping[str, verdict.Verdict],
    problems: list[ConfigProblem],
) -> dict[str, Any]:
    pools: dict[str, Any] = {}
    for name, v in sorted(verdicts.items()):
        if isinstance(v, verdict.Ready):
            pools[name] = {"status": "fine", "renderedConfig": v.rendered.name}
        else:
            pools[name] = {"status": "blocked", "error": str(v.error)}
    return {
        "valid": not problems,
        "machineConfigs": len(repo.machine_configs),
        "pools": pools,
        "problems": [_problem_json(p) for p in problems],
        "warnings": [_problem_json(w) for w in repo.warnings],
    }


@cli.command()
@repo_option
@click.option("--pool", required=True, help="Pool to render.")
@click.option("--output", "-o", type=click.Choice(["yaml", "json"]), default="yaml")
def render(repo_dir: Path, pool: str, output: str) -> None:
    """Print a pool's rendered MachineConfig (the merge of its selected configs)."""
    repo = load_checked(repo_dir)
    if pool not in repo.pools:
        known = ", ".join(sorted(repo.pools)) or "none"
        raise ConfigError.simple(f"no pool {pool!r} (pools: {known})", fix="pass --pool NAME")
    rendered = verdict.render_pool(repo, pool)
    if isinstance(rendered, ConfigError):
        raise rendered
    click.echo(dump(rendered.to_machine_config(), output))


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one <Kind>.schema.json per kind here instead of printing them.",
)
@click.option(
    "--output",
    "-o",
    type=click.Choice(["json"]),
    default="json",
    help="Printed as one SchemaList document (the only form).",
)
def schema(out_dir: Path | None, output: str) -> None:
    """JSON schemas of every kind the repository holds (generated from the models)."""
    docs = schemas.all_schemas()
    if out_dir is None:
        echo_json("SchemaList", {"schemas": docs})
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, doc in docs.items():
        (out_dir / f"{kind}.schema.json").write_text(
            json.dumps(doc, indent=2, sort_keys=True) + "\n"
        )
        click.echo(out_dir / f"{kind}.schema.json")


@cli.command("containerfile")
@repo_option
@click.option("--pool", required=True, help="Pool whose image to describe.")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the Containerfile and its build context here.",
)
@click.option(
    "--base-digest",
    help="The base image's manifest digest for the pool's architecture (sha256:...). "
    "Without it the Containerfile builds FROM the base as written.",
)
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A PEM bundle of extra CA certificates to trust in the image.",
)
@output_option
def containerfile_command(
    repo_dir: Path,
    pool: str,
    output_dir: Path | None,
    base_digest: str | None,
    ca_bundle: Path | None,
    output: str,
) -> None:
    """Print the Containerfile that builds a pool's image with podman, buildah or docker."""
    repo = load_checked(repo_dir)
    if pool not in repo.pools:
        known = ", ".join(sorted(repo.pools)) or "none"
        raise ConfigError.simple(f"no pool {pool!r} (pools: {known})", fix="pass --pool NAME")
    if base_digest is not None and not identity.DIGEST_RE.match(base_digest):
        raise click.BadParameter(
            f"{base_digest!r} is not 'sha256:<64 hex>'", param_hint="--base-digest"
        )
    judged = verdict.judge_pool(repo, pool)
    if isinstance(judged, verdict.Blocked):
        raise judged.error
    rendered = judged.rendered
    loaded = repo.os_configs.get(pool)
    os_config = loaded.obj if loaded else None
    arch = imageplan.pool_architecture(os_config, repo.settings)
    ca = ca_bundle.read_bytes() if ca_bundle else None
    # The inputs digest needs the resolved base digest; offline it is left out.
    digest = (
        identity.inputs_digest(
            base_digest, rendered, os_config, repo.settings, architecture=arch, ca_bundle=ca
        )
        if base_digest
        else None
    )
    plan = imageplan.plan_image(rendered, os_config, repo.settings, arch, inputs_digest=digest)
    result = containerfile_gen.generate(plan, base_digest=base_digest, ca_bundle=ca)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "Containerfile").write_text(result.text)
        for name, data in result.context.items():
            (output_dir / name).write_bytes(data)
    if output == "json":
        context = {n: base64.b64encode(d).decode() for n, d in sorted(result.context.items())}
        echo_json("Containerfile", {"pool": pool, "inputsDigest": digest,
                                    "containerfile": result.text, "context": context})  # fmt: skip
        return
    click.echo(result.text, nl=False)


@cli.command()
@repo_option
@click.option("--pool", "pools", multiple=True, help="Only these pools (repeatable).")
@click.option("--output", "-o", type=click.Choice(["text", "json", "markdown"]), default="text")
@click.option(
    "--base",
    metavar="REV",
    help="Plan a change: compare the configuration at REV (e.g. origin/main) with --head, "
    "both read from Git (not the work tree); per changed pool the rendered-config diff, "
    "the disruption, the build and the image it moves to.",
)
@click.option("--head", metavar="REV", help="With --base: the revision to plan (default: HEAD).")
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="With --base: exit 0 when no pool changes, 2 when some do, 1 on errors.",
)
@containerfile_builder_option
@registry_options
def plan(
    repo_dir: Path,
    pools: tuple[str, ...],
    output: str,
    base: str | None,
    head: str | None,
    detailed_exitcode: bool,
    containerfile_builder: ContainerfileBuilder,
    registry: RegistryOptions,
) -> None:
    """What each pool's image would be: inputs digest, tag, builder, predicted digest.

    Resolves base images through the registry (one lookup per base image); builds and
    pushes nothing. Exit 1 if any pool cannot be planned.

    With --base REV: what merging --head does to every pool (the pull request view),
    as text, JSON or markdown for a PR comment.
    """
    if base is not None:
        code = _plan_between(repo_dir, base, head or "HEAD", pools, output, detailed_exitcode,
                             containerfile_builder, registry.client())  # fmt: skip
        raise SystemExit(code)
    if head is not None or detailed_exitcode:
        raise click.UsageError("--head and --detailed-exitcode need --base")
    if output == "markdown":
        raise click.UsageError("--output markdown needs --base (it describes a change)")
    repo = load_checked(repo_dir)
    with registry.client() as client:
        planner = planning.Planner(client, default_builder=containerfile_builder)
        outcomes = planner.plan_pools(repo, pools or None)
    if output == "json":
        echo_json("PlanList", {"items": planning.outcomes_summary(outcomes)})
    else:
        for name in sorted(outcomes):
            click.echo(_plan_text(outcomes[name]))
    if any(isinstance(o, planning.PoolFailure) for o in outcomes.values()):
        raise SystemExit(1)


def _plan_between(
    repo_dir: Path,
    base: str,
    head: str,
    pools: tuple[str, ...],
    output: str,
    detailed: bool,
    containerfile_builder: ContainerfileBuilder,
    registry: RegistryClient,
) -> int:
    with registry, localgit.LocalRepository(repo_dir) as local:
        base_sha, head_sha = local.resolve(base), local.resolve(head)
        planner = planning.Planner(registry, default_builder=containerfile_builder)
        result = review.review_revisions(local.view, base_sha, head_sha, planner, registry)
    if not result.pools:
        raise ConfigError.simple(
            f"no MachineConfigPool at {base} or at {head} in {repo_dir}",
            fix="pass --repo with a clone of the config repository (see repo-layout/)",
        )
    if pools:
        unknown = sorted(set(pools) - set(result.pools))
        if unknown:
            raise ConfigError.simple(f"no pool {', '.join(unknown)} at {base} or {head}")
        result = result.only(pools)
    if output == "json":
        echo_json("PlanReview", review_output.review_json(result))
    elif output == "markdown":
        click.echo(review_output.review_markdown(result), nl=False)
    else:
        click.echo(review_output.review_text(result))
    return result.exit_code(detailed)


def _plan_text(outcome: planning.PoolOutcome) -> str:
    if isinstance(outcome, planning.PoolFailure):
        kind = "retry later" if outcome.transient else "fix the repository"
        body = "\n".join(f"  {line}" for line in str(outcome.error).splitlines())
        return f"{outcome.pool}: cannot plan ({kind})\n{body}"
    if isinstance(outcome, planning.Unmanaged):
        return f"{outcome.pool}: {outcome.rendered.name}, no MachineOSConfig: no image is built"
    how = "native build" if outcome.builder == "native" else f"{outcome.builder} build"
    why = f" ({'; '.join(outcome.image.reasons)})" if outcome.image.reasons else ""
    rows = [
        ("rendered config", outcome.rendered.name),
        ("inputs digest", outcome.inputs_digest),
        ("base image", f"{outcome.base_image} -> {outcome.base.digest}"),
        ("image", str(outcome.target)),
        ("predicted digest", outcome.predicted_digest or "known after the build"),
    ]
    return "\n".join([f"{outcome.pool}: {how}{why}", *(f"  {k:17}{v}" for k, v in rows)])


@cli.command()
@repo_option
@click.option(
    "--pool",
    "pools",
    multiple=True,
    help="The pool to build (repeatable). Default: every pool with a MachineOSConfig.",
)
@click.option(
    "--ref",
    metavar="REV",
    help="Build the configuration at this revision, read from Git (e.g. a pull request's "
    "head): after the merge the reconciler finds the images by identity and pins them "
    "without a build.",
)
@containerfile_builder_option
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the buildah builder keeps its storage (the cached base), build "
    "directories and logs. Default: reconciler in the system temp directory.",
)
@registry_options
@builder_options
@output_option
def build(
    repo_dir: Path,
    pools: tuple[str, ...],
    ref: str | None,
    containerfile_builder: ContainerfileBuilder,
    work_dir: Path | None,
    registry: RegistryOptions,
    builder_opts: dict[str, Any],
    output: str,
) -> None:
    """Build and push pools' images (unless they exist); print `repo@sha256:...` for each."""
    _require_kubernetes_for(containerfile_builder)
    if ref is None:
        repo = load_checked(repo_dir)
    else:
        with localgit.LocalRepository(repo_dir) as local:
            repo = review.load_at(local.view, local.resolve(ref))
    names = list(pools) or sorted(p for p in repo.pools if p in repo.os_configs)
    failures: list[ReconcilerError] = []
    items: list[dict[str, Any]] = []
    with registry.client() as client:
        planner = planning.Planner(client, default_builder=containerfile_builder)
        outcomes = planner.plan_pools(repo, names)
        available = builders.available(client, work_dir=work_dir, **builder_opts)
        for pool in names:
            try:
                result = _build_one(client, pool, outcomes[pool], available)
            except ReconcilerError as exc:
                if len(names) == 1 and output != "json":
                    raise
                failures.append(exc)
                items.append({"pool": pool, "image": None, "digest": None, "builtBy": None,
                              "error": str(exc)})  # fmt: skip
                click.echo(f"{pool}: failed", err=True)
                continue
            items.append({"pool": pool, "image": str(result.image), "digest": result.digest,
                          "builtBy": result.built_by, "error": None})  # fmt: skip
            how = (
                "existing image, nothing built" if result.built_by == "reused" else result.built_by
            )
            click.echo(f"{pool}: {how}", err=True)
            if output != "json":
                click.echo(str(result.image))
    if output == "json":
        echo_json("BuildResultList", {"items": items})
        if failures:
            raise SystemExit(cli_output.EXIT_ERROR)
    if failures:
        raise ReconcilerError("\n".join(str(f) for f in failures))


def _require_kubernetes_for(containerfile_builder: ContainerfileBuilder) -> None:
    if containerfile_builder == "job":
        extras.require_kubernetes("--containerfile-builder job")


def _build_one(
    registry: RegistryClient,
    pool: str,
    outcome: planning.PoolOutcome,
    available: dict[str, Any],
) -> building.BuildResult:
    if isinstance(outcome, planning.PoolFailure):
        raise outcome.error
    if isinstance(outcome, planning.Unmanaged):
        raise ConfigError.simple(
            f"pool {pool!r} has no MachineOSConfig, so no image is built for it",
            fix=f"add machineosconfigs/{pool}.yaml",
        )
    return building.ensure_image(registry, outcome, available)


@cli.command()
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
@containerfile_builder_option
@registry_options
@builder_options
@click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="With --once: the pass's report as text or one PassReport document.",
)
def run(
    source: GitSource,
    once: bool,
    interval: float,
    base_poll: float,
    author: str,
    webhook_listen: str | None,
    webhook_secret_file: str | None,
    containerfile_builder: ContainerfileBuilder,
    registry: RegistryOptions,
    builder_opts: dict[str, Any],
    output: str,
) -> None:
    """Reconcile the repository: build what changed and commit pins back (long-running).

    Each pass: fetch (one ls-remote when nothing moved), load, plan, build what is
    missing, write pins, one commit, push (compare-and-swap, retried on a race).
    """
    work = source.work
    settings = controller.RunSettings(
        branch=source.branch,
        author=parse_author(author),
        default_builder=containerfile_builder,
        base_poll_s=base_poll,
    )
    if webhook_listen and not webhook_secret_file:
        raise click.UsageError("--webhook-listen needs --webhook-secret-file")
    if output == "json" and not once:
        raise click.UsageError("--output json needs --once (a report per pass)")
    _require_kubernetes_for(containerfile_builder)
    with controller.WorkDirLock(work), registry.client() as client:
        mirror = git.Mirror(source.url, work / "mirror", source.auth)
        available = builders.available(client, work_dir=work, **builder_opts)
        reconciler = controller.Reconciler(mirror, client, work, settings, available)
        if once:
            report = reconciler.reconcile_once(force=True)
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
        _run_forever(reconciler, source, interval, webhook_listen, webhook_secret_file)


def _run_forever(
    reconciler: controller.Reconciler,
    source: GitSource,
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
    local = Path(source.url)
    if local.is_dir():
        helpers.append(RepositoryWatcher(local, trigger).start())
    if webhook_listen and webhook_secret_file:
        host, _, port = webhook_listen.rpartition(":")
        secret = Path(webhook_secret_file).read_bytes().strip()
        bind = host or "0.0.0.0"  # noqa: S104 - the admin chose to listen on every address
        helpers.append(WebhookServer(bind, int(port), secret, source.branch, trigger).start())
    logging.getLogger(__name__).info(
        "watching %s (%s) every %.0fs", git.redact(source.url), source.branch, interval
    )
    try:
        reconciler.run(stop, trigger, interval)
    except KeyboardInterrupt:
        pass
    finally:
        for helper in helpers:
            helper.stop()


def _pass_text(report: controller.PassReport) -> str:
    lines = []
    for pool in sorted(report.pools):
        r = report.pools[pool]
        image = f" {r.pin.spec.image}" if r.pin is not None else ""
        lines.append(f"{pool}: {r.state}{image}")
        if r.message and r.state not in ("pinned", "unchanged"):
            lines += [f"  {line}" for line in r.message.splitlines()]
    if report.commit:
        lines.append(f"pin commit {report.commit} pushed")
    elif not report.skipped:
        lines.append(f"no commit: pins at {report.head[:10]} are current")
    return "\n".join(lines)


def _pass_json(report: controller.PassReport) -> dict[str, Any]:
    pools = {
        name: {
            "state": r.state,
            "image": r.pin.spec.image if r.pin is not None else None,
            "message": r.message,
            "transient": r.transient,
        }
        for name, r in sorted(report.pools.items())
    }
    return {"head": report.head, "commit": report.commit, "skipped": report.skipped,
            "pools": pools}  # fmt: skip


@cli.command()
@git_options
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text")
def status(
    source: GitSource,
    output: str,
) -> None:
    """Each pool's pin in Git, with the conditions the last pass recorded
    (Ready, Building, Stalled, Held) and its last error."""
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
    doc = status_document(head, pinned, recorded)
    if output == "json":
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    click.echo(_status_text(doc, color=review_output.use_color(sys.stdout)))


def status_document(
    head: str, pinned: Mapping[str, pins.Pin | pins.PinError], recorded: Status
) -> dict[str, Any]:
    pools: dict[str, Any] = {}
    for name, pin in sorted(pinned.items()):
        if isinstance(pin, pins.PinError):
            pools[name] = {"pin": None, "pinError": str(pin)}
        else:
            pools[name] = {"pin": pin.spec.image, "sourceCommit": pin.spec.source_commit,
                           "renderedConfig": pin.spec.rendered_config}  # fmt: skip
    for name, state in recorded.pools.items():
        entry = pools.setdefault(name, {"pin": None})
        entry["conditions"] = {
            k: {"status": c.status, "reason": c.reason, "message": c.message, "since": c.since}
            for k, c in state.conditions.items()
        }
        entry["lastError"] = state.last_error
        if state.retry_at:
            entry["retryAt"] = state.retry_at
    return {
        "head": head,
        "observedHead": recorded.observed_head,
        "statusIsCurrent": recorded.observed_head == head,
        "lastPass": recorded.last_pass,
        "pools": pools,
    }


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
    rows = [("POOL", "READY", "STATE", "PIN", "SOURCE", "AGE")]
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
        ))  # fmt: skip
        for key in ("Held", "Stalled"):
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
    return "\n".join(lines + notes)


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


@cli.command()
@repo_option
@click.option("--pool", help="Only this pool.")
@click.option("--rev", default="HEAD", show_default=True, help="Read history up to this revision.")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text")
def history(repo_dir: Path, pool: str | None, rev: str, output: str) -> None:
    """Every pin of each pool, oldest first: time, image digest, inputs digest, the config
    commit it came from (author, subject), and whether it was a build, a reuse of an
    existing image, a revert to an earlier image, or a hold (a pin set by hand)."""
    with localgit.LocalRepository(repo_dir) as local:
        entries = review.pool_history(local.view, local.resolve(rev), pool)
    if pool is not None and not entries:
        raise ConfigError.simple(
            f"no pin of pool {pool!r} in the history of {rev}",
            fix="check the name (`reconciler history` lists every pool)",
        )
    if output == "json":
        echo_json("HistoryList", {"items": review_output.history_json(entries)})
    else:
        click.echo(review_output.history_text(entries))


@cli.command()
@repo_option
@click.option("--pool", required=True, help="The pool to roll back.")
@click.option(
    "--to",
    "to",
    required=True,
    metavar="DIGEST|REV",
    help="An image digest from `reconciler history` (sha256:..., a prefix will do), a pin "
    "commit, or a config commit.",
)
@click.option(
    "--hold",
    is_flag=True,
    help="Instead of reverting config commits, commit the earlier pin itself: the "
    "reconciler holds the pool there until its inputs change.",
)
@click.option(
    "--branch",
    metavar="NAME",
    help="Put the commits on this new branch (for a pull request) instead of the current one.",
)
@click.option("--author", help="Author of the new commits, 'Name <email>' (default: git config).")
@click.option(
    "--containerfile-builder",
    type=click.Choice(["buildah", "job"]),
    default="buildah",
    show_default=True,
    help="Builder the prediction assumes for pools with RUN steps that name none.",
)
@registry_options
@output_option
def rollback(
    repo_dir: Path,
    pool: str,
    to: str,
    hold: bool,
    branch: str | None,
    author: str | None,
    containerfile_builder: ContainerfileBuilder,
    registry: RegistryOptions,
    output: str,
) -> None:
    """Return a pool to an earlier image: `git revert` the config commits since then
    (or, with --hold, commit the earlier pin), then say what the next pass will do.

    Nothing is pushed: push the branch, or open a pull request from it.
    """
    who = parse_author(author) if author else None
    with registry.client() as client, localgit.LocalRepository(repo_dir) as local:
        planner = planning.Planner(client, default_builder=containerfile_builder)
        result = review.rollback(
            local, pool, to, planner, client, hold=hold, branch=branch, author=who
        )
    if output == "json":
        echo_json("RollbackResult", _rollback_json(result))
        return
    click.echo(review_output.rollback_text(result))


def _rollback_json(result: review.RollbackResult) -> dict[str, Any]:
    target = result.target
    return {
        "pool": result.pool,
        "mode": result.mode,
        "point": result.point,
        "branch": result.branch,
        "commit": result.commit,
        "target": target.to_json() if target is not None else None,
        "reverted": [
            {"sha": c.sha, "subject": c.subject, "author": f"{c.author_name} <{c.author_email}>"}
            for c in result.reverted
        ],
        "predictions": {p: pred.to_json() for p, pred in sorted(result.predictions.items())},
    }


cli.add_command(agent_command)


def main() -> None:
    cli(prog_name="reconciler")
