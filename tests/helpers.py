"""Helpers shared by integration and end-to-end tests (not fixtures: plain functions)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from reconciler.adapters import directory
from reconciler.adapters.registry import RegistryClient
from reconciler.core import load, poolplan
from reconciler.loop import planning

if TYPE_CHECKING:
    from tests.fixtures.registry import RunningRegistry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
AGENT_NS = "bootc-gitops-agent"  # deploy/agent's namespace: its Role and bindings are there
RECONCILER_NS = "bootc-gitops"  # deploy/reconciler's: the default build namespace in-cluster


def example_repo(dest: Path, registry_host: str, base_ref: str, *, prefix: str = "fleet") -> Path:
    """A copy of `examples/` whose images go to `registry_host/<prefix>/<pool>` and whose
    base image is `base_ref` (the way `scripts/demo` points the examples at a local
    registry). Returns `dest`."""
    shutil.copytree(EXAMPLES, dest)
    for path in dest.rglob("*.yaml"):
        text = path.read_text()
        new = re.sub(r"registry\.example\.com/fleet/", f"{registry_host}/{prefix}/", text)
        new = new.replace("quay.io/fedora/fedora-bootc:42", base_ref)
        if new != text:
            path.write_text(new)
    return dest


def plan_pool(
    registry: RunningRegistry, repo_dir: Path, pool: str, **client_kw: Any
) -> tuple[RegistryClient, planning.PoolOutcome]:
    """Plan one pool of the work tree at `repo_dir` against `registry` (the client is
    closed after the test by the registry fixture)."""
    repo = load.load_repository(directory.read_config_files(repo_dir))
    client = registry.client(**client_kw)
    return client, planning.Planner(client).plan_pools(repo, [pool])[pool]


def plan_built_by(
    registry: RunningRegistry, repo_dir: Path, pool: str, builder: str
) -> tuple[RegistryClient, poolplan.PoolPlan]:
    """`plan_pool`, asserting the pool plans and goes to `builder`."""
    client, plan = plan_pool(registry, repo_dir, pool)
    assert isinstance(plan, poolplan.PoolPlan), plan
    assert plan.builder == builder
    return client, plan


@functools.cache
def _deploy_text() -> str:
    return subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy")], check=True,
                          capture_output=True, text=True).stdout  # fmt: skip


def deploy_docs() -> list[dict[str, Any]]:
    """The objects of `deploy/` as `kubectl kustomize` builds them (parsed afresh each
    call: tests edit them to take a verb away)."""
    return [d for d in yaml.safe_load_all(_deploy_text()) if d]
