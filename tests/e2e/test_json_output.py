"""`-o json` of every command, validated against its documented schema (docs/json/): one
envelope (`apiVersion`, `kind`) and RFC 3339 times.

Real: the CNCF registry, a bare Git repository (file://) with an admin's clone, the
reconcile loop (`run --once`), `git` for every commit; the agent's bootc is the stand-in
(tests/fixtures/bootc.py). `render` prints a MachineConfig, which is its own envelope
(`repo-layout/schema/MachineConfig.schema.json`); `status` belongs to the status work.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.cli import output as cli_output
from tests.fixtures.bootc import FakeHost, pin_text
from tests.fixtures.gitservers import GitServers, files_from_dir, run_git
from tests.fixtures.registry import BaseImage, RunningRegistry
from tests.helpers import EXAMPLES, ROOT, example_repo

pytestmark = [pytest.mark.registry, pytest.mark.git]

SCHEMAS = ROOT / "docs" / "json"
KINDS = {
    "validate": "ValidationResult",
    "plan": "PlanList",
    "plan --base": "PlanReview",
    "containerfile": "Containerfile",
    "build": "BuildResultList",
    "run --once": "PassReport",
    "status": "Status",
    "history": "HistoryList",
    "rollback": "RollbackResult",
    "schema": "SchemaList",
    "agent --once": "AgentStep",
}
KARGS = "machineconfigs/05-worker-kernelargs.yaml"


def schema_of(kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    return doc


def rfc3339(text: str) -> bool:
    # RFC 3339 section 5.6: full-date "T" full-time, the offset required ("Z" or +hh:mm)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return False
    return "T" in text and when.tzinfo is not None


FORMATS = jsonschema.FormatChecker()
FORMATS.checks("date-time")(rfc3339)


def check(stdout: str, kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(stdout)
    assert doc["apiVersion"] == cli_output.API_VERSION
    assert doc["kind"] == kind
    jsonschema.Draft202012Validator(schema_of(kind), format_checker=FORMATS).validate(doc)
    return doc


def test_every_documented_schema_is_a_valid_schema_and_every_kind_has_one() -> None:
    documented = {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")}
    assert documented == set(KINDS.values())
    for kind in documented:
        jsonschema.Draft202012Validator.check_schema(schema_of(kind))
    # the schemas are not vacuous: a document without its envelope is refused
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"items": []}, schema_of("PlanList"))


def test_a_time_without_an_offset_is_not_rfc3339() -> None:
    assert rfc3339("2026-12-01T09:30:00Z")
    assert rfc3339("2026-12-01T09:30:00+01:00")
    assert not rfc3339("2026-12-01 09:30:00")
    assert not rfc3339("1764581400.0")
    assert cli_output.rfc3339(0) == "1970-01-01T00:00:00Z"


def test_every_command_prints_its_documented_json(
    git_servers: GitServers, registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> None:
    prefix = f"json-{tmp_path.name}"[:60].lower().replace("_", "-")
    seed = example_repo(tmp_path / "seed", registry.host, base_image.ref, prefix=prefix)
    shutil.rmtree(seed / "ci")
    (seed / "machineosconfigs" / "infra.yaml").unlink()  # a Containerfile build: no buildah here
    server = git_servers.new_repo("file", files_from_dir(seed))
    clone = tmp_path / "clone"
    run_git("clone", "-q", server.url, str(clone))
    run_git("config", "user.name", "Admin", cwd=clone)
    run_git("config", "user.email", "admin@example.test", cwd=clone)
    reg = ["--insecure-registry", registry.host]
    seen: set[str] = set()

    def cli_json(name: str, *argv: str, code: int = 0) -> dict[str, Any]:
        result = CliRunner().invoke(cli, [*argv, "-o", "json"])
        assert result.exit_code == code, result.output
        seen.add(name)
        return check(result.stdout, KINDS[name])

    here = ["--repo", str(clone)]
    valid = cli_json("validate", "validate", *here)
    assert valid["valid"]
    assert valid["pools"]["worker"]["status"] == "fine"
    plans = cli_json("plan", "plan", *here, *reg)
    assert {p["pool"] for p in plans["items"]} == {"infra", "master", "worker"}
    cf = cli_json("containerfile", "containerfile", *here, "--pool", "worker")
    assert "\nFROM " in cf["containerfile"]
    assert "config-layer.tar" in cf["context"]
    assert "MachineConfig" in cli_json("schema", "schema")["schemas"]

    work = ["--work-dir", str(tmp_path / "work")]
    first = cli_json("run --once", "run", "--once", "--repo", server.url, *work, *reg)
    assert first["pools"]["worker"]["state"] == "pinned"
    assert first["commit"]

    run_git("pull", "-q", "--ff-only", cwd=clone)
    kargs = clone / KARGS
    kargs.write_text(kargs.read_text().replace("kernelArguments:", "kernelArguments:\n    - quiet"))
    run_git("commit", "-q", "-am", "worker: quiet", cwd=clone)
    review = cli_json("plan --base", "plan", *here, *reg, "--base", "origin/main",
                      "--detailed-exitcode", code=2)  # fmt: skip
    assert review["changed"] == ["infra", "worker"]  # infra takes worker configs
    built = cli_json("build", "build", *here, *reg, "--ref", "HEAD", "--pool", "worker")
    assert built["items"][0]["builtBy"] == "native"

    # an unused key: a warning, not a problem (Ignition ignores it too)
    kargs.write_text(
        kargs.read_text().replace(
            "spec:", "spec:\n  config:\n    ignition: {version: 3.4.0}\n    colour: blue", 1
        )
    )
    run_git("commit", "-q", "-am", "worker: an unused key", cwd=clone)
    run_git("push", "-q", "origin", "HEAD:main", cwd=clone)
    second = cli_json("run --once", "run", "--once", "--repo", server.url, *work, *reg)
    assert second["pools"]["worker"]["state"] == "pinned"
    status = cli_json("status", "status", "--repo", server.url, *work)
    assert status["statusIsCurrent"]
    assert status["pools"]["worker"]["conditions"]["Ready"]["status"] is True
    assert [w for w in status["warnings"] if "colour" in w], status["warnings"]
    run_git("pull", "-q", "--ff-only", cwd=clone)
    history = cli_json("history", "history", *here, "--pool", "worker")
    # the second pin reuses the image `build --ref` pushed ahead of the merge
    assert [e["kind"] for e in history["items"]] == ["build", "reuse"]
    earlier = history["items"][0]["digest"]
    back = cli_json("rollback", "rollback", *here, *reg, "--pool", "worker", "--to", earlier,
                    "--branch", "back")  # fmt: skip
    assert back["mode"] == "revert"
    assert back["predictions"]["worker"]["digest"] == earlier

    assert seen == set(KINDS) - {"agent --once"}


def test_the_agent_prints_its_documented_json(
    git_servers: GitServers, bootc_host: FakeHost, tmp_path: Path
) -> None:
    image = "registry.example.com/fleet/worker"  # the examples' push repository
    digest = "sha256:" + "a" * 64
    bootc_host.add_image(image, digest)
    bootc_host.install(f"{image}@{digest}")
    files = files_from_dir(EXAMPLES)
    files["pins/worker.yaml"] = pin_text("worker", f"{image}@{digest}").encode()
    server = git_servers.new_repo("file", files)
    result = CliRunner().invoke(cli, [
        "agent", "--once", "-o", "json", "--repo", server.url, "--pool", "worker",
        "--node", "node-1", "--bootc", str(bootc_host.bootc),
        "--systemctl", str(bootc_host.systemctl), "--state-dir", str(tmp_path / "state"),
        "--boot-id-file", str(bootc_host.boot_id_file), "--no-live-settings",
        "--reboot-command", " ".join(bootc_host.reboot_command),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    step = check(result.stdout, "AgentStep")
    assert step["node"] == "node-1"
    assert step["pool"] == "worker"
    assert step["phase"] == "done", step
