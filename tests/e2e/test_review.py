"""Pull requests, audit and rollback end to end: `plan --base/--head`, `build --ref`,
`history` and `rollback` on real Git histories built here, against the real registry
and the real reconcile loop.

Real: a bare repository (the "forge", file://), an admin's clone of it where branches
are made and commands run, `git` itself for every commit, merge and revert, the CNCF
registry. The `infra` pool of the examples needs a Containerfile build and is left
unmanaged (its MachineOSConfig removed): it is still rendered, diffed and classified.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from markdown_it import MarkdownIt
from markdown_it.token import Token

from reconciler.adapters import git
from reconciler.adapters.registry import RegistryClient
from reconciler.cli import cli
from reconciler.core import pins
from reconciler.loop import controller
from tests.fixtures.gitservers import GitServer, GitServers, files_from_dir, run_git
from tests.fixtures.registry import BaseImage, RunningRegistry
from tests.helpers import example_repo

pytestmark = [pytest.mark.registry, pytest.mark.git]

CHRONY = "machineconfigs/50-chrony.yaml"
EXPORTER = "machineconfigs/60-worker-node-exporter.yaml"
WORKER_SSH = "machineconfigs/99-worker-ssh.yaml"
WORKER_KARGS = "machineconfigs/05-worker-kernelargs.yaml"


@dataclass
class Forge:
    """The config repository on a server, an admin's clone, the registry, the loop."""

    server: GitServer
    registry: RunningRegistry
    clone: Path
    root: Path
    clients: list[RegistryClient]

    def reconciler(self, name: str = "r1") -> controller.Reconciler:
        work = self.root / name
        mirror = git.Mirror(self.server.url, work / "mirror", self.server.auth)
        client = self.registry.client()
        self.clients.append(client)
        return controller.Reconciler(mirror, client, work)

    def git(self, *args: str) -> str:
        return run_git(*args, cwd=self.clone)

    def commit(self, files: dict[str, str], message: str) -> str:
        """Commit in the clone on the current branch (as the admin)."""
        for name, text in files.items():
            (self.clone / name).write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def read(self, path: str) -> str:
        return (self.clone / path).read_text()

    def pull(self) -> None:
        self.git("pull", "-q", "--ff-only", "origin", "main")

    def push(self, ref: str = "HEAD") -> None:
        self.git("push", "-q", "origin", f"{ref}:refs/heads/main")

    def pin(self, pool: str) -> pins.Pin:
        return pins.parse_pin(self.server.git("show", f"main:pins/{pool}.yaml"))

    def cli(self, *args: str) -> Result:
        extra = ["--insecure-registry", self.registry.host]
        if args[0] == "history":
            extra = []
        return CliRunner().invoke(cli, [*args, "--repo", str(self.clone), *extra])


@pytest.fixture
def forge(
    git_servers: GitServers, registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> Iterator[Forge]:
    prefix = f"review-{tmp_path.name}"[:60].lower().replace("_", "-")
    seed = example_repo(tmp_path / "seed", registry.host, base_image.ref, prefix=prefix)
    (seed / "machineosconfigs" / "infra.yaml").unlink()  # needs a Containerfile build
    server = git_servers.new_repo("file", files_from_dir(seed))
    clone = tmp_path / "clone"
    run_git("clone", "-q", server.url, clone)
    run_git("config", "user.name", "Admin", cwd=clone)
    run_git("config", "user.email", "admin@example.test", cwd=clone)
    f = Forge(server, registry, clone, tmp_path, [])
    yield f
    for client in f.clients:
        client.close()


def swap_chrony_server(text: str, server: str) -> str:
    def swap(m: re.Match[str]) -> str:
        data = base64.b64decode(m.group(1)).decode().replace("ntp1.example.internal", server)
        return "source: data:;base64," + base64.b64encode(data.encode()).decode()

    return re.sub(r"source: data:;base64,([A-Za-z0-9+/=]+)", swap, text)


def plan_json(forge: Forge, base: str, head: str = "HEAD") -> tuple[int, dict]:  # type: ignore[type-arg]
    result = forge.cli("plan", "--base", base, "--head", head, "-o", "json", "--detailed-exitcode")
    assert result.exit_code in (0, 1, 2), result.output
    return result.exit_code, json.loads(result.stdout)


def items(doc: Any) -> Any:
    """The entries of a list document (enveloped as `{"items": [...]}` or bare)."""
    return doc["items"] if isinstance(doc, dict) else doc


def inline_text(token: Token) -> str:
    """What a reader sees of an inline token: text and code spans, without markup."""
    return "".join(c.content for c in token.children or [])


# --- plan -------------------------------------------------------------------------------------


def test_a_shared_machineconfig_change_plans_every_pool_it_reaches_and_no_other(
    forge: Forge,
) -> None:
    forge.reconciler().reconcile_once()
    forge.pull()
    forge.git("checkout", "-q", "-b", "limits")
    # 60-worker-node-exporter is selected by worker and by infra (role In [worker, infra])
    forge.commit({EXPORTER: forge.read(EXPORTER).replace("MemoryMax=256M", "MemoryMax=512M")},
                 "node-exporter: more memory")  # fmt: skip
    # an uncommitted edit to master's config: the plan reads commits, not the work tree
    (forge.clone / "machineconfigs" / "99-master-ssh.yaml").write_text("garbage: [")

    code, doc = plan_json(forge, "main")
    assert code == 2  # --detailed-exitcode: changes
    assert doc["changed"] == ["infra", "worker"]
    assert doc["pools"]["master"]["status"] == "unchanged"
    assert doc["problems"] == []
    worker = doc["pools"]["worker"]
    assert [i["name"] for i in worker["items"]] == [
        "/etc/systemd/system/node-exporter.service.d/10-limits.conf"
    ]
    assert "-MemoryMax=256M\n+MemoryMax=512M" in worker["diff"]
    # a changed unit has no node disruption policy in MCO: reboot
    assert worker["disruption"]["reboot"] is True
    assert worker["plan"]["builder"] == "native"
    assert worker["digestAfterMerge"] == worker["plan"]["predictedDigest"]
    assert worker["renderedConfig"] != worker["baseRenderedConfig"]
    assert worker["nodeAction"]["reboot"] is True
    assert worker["sources"] == [{"kind": "MachineConfig", "name": "60-worker-node-exporter",
                                  "file": EXPORTER, "change": "modified"}]  # fmt: skip
    infra = doc["pools"]["infra"]
    assert infra["status"] == "changed"
    assert infra["plan"]["unmanaged"]  # no MachineOSConfig: diffed, no image
    # infra takes the worker config through its role label: the comment says so
    assert infra["sources"][0]["via"] == "worker"
    assert doc["verdict"]["safeToMerge"] is True

    # nothing changed between a commit and itself
    same = forge.cli("plan", "--base", "HEAD", "--detailed-exitcode")
    assert same.exit_code == 0, same.output
    assert "0 of 3 pools change" in same.output


def test_ssh_key_changes_need_no_reboot_and_kernel_arguments_do(forge: Forge) -> None:
    forge.git("checkout", "-q", "-b", "keys")
    forge.commit({WORKER_SSH: forge.read(WORKER_SSH).replace("oncall@", "pager@")},
                 "worker: rotate the on-call key")  # fmt: skip
    _, keys = plan_json(forge, "main")
    assert keys["changed"] == ["infra", "worker"]
    disruption = keys["pools"]["worker"]["disruption"]
    assert (disruption["reboot"], disruption["summary"]) == (False, "none")
    assert "sshkey policy" in disruption["reasons"][0]
    assert "+ssh-ed25519" in keys["pools"]["worker"]["diff"]
    # core's keys are applied live by our agent: no reboot in the verdict either
    assert keys["pools"]["worker"]["nodeAction"] == {
        "reboot": False,
        "summary": "no reboot",
        "live": ["SSH keys"],
    }
    assert keys["verdict"]["reboot"] == []

    forge.git("checkout", "-q", "-b", "kargs", "main")
    forge.commit({WORKER_KARGS: forge.read(WORKER_KARGS).replace("audit=1", "audit=0")},
                 "worker: audit off")  # fmt: skip
    _, kargs = plan_json(forge, "main")
    disruption = kargs["pools"]["worker"]["disruption"]
    assert disruption["reboot"] is True
    assert disruption["reasons"] == ["spec.kernelArguments: reboot (kernel arguments changed)"]
    assert "-audit=1\n+audit=0" in kargs["pools"]["worker"]["diff"]
    # the text output says the same, and what our agent really does
    text = forge.cli("plan", "--base", "main")
    assert text.exit_code == 0, text.output
    assert text.output.startswith("safe to merge: reboots infra (25% of nodes at a time), "
                                  "worker (2 nodes at a time)")  # fmt: skip
    assert (
        "worker: changed, nodes: reboot, 2 nodes at a time, MCO policy: reboot, build: native"
        in (text.output)
    )
    assert "bootc switch" in text.output


def test_invalid_files_are_reported_per_file_and_fail_the_plan(forge: Forge) -> None:
    forge.git("checkout", "-q", "-b", "broken")
    bad = forge.read(WORKER_SSH).replace("name: core", "name: admin")
    forge.commit({WORKER_SSH: bad, "machineconfigs/77-oops.yaml": "kind: [\n"}, "broken")
    code, doc = plan_json(forge, "main")
    assert code == 1
    files = {p["file"] for p in doc["problems"]}
    assert {"machineconfigs/77-oops.yaml", WORKER_SSH} <= files
    markdown = forge.cli("plan", "--base", "main", "-o", "markdown")
    assert markdown.exit_code == 1
    assert markdown.stdout.startswith("**⛔ Do not merge:**")
    assert f"**`{WORKER_SSH}`**" in markdown.stdout
    assert "**`machineconfigs/77-oops.yaml`**" in markdown.stdout


def test_the_predicted_digest_is_what_the_merge_pins_and_a_pr_build_is_not_rebuilt(
    forge: Forge,
) -> None:
    r = forge.reconciler()
    r.reconcile_once()
    forge.pull()
    forge.git("checkout", "-q", "-b", "chrony")
    forge.commit({CHRONY: swap_chrony_server(forge.read(CHRONY), "ntp9.example.internal")},
                 "chrony: ntp9")  # fmt: skip
    _, before = plan_json(forge, "main")
    predicted = {p: before["pools"][p]["plan"]["predictedDigest"] for p in ("master", "worker")}
    assert all(before["pools"][p]["existingDigest"] is None for p in predicted)

    # build the pull request's head ahead of the merge
    built = forge.cli("build", "--ref", "chrony")
    assert built.exit_code == 0, built.output
    images = built.stdout.split()
    assert [i.rsplit("@", 1)[1] for i in images] == [predicted["master"], predicted["worker"]]
    _, after = plan_json(forge, "main")
    assert after["pools"]["worker"]["existingDigest"] == predicted["worker"]
    markdown = forge.cli("plan", "--base", "main", "-o", "markdown").stdout
    assert "already in the registry: pinned without a build" in markdown

    # merge (fast-forward main to the branch), then one reconcile pass
    forge.push("chrony")
    uploaded = r.registry.bytes_uploaded
    report = r.reconcile_once()
    assert report.changed == ["master", "worker"]
    for pool in ("master", "worker"):
        pin = forge.pin(pool)
        assert pin.spec.digest == predicted[pool]
        assert pin.spec.build.builder == "reused"
        assert forge.registry.skopeo_digest(pin.spec.image) == predicted[pool]
    assert r.registry.bytes_uploaded == uploaded  # found by identity: nothing rebuilt


def test_markdown_renders_a_summary_a_section_per_changed_pool_and_diff_blocks(
    forge: Forge,
) -> None:
    forge.git("checkout", "-q", "-b", "big")
    # a long file (collapsed) for worker, and a short change shared by worker and infra
    motd = "\n".join(f"line {i} with ``` fences" for i in range(60))
    extra = (
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\n"
        "metadata:\n  name: 70-worker-motd\n  labels:\n"
        "    machineconfiguration.openshift.io/role: worker\n"
        "spec:\n  config:\n    ignition: {version: 3.2.0}\n    storage:\n      files:\n"
        "        - path: /etc/motd\n          contents:\n"
        f"            source: data:;base64,{base64.b64encode(motd.encode()).decode()}\n"
    )
    forge.commit({"machineconfigs/70-worker-motd.yaml": extra,
                  WORKER_SSH: forge.read(WORKER_SSH).replace("oncall@", "pager@")},
                 "worker: motd and a key")  # fmt: skip
    result = forge.cli("plan", "--base", "main", "-o", "markdown", "--detailed-exitcode")
    assert result.exit_code == 2, result.output
    text = result.stdout
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    headings = [(t.tag, inline_text(tokens[i + 1])) for i, t in enumerate(tokens)
                if t.type == "heading_open"]  # fmt: skip
    # the verdict is the first line, then the table, then the details
    assert tokens[0].type == "paragraph_open"
    assert inline_text(tokens[1]).startswith("✅ Safe to merge: reboots infra")
    assert [h for h in headings if h[0] == "h3"] == [
        ("h3", "Pool infra: changed"),
        ("h3", "Pool worker: changed"),
        ("h3", "Unchanged pools"),
    ]
    # the summary table: a header and one row per pool
    end = next(i for i, t in enumerate(tokens) if t.type == "table_close")
    rows = [t for t in tokens[:end] if t.type == "tr_open"]
    assert len(rows) == 1 + 3
    cells = [inline_text(tokens[i + 1]) for i, t in enumerate(tokens[:end]) if t.type == "td_open"]
    assert cells[0:5] == [
        "infra",
        "reboot, 25% of nodes at a time",
        "1 file (1 added), SSH keys",
        f"machineconfigs/70-worker-motd.yaml (added, via role worker), {WORKER_SSH} "
        "(modified, via role worker)",
        "unmanaged (no MachineOSConfig)",
    ]
    assert cells[6:9] == ["worker", "reboot, 2 nodes at a time", "1 file (1 added), SSH keys"]
    assert cells[11].startswith("sha256:")
    assert cells[11].endswith("(predicted)")
    assert cells[12:15] == ["master", "no change", "unchanged"]
    # diff blocks: one per changed pool, fenced as diff, the fence longer than any ``` inside
    # the same diff for both pools is printed once (infra's), and worker's refers to it
    fences = [t for t in tokens if t.type == "fence"]
    assert [f.info for f in fences] == ["diff"]
    assert fences[0].markup == "````"
    shared = fences[0].content
    assert "+++ /etc/motd" in shared
    assert "+line 59 with ``` fences" in shared
    assert "Same diff as pool `infra` above." in text
    # long diffs are collapsed in <details>, with what changed said outside the fold
    html = [t.content for t in tokens if t.type == "html_block"]
    assert any(h.startswith("<details>") and "<summary>Rendered config diff" in h for h in html)
    assert "- **Changes:** `/etc/motd` added, `passwd.users[core].sshAuthorizedKeys` changed" in (
        text
    )
    # GitHub's limit: a comment never exceeds 65,536 characters
    assert len(text) < 65_536


# --- history -----------------------------------------------------------------------------------


def test_history_after_a_change_a_revert_and_a_hold(forge: Forge) -> None:
    r = forge.reconciler()
    r.reconcile_once()  # 1. first pins: built
    forge.pull()
    change = forge.commit({CHRONY: swap_chrony_server(forge.read(CHRONY), "ntp2.example.internal")},
                          "chrony: ntp2")  # fmt: skip
    forge.push()
    second_pin_commit = r.reconcile_once().commit  # 2. a config change: built
    forge.pull()
    forge.git("revert", "--no-edit", change)
    forge.push()
    third_pin_commit = r.reconcile_once().commit  # 3. the config revert: the earlier image
    forge.pull()
    assert third_pin_commit == forge.git("rev-parse", "HEAD").strip()
    forge.git("revert", "--no-edit", third_pin_commit)  # 4. an admin reverts that pin commit
    forge.push()
    report = r.reconcile_once()
    assert report.pools["worker"].state == "held"  # what the loop does, for comparison

    result = forge.cli("history", "--pool", "worker", "-o", "json")
    assert result.exit_code == 0, result.output
    entries = items(json.loads(result.stdout))
    assert [e["kind"] for e in entries] == ["build", "build", "revert", "hold"]
    first, second, back, held = entries
    assert back["digest"] == first["digest"]
    assert back["builder"] == "reused"
    assert held["digest"] == second["digest"]  # the pin revert restored the pin before it
    assert held["commit"]["author"] == "Admin <admin@example.test>"
    assert held["commit"]["subject"].startswith('Revert "pin ')
    assert second["source"]["sha"] == change
    assert second["source"]["subject"] == "chrony: ntp2"
    assert second["source"]["author"] == "Admin <admin@example.test>"
    assert second["commit"]["sha"] == second_pin_commit
    assert back["commit"]["sha"] == third_pin_commit
    assert all(e["time"] and e["inputsDigest"].startswith("sha256:") for e in entries)
    # the loop's classification of its own commits agrees (a revert reuses, never builds)
    assert [e["builder"] for e in entries[:3]] == ["native", "native", "reused"]

    text = forge.cli("history", "--pool", "worker").stdout
    assert "revert " in text
    assert "hold " in text
    assert "from config" in text
    assert "chrony: ntp2" in text
    # every pool, when no --pool is given
    everything = items(json.loads(forge.cli("history", "-o", "json").stdout))
    assert {e["pool"] for e in everything} == {"master", "worker"}


# --- rollback ----------------------------------------------------------------------------------


def test_rollback_then_a_pass_returns_the_pool_to_the_earlier_digest_without_a_build(
    forge: Forge,
) -> None:
    r = forge.reconciler()
    r.reconcile_once()
    first = forge.pin("worker")
    forge.pull()
    forge.commit({CHRONY: swap_chrony_server(forge.read(CHRONY), "ntp3.example.internal")},
                 "chrony: ntp3")  # fmt: skip
    forge.commit({WORKER_KARGS: forge.read(WORKER_KARGS).replace("audit=1", "audit=0")},
                 "worker: audit off")  # fmt: skip
    forge.push()
    r.reconcile_once()
    assert forge.pin("worker").spec.digest != first.spec.digest
    forge.pull()

    result = forge.cli("rollback", "--pool", "worker", "--to", first.spec.digest[:19])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "reverted 2 config commits" in out
    assert f"worker: pins {first.spec.digest} (image exists: no build)" in out
    subjects = forge.git("log", "--format=%s", "-2").splitlines()
    assert subjects == ['Revert "chrony: ntp3"', 'Revert "worker: audit off"']
    assert forge.git("status", "--porcelain") == ""  # the checkout moved, nothing left over

    forge.push()
    uploaded = r.registry.bytes_uploaded
    report = r.reconcile_once()
    assert "worker" in report.changed
    back = forge.pin("worker")
    assert back.spec.digest == first.spec.digest
    assert back.spec.build.builder == "reused"
    assert r.registry.bytes_uploaded == uploaded


def test_rollback_hold_on_a_branch_pins_the_earlier_image_and_the_loop_holds_it(
    forge: Forge,
) -> None:
    r = forge.reconciler()
    r.reconcile_once()
    first = forge.pin("master")
    forge.pull()
    forge.commit({CHRONY: swap_chrony_server(forge.read(CHRONY), "ntp4.example.internal")},
                 "chrony: ntp4")  # fmt: skip
    forge.push()
    r.reconcile_once()
    forge.pull()
    head = forge.git("rev-parse", "HEAD").strip()

    result = forge.cli("rollback", "--pool", "master", "--to", first.spec.digest,
                       "--hold", "--branch", "rollback-master")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "committed a hold of master" in result.stdout
    assert f"master: held at {first.spec.digest}" in result.stdout
    # the current branch did not move; the branch is one commit ahead, touching the pin
    assert forge.git("rev-parse", "HEAD").strip() == head
    assert forge.git("rev-parse", "rollback-master~1").strip() == head
    changed = forge.git("show", "--name-only", "--format=", "rollback-master").split()
    assert changed == ["pins/master.yaml"]

    forge.push("rollback-master")  # the pull request is merged
    report = r.reconcile_once()
    assert report.pools["master"].state == "held"
    assert forge.pin("master").spec.digest == first.spec.digest
    forge.pull()
    history = items(json.loads(forge.cli("history", "--pool", "master", "-o", "json").stdout))
    assert [e["kind"] for e in history] == ["build", "build", "hold"]
    assert history[-1]["commit"]["subject"].startswith("Hold master at ")
    # the branch exists now: a second rollback onto it is refused, naming the fix
    again = forge.cli("rollback", "--pool", "master", "--to", first.spec.digest,
                      "--hold", "--branch", "rollback-master")  # fmt: skip
    assert again.exit_code == 1
    assert "already" in again.output


def test_rollback_to_an_unknown_digest_names_the_known_ones(forge: Forge) -> None:
    forge.reconciler().reconcile_once()
    forge.pull()
    result = forge.cli("rollback", "--pool", "worker", "--to", "sha256:" + "f" * 64)
    assert result.exit_code == 1
    assert "never pinned" in result.output
    assert forge.pin("worker").spec.digest[:19] in result.output


def test_a_new_pool_and_a_pool_fixed_by_the_change_are_planned_against_nothing(
    forge: Forge,
) -> None:
    # main has a broken worker config; the pull request fixes it and adds a pool
    forge.commit({"machineconfigs/80-worker-bad.yaml": forge.read(WORKER_SSH)
                  .replace("99-worker-ssh", "80-worker-bad").replace("name: core", "name: x")},
                 "worker: a broken config")  # fmt: skip
    forge.git("checkout", "-q", "-b", "fix")
    forge.git("rm", "-q", "machineconfigs/80-worker-bad.yaml")
    edge = forge.read("machineconfigpools/worker.yaml").replace("name: worker", "name: edge")
    mosc = forge.read("machineosconfigs/worker.yaml").replace("worker", "edge")
    forge.commit({"machineconfigpools/edge.yaml": edge, "machineosconfigs/edge.yaml": mosc},
                 "fix worker, add an edge pool")  # fmt: skip
    code, doc = plan_json(forge, "main")
    assert code == 2, doc
    assert doc["changed"] == ["edge", "infra", "worker"]
    assert doc["pools"]["edge"]["status"] == "added"
    assert doc["pools"]["edge"]["plan"]["builder"] == "native"
    worker = doc["pools"]["worker"]
    assert "80-worker-bad" in worker["baseError"]
    assert "+++ /etc/chrony.conf" in worker["diff"]  # everything is new against nothing
    text = forge.cli("plan", "--base", "main").stdout
    assert "did not render (shown against nothing)" in text


def test_a_revert_that_conflicts_is_undone_and_explained(forge: Forge) -> None:
    r = forge.reconciler()
    r.reconcile_once()
    first = forge.pin("worker")
    forge.pull()
    forge.commit({WORKER_KARGS: forge.read(WORKER_KARGS).replace("audit=1", "audit=0")},
                 "worker: audit off")  # fmt: skip
    # a later commit edits the next line without changing what worker renders
    forge.commit({WORKER_KARGS: forge.read(WORKER_KARGS).replace(
        "    - audit=0\n", "    - audit=0\n    # audit off: too noisy\n")}, "a comment")  # fmt: skip
    forge.push()
    r.reconcile_once()
    forge.pull()
    head = forge.git("rev-parse", "HEAD").strip()
    result = forge.cli("rollback", "--pool", "worker", "--to", first.spec.digest)
    assert result.exit_code == 1
    assert f"conflicts in {WORKER_KARGS}" in result.output
    assert "--hold" in result.output  # the other way back
    # nothing half-done: the branch, the checkout and the worktree list are as before
    assert forge.git("rev-parse", "HEAD").strip() == head
    assert forge.git("status", "--porcelain") == ""
    assert len(forge.git("worktree", "list").splitlines()) == 1


def test_revisions_missing_from_a_shallow_clone_say_how_to_fetch_them(
    forge: Forge, tmp_path: Path
) -> None:
    forge.commit({WORKER_SSH: forge.read(WORKER_SSH).replace("oncall@", "pager@")}, "keys")
    forge.push()
    shallow = tmp_path / "shallow"
    run_git("clone", "-q", "--depth=1", forge.server.url, shallow)
    result = CliRunner().invoke(cli, ["plan", "--repo", str(shallow), "--base", "HEAD~1",
                                      "--insecure-registry", forge.registry.host])  # fmt: skip
    assert result.exit_code == 1
    assert "no commit 'HEAD~1'" in result.output
    assert "fetch-depth: 0" in result.output
    # history stops at the shallow boundary instead of failing
    history = CliRunner().invoke(cli, ["history", "--repo", str(shallow)])
    assert history.exit_code == 0, history.output


def test_rollback_needs_a_branch_to_commit_to(forge: Forge) -> None:
    forge.reconciler().reconcile_once()
    forge.pull()
    forge.commit({CHRONY: swap_chrony_server(forge.read(CHRONY), "ntp5.example.internal")},
                 "chrony: ntp5")  # fmt: skip
    first = forge.pin("worker").spec.digest
    forge.git("checkout", "-q", "--detach")
    result = forge.cli("rollback", "--pool", "worker", "--to", first)
    assert result.exit_code == 1
    assert "detached HEAD" in result.output
    assert "--branch" in result.output


def test_the_loop_logs_one_line_per_event_with_short_digests(
    forge: Forge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="reconciler.controller")
    forge.reconciler().reconcile_once()
    lines = [r.getMessage() for r in caplog.records if r.name == "reconciler.controller"]
    assert lines, "the first pass builds and pins: there is something to say"
    assert not [line for line in lines if re.search(r"[0-9a-f]{64}", line)]
    assert len(lines) == len(set(lines))  # no line said twice
    assert any(re.fullmatch(r"pin commit [0-9a-f]{10} pushed to Git \(.*worker.*\)", x)
               for x in lines)  # fmt: skip
    assert any(re.fullmatch(r"pool worker: pinned sha256:[0-9a-f]{12} \(native\)", x)
               for x in lines), lines  # fmt: skip
