"""Real MachineConfigs (`tests/corpus/machineconfigs/`, sources in `tests/corpus/README.md`)
load, render and plan, each in a minimal repository with a pool that selects it: what
MCO accepts is accepted here. Warnings (unused keys, install-time storage) are allowed;
problems are not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler.core import load, model, verdict
from reconciler.core.image import layout

CORPUS = Path(__file__).parent.parent / "corpus" / "machineconfigs"
FILES = sorted(p.name for p in CORPUS.glob("*.yaml"))
SETTINGS = """\
apiVersion: gitops.bootc.dev/v1alpha1
kind: ReconcilerConfig
metadata: {name: settings}
spec: {defaultBaseImage: "quay.io/fedora/fedora-bootc:42"}
"""


def minimal_repo(text: str) -> tuple[dict[str, str], str, str]:
    """The config, a pool selecting it (by its role label, else its first label) and
    settings with a base image; and the pool's name and architecture. An unlabelled
    config (MCO selects it nowhere) gets a worker role label here."""
    doc = yaml.safe_load(text)
    labels = doc["metadata"].get("labels") or {}
    if not labels:
        doc["metadata"]["labels"] = labels = {model.ROLE_LABEL: "worker"}
        text = yaml.safe_dump(doc)
    key = model.ROLE_LABEL if model.ROLE_LABEL in labels else sorted(labels)[0]
    pool = labels[key] if load.POOL_NAME_RE.fullmatch(labels[key]) else "custom"
    pool_doc = {
        "apiVersion": model.MCO_API_VERSION,
        "kind": "MachineConfigPool",
        "metadata": {"name": pool},
        "spec": {"machineConfigSelector": {"matchLabels": {key: labels[key]}}},
    }
    arch = "arm64" if (doc.get("spec") or {}).get("kernelType") == "64k-pages" else "amd64"
    return (
        {"mc.yaml": text, "pool.yaml": yaml.safe_dump(pool_doc), "reconciler.yaml": SETTINGS},
        pool,
        arch,
    )


def test_the_corpus_is_real_and_large() -> None:
    assert len(FILES) >= 40
    for name in FILES:
        assert (CORPUS / name).read_text().startswith("# Source: "), name
    readme = (CORPUS.parent / "README.md").read_text()
    for name in FILES:
        assert name in readme, f"{name} has no source line in tests/corpus/README.md"


@pytest.mark.parametrize("name", FILES)
def test_real_machine_config_loads_renders_and_plans(name: str) -> None:
    files, pool, arch = minimal_repo((CORPUS / name).read_text())
    repo = load.load_repository(files)
    assert [str(p) for p in repo.problems] == []
    rendered, failed = verdict.render_all(repo)
    assert {p: [str(x) for x in e.problems] for p, e in failed.items()} == {}
    assert set(rendered) == {pool}
    plan = layout.plan_image(rendered[pool], None, repo.settings, arch)
    assert plan.rendered_name == rendered[pool].name
