"""`deploy/` is what an admin applies: every manifest must be one a cluster accepts
(validated strictly against the Kubernetes OpenAPI schemas, so a misspelt field fails),
the kustomizations must name files that exist, and the commands the manifests run must
be commands and options the CLI has."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from reconciler.cli import cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSIONS = ("1.29.0", "1.37.0")


def manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                out.append((f"{path.relative_to(DEPLOY)}:{doc['kind']}", doc))
    return out


@pytest.mark.parametrize(("where", "doc"), manifests(), ids=[w for w, _ in manifests()])
def test_every_manifest_is_valid_kubernetes(where: str, doc: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomizations_name_existing_files() -> None:
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        doc = yaml.safe_load(kustomization.read_text())
        for resource in doc["resources"]:
            assert (kustomization.parent / resource).exists(), f"{kustomization}: {resource}"


def containers() -> list[tuple[str, list[str]]]:
    out = []
    for where, doc in manifests():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            out.append((f"{where}/{c['name']}", c["args"]))
    return out


@pytest.mark.parametrize(("where", "args"), containers(), ids=[w for w, _ in containers()])
def test_container_args_parse_with_the_cli(where: str, args: list[str]) -> None:
    command = cli.commands[args[0]]
    # Kubernetes expands $(VAR) from the container's env; a placeholder value parses.
    expanded = [
        a.replace("$(NODE_NAME)", "node-a").replace("$(POD_NAMESPACE)", "ns") for a in args[1:]
    ]
    ctx = command.make_context(args[0], [a for a in expanded], resilient_parsing=True)
    given = {p.name for p in command.params if ctx.params.get(p.name) not in (None, (), False)}
    assert given, where
    for arg in expanded:
        if arg.startswith("--") and "=" in arg:
            name = arg[2:].split("=", 1)[0]
            assert any(
                f"--{name}" in p.opts for p in command.params if isinstance(p, click.Option)
            ), f"{where}: {args[0]} has no option --{name}"
    # commands given as one string are split the way the agent splits them
    for arg in expanded:
        if arg.startswith(("--bootc=", "--systemctl=", "--reboot-command=")):
            assert shlex.split(arg.split("=", 1)[1])[0] == "nsenter"
