"""Commands over a repository work tree: validate, render, schema, containerfile."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from reconciler.adapters import directory
from reconciler.cli import output as cli_output
from reconciler.cli.options import (
    output_option,
    repo_option,
)
from reconciler.cli.output import dump, echo_json
from reconciler.core import identity, load, schemas, verdict
from reconciler.core.image import containerfile as containerfile_gen
from reconciler.core.image import layout
from reconciler.errors import ConfigError, ConfigProblem


def load_checked(repo_dir: Path) -> load.Repository:
    """The work tree's repository; a directory with no configuration in it is an error
    (a wrong --repo must not pass as "nothing to do")."""
    repo = load.load_repository(directory.read_config_files(repo_dir))
    if not (repo.machine_configs or repo.pools or repo.os_configs or repo.problems):
        raise ConfigError.simple(
            f"{repo_dir}: no MachineConfig, MachineConfigPool or MachineOSConfig found",
            fix="pass --repo with the config repository's work tree (see repo-layout/)",
        )
    return repo


def pinned_pools(repo_dir: Path) -> list[str]:
    """Pools with a pin file in the work tree: judged too, as the loop judges them."""
    return sorted(p.stem for p in (repo_dir / load.PINS_DIR).glob("*.yaml"))


@click.command()
@repo_option
@output_option()
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


@click.command()
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


@click.command()
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


@click.command("containerfile")
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
@output_option()
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
    arch = layout.pool_architecture(os_config, repo.settings)
    ca = ca_bundle.read_bytes() if ca_bundle else None
    # The inputs digest needs the resolved base digest; offline it is left out.
    digest = (
        identity.inputs_digest(
            base_digest, rendered, os_config, repo.settings, architecture=arch, ca_bundle=ca
        )
        if base_digest
        else None
    )
    plan = layout.plan_image(rendered, os_config, repo.settings, arch, inputs_digest=digest)
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
