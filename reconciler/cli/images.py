"""Commands about a revision's images: plan (what each pool's image is) and build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from reconciler.adapters import builders
from reconciler.adapters.git import local as localgit
from reconciler.adapters.registry import RegistryClient, signatures
from reconciler.cli import output as cli_output
from reconciler.cli import repository
from reconciler.cli import review as review_commands
from reconciler.cli.options import (
    ContainerfileBuilder,
    RegistryOptions,
    builder_options,
    containerfile_builder_option,
    image_signing_option,
    output_option,
    registry_options,
    repo_option,
    require_kubernetes_for,
)
from reconciler.cli.output import echo_json
from reconciler.errors import ConfigError, ReconcilerError
from reconciler.loop import building, planning
from reconciler.review import revisions as review


@click.command()
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
        code = review_commands.plan_between(
            repo_dir, base, head or "HEAD", pools, output, detailed_exitcode,
            containerfile_builder, registry.client(),
        )  # fmt: skip
        raise SystemExit(code)
    if head is not None or detailed_exitcode:
        raise click.UsageError("--head and --detailed-exitcode need --base")
    if output == "markdown":
        raise click.UsageError("--output markdown needs --base (it describes a change)")
    repo = repository.load_checked(repo_dir)
    with registry.client() as client:
        planner = planning.Planner(client, default_builder=containerfile_builder)
        # pools with a pin are judged too, as `validate` and the loop judge them
        outcomes = planner.plan_pools(repo, pools or None, repository.pinned_pools(repo_dir))
    if output == "json":
        echo_json("PlanList", {"items": planning.outcomes_summary(outcomes)})
    else:
        for name in sorted(outcomes):
            click.echo(_plan_text(outcomes[name]))
    if any(isinstance(o, planning.PoolFailure) for o in outcomes.values()):
        raise SystemExit(1)


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


@click.command()
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
@image_signing_option
@output_option()
def build(
    repo_dir: Path,
    pools: tuple[str, ...],
    ref: str | None,
    containerfile_builder: ContainerfileBuilder,
    work_dir: Path | None,
    registry: RegistryOptions,
    image_signer: signatures.KeySigner | None,
    builder_opts: dict[str, Any],
    output: str,
) -> None:
    """Build and push pools' images (unless they exist); print `repo@sha256:...` for each."""
    require_kubernetes_for(containerfile_builder)
    if ref is None:
        repo = repository.load_checked(repo_dir)
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
                result = _build_one(client, pool, outcomes[pool], available, image_signer)
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


def _build_one(
    registry: RegistryClient,
    pool: str,
    outcome: planning.PoolOutcome,
    available: dict[str, Any],
    signer: signatures.KeySigner | None,
) -> building.BuildResult:
    if isinstance(outcome, planning.PoolFailure):
        raise outcome.error
    if isinstance(outcome, planning.Unmanaged):
        raise ConfigError.simple(
            f"pool {pool!r} has no MachineOSConfig, so no image is built for it",
            fix=f"add machineosconfigs/{pool}.yaml",
        )
    return building.ensure_image(registry, outcome, available, signer)
