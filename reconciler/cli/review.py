"""Review commands: plan --base (between revisions), history, rollback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from reconciler.adapters.git import local as localgit
from reconciler.adapters.registry import RegistryClient
from reconciler.cli.options import (
    ContainerfileBuilder,
    RegistryOptions,
    output_option,
    parse_author,
    registry_options,
    repo_option,
)
from reconciler.cli.output import echo_json
from reconciler.errors import ConfigError
from reconciler.loop import planning
from reconciler.review import history, revisions, rollback
from reconciler.review import output as review_output


def plan_between(
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
        result = revisions.review_revisions(local.view, base_sha, head_sha, planner, registry)
        result = replace(result, source=revisions.review_source(local.view, base_sha, head_sha))
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


@click.command("history")
@repo_option
@click.option("--pool", help="Only this pool.")
@click.option("--rev", default="HEAD", show_default=True, help="Read history up to this revision.")
@click.option(
    "--verify",
    is_flag=True,
    help="Per pin: the config commits since the previous pin and who signed them, who "
    "signed the pin commit (judged against sourceVerification), and whether the image's "
    "cosign signature verifies with imageSigning.publicKey (reads the registry).",
)
@registry_options
@output_option()
def history_command(
    repo_dir: Path,
    pool: str | None,
    rev: str,
    verify: bool,
    registry: RegistryOptions,
    output: str,
) -> None:
    """Every pin of each pool, oldest first: time, image digest, inputs digest, the config
    commit it came from (author, subject), and whether it was a build, a reuse of an
    existing image, a revert to an earlier image, or a hold (a pin set by hand)."""
    with localgit.LocalRepository(repo_dir) as local:
        entries = history.pool_history(local.view, local.resolve(rev), pool)
        if verify:
            with registry.client() as client:
                entries = history.verify_history(local.view, entries, client)
    if pool is not None and not entries:
        raise ConfigError.simple(
            f"no pin of pool {pool!r} in the history of {rev}",
            fix="check the name (`reconciler history` lists every pool)",
        )
    if output == "json":
        echo_json("HistoryList", {"items": review_output.history_json(entries)})
    else:
        click.echo(review_output.history_text(entries))


@click.command("rollback")
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
@output_option()
def rollback_command(
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
        result = rollback.rollback(
            local, pool, to, planner, client, hold=hold, branch=branch, author=who
        )
    if output == "json":
        echo_json("RollbackResult", _rollback_json(result))
        return
    click.echo(review_output.rollback_text(result))


def _rollback_json(result: rollback.RollbackResult) -> dict[str, Any]:
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
