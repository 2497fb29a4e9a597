"""`reconciler validate`, `render` and `schema` on the shipped examples, as an admin runs them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml
from click.testing import CliRunner

from reconciler.cli import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, check=False
    )


def test_validate_examples_passes() -> None:
    result = run("validate", "--repo", str(EXAMPLES))
    assert result.returncode == 0, result.stderr
    assert "3 pools" in result.stdout


def test_render_infra_merges_worker_and_infra_configs() -> None:
    result = run("render", "--repo", str(EXAMPLES), "--pool", "infra", "--output", "json")
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert re.fullmatch(r"rendered-infra-[0-9a-f]{32}", rendered["metadata"]["name"])
    spec = rendered["spec"]
    assert spec["config"]["ignition"]["version"] == "3.5.0"
    assert spec["kernelType"] == "realtime"
    assert spec["extensions"] == ["sysstat"]
    # worker kargs first (merge order), then infra's
    assert spec["kernelArguments"][-2:] == ["isolcpus=2-3", "nohz_full=2-3"]
    assert "audit=1" in spec["kernelArguments"]
    files = {f["path"]: f for f in spec["config"]["storage"]["files"]}
    # infra's override replaced the contents and kept the worker's mode
    prom = files["/var/lib/node-exporter/textfile/role.prom"]
    assert "infra" in prom["contents"]["source"]
    assert prom["mode"] == 0o644
    units = {u["name"]: u for u in spec["config"]["systemd"]["units"]}
    assert units["node-exporter.service"]["dropins"][0]["name"] == "10-limits.conf"
    assert units["rpcbind.socket"]["mask"] is True


def test_render_yaml_round_trips_and_equals_json() -> None:
    as_yaml = yaml.safe_load(run("render", "--repo", str(EXAMPLES), "--pool", "worker").stdout)
    as_json = json.loads(
        run("render", "--repo", str(EXAMPLES), "--pool", "worker", "-o", "json").stdout
    )
    assert as_yaml == as_json


def test_render_unknown_pool_names_the_pools() -> None:
    result = run("render", "--repo", str(EXAMPLES), "--pool", "gpu")
    assert result.returncode == 1
    assert "no pool 'gpu' (pools: infra, master, worker)" in result.stderr
    assert "Traceback" not in result.stderr


def test_render_is_independent_of_the_checkout_location(tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere"
    shutil.copytree(EXAMPLES, copy)
    (copy / "machineconfigs" / "50-chrony.yaml").rename(copy / "machineconfigs" / "zz.yaml")
    a = CliRunner().invoke(cli, ["render", "--repo", str(EXAMPLES), "--pool", "master"]).output
    b = CliRunner().invoke(cli, ["render", "--repo", str(copy), "--pool", "master"]).output
    assert a == b


def test_schemas_validate_the_examples(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    schemas = {p.name.split(".")[0]: json.loads(p.read_text()) for p in tmp_path.iterdir()}
    assert set(schemas) == {
        "MachineConfig",
        "MachineConfigPool",
        "MachineOSConfig",
        "ReconcilerConfig",
        "Pin",
    }
    checked = 0
    for path in EXAMPLES.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            jsonschema.validate(doc, schemas[doc["kind"]])
            checked += 1
    assert checked >= 12
    # the field docs come from the models' docstrings
    pool = schemas["MachineConfigPool"]
    assert "percentage" in json.dumps(pool)


def test_committed_repo_layout_schemas_are_current(tmp_path: Path) -> None:
    CliRunner().invoke(cli, ["schema", "--out", str(tmp_path)])
    committed = ROOT / "repo-layout" / "schema"
    for generated in tmp_path.iterdir():
        assert (committed / generated.name).read_text() == generated.read_text(), (
            f"repo-layout/schema/{generated.name} is stale: run "
            "`reconciler schema --out repo-layout/schema`"
        )
