"""An idle `reconciler agent --once` (reconciler/agent/idle.py) against a real Git
repository and the bootc stand-in: it ends as the full step would (the same line,
document, exit code and state file) without loading the step, and every change the
full step would act on makes it a full step again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.bootc import FakeHost, pin_of_commit, pin_text
from tests.fixtures.edgepool import KARGS, POOL, REPO, A, B, booted_on_a
from tests.fixtures.gitservers import GitServer
from tests.fixtures.kubeapi import FakeKube, node

pytestmark = pytest.mark.git

IDLE = "the same facts as the last step"
"""What `--debug` logs when a step ends from the idle record."""


@pytest.fixture
def host(bootc_host: FakeHost) -> FakeHost:
    return booted_on_a(bootc_host)


def publish(server: GitServer, digest: str, audit: int = 1) -> str:
    """Config, then the pin the reconciler would make of it (two commits); the head."""
    config = {"machineconfigpools/edge.yaml": POOL,
              "machineconfigs/05-edge-kernelargs.yaml": KARGS.format(audit=audit)}  # fmt: skip
    source = server.commit_files(config, "config")
    pin = pin_of_commit("edge", f"{REPO}@{digest}", config, source)
    return server.commit_files({"pins/edge.yaml": pin}, f"pin edge to {digest[:12]}")


def agent(
    host: FakeHost,
    server: GitServer,
    tmp_path: Path,
    *extra: str,
    code: str | None = None,
    pool: tuple[str, ...] = ("--pool", "edge"),
) -> subprocess.CompletedProcess[str]:
    """`reconciler --debug agent --once --pool edge ...`; `code`: Python run after it in
    the same process (e.g. to print what it imported)."""
    argv = [
        "--debug", "agent", "--once", *pool,
        "--repo", server.url,
        "--bootc", str(host.bootc),
        "--systemctl", str(host.systemctl),
        "--state-dir", str(tmp_path / "state"),
        "--reboot-command", " ".join(host.reboot_command),
        "--boot-id-file", str(host.boot_id_file),
        "--host-root", str(tmp_path / "root"),
        *extra,
    ]  # fmt: skip
    if server.token:
        token = tmp_path / "token"
        token.write_text(f"{server.token}\n")
        argv += ["--git-token-file", str(token)]
    program = (
        "import sys\nfrom reconciler.cli import main\n"
        f"sys.argv = ['reconciler', *{argv!r}]\n"
        f"try:\n    main()\nfinally:\n    {code or 'pass'}\n"
    )
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def record(tmp_path: Path) -> Path:
    return tmp_path / "state" / "idle.json"


def state_file(tmp_path: Path) -> bytes:
    return (tmp_path / "state" / "state.json").read_bytes()


def settle(host: FakeHost, server: GitServer, tmp_path: Path, *extra: str) -> str:
    """Steps until one changed nothing and recorded it; that step's output."""
    for _ in range(3):
        step = agent(host, server, tmp_path, *extra)
        assert step.returncode in (0, 1), step.stderr
        if record(tmp_path).exists():
            assert IDLE not in step.stderr
            return step.stdout
    raise AssertionError(f"no step settled: {step.stdout}{step.stderr}")


def idle_step(host: FakeHost, server: GitServer, tmp_path: Path, *extra: str) -> str:
    before, calls = state_file(tmp_path), len(host.calls())
    step = agent(host, server, tmp_path, *extra)
    assert step.returncode == 0, step.stderr
    assert IDLE in step.stderr, step.stderr
    assert state_file(tmp_path) == before
    assert host.calls()[calls:] == [["status", "--format=json", "--format-version=1"]]
    return step.stdout


def full_step(
    host: FakeHost, server: GitServer, tmp_path: Path, *extra: str, **how: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    step = agent(host, server, tmp_path, *extra, **how)
    assert IDLE not in step.stderr, step.stderr
    return step


# -- the same outcome --


def test_an_idle_step_prints_and_keeps_what_the_full_step_does(
    host: FakeHost, git_http: GitServer, tmp_path: Path
) -> None:
    head = publish(git_http, A)
    full = settle(host, git_http, tmp_path)
    assert full == f"edge: done: booted {A} as pinned at {head[:12]}\n"
    assert idle_step(host, git_http, tmp_path) == full  # with the token, over smart HTTP
    assert idle_step(host, git_http, tmp_path) == full

    # -o json: the same document from the full step (no record) and the idle one
    record(tmp_path).unlink()
    full_json = full_step(host, git_http, tmp_path, "-o", "json")
    assert full_json.returncode == 0, full_json.stderr
    assert record(tmp_path).exists()
    assert idle_step(host, git_http, tmp_path, "-o", "json") == full_json.stdout
    doc = json.loads(full_json.stdout)
    assert (doc["kind"], doc["phase"], doc["image"]) == ("AgentStep", "done", f"{REPO}@{A}")
    assert git_http.token not in record(tmp_path).read_text()


def test_the_idle_step_imports_neither_pydantic_nor_the_loader(
    host: FakeHost, git_bare: GitServer, tmp_path: Path
) -> None:
    publish(git_bare, A)
    settle(host, git_bare, tmp_path)
    show = "print(' '.join(sorted(sys.modules)), file=sys.stderr)"
    step = agent(host, git_bare, tmp_path, code=show)
    assert step.returncode == 0, step.stderr
    assert IDLE in step.stderr
    modules = set(step.stderr.splitlines()[-1].split())
    assert "reconciler.agent.idle" in modules
    heavy = ("pydantic", "reconciler.core.model", "reconciler.core.load",
             "reconciler.core.pins", "reconciler.adapters.bootc", "reconciler.adapters.git.mirror",
             "reconciler.agent.agent", "reconciler.agent.source", "kubernetes", "httpx")  # fmt: skip
    assert not {m for m in modules for h in heavy if m == h or m.startswith(f"{h}.")}


def test_a_rolled_back_host_is_idle_too(host: FakeHost, git_bare: GitServer, tmp_path) -> None:
    publish(git_bare, A)
    settle(host, git_bare, tmp_path)
    publish(git_bare, B)
    host.inject(boot={B: "fallback"})  # the bootloader falls back to A
    assert agent(host, git_bare, tmp_path).stdout.startswith(f"edge: rebooting: rebooting into {B}")
    host.reboot()
    rolled_back = settle(host, git_bare, tmp_path)
    assert rolled_back.startswith("edge: rolled-back: ")
    assert idle_step(host, git_bare, tmp_path) == rolled_back


# -- what makes a step a full one --


def test_a_new_pin_is_applied(host: FakeHost, git_bare: GitServer, tmp_path: Path) -> None:
    publish(git_bare, A)
    settle(host, git_bare, tmp_path)
    publish(git_bare, B)
    step = full_step(host, git_bare, tmp_path)
    assert step.stdout.startswith(f"edge: rebooting: rebooting into {B}"), step.stderr
    assert ["switch", "--quiet", "--", f"{REPO}@{B}"] in host.calls()
    assert not record(tmp_path).exists()  # an update in flight is never idle


def test_any_new_commit_is_a_full_step(host: FakeHost, git_bare: GitServer, tmp_path) -> None:
    publish(git_bare, A)
    done = settle(host, git_bare, tmp_path)
    git_bare.commit_files({"README.md": "fleet\n"}, "not a config change")
    # the first step moves the state to the new head; the next changes nothing
    assert full_step(host, git_bare, tmp_path).stdout == done
    assert not record(tmp_path).exists()
    assert settle(host, git_bare, tmp_path) == done
    assert idle_step(host, git_bare, tmp_path) == done


def test_a_deployment_staged_by_hand_is_cancelled(host, git_bare: GitServer, tmp_path) -> None:
    publish(git_bare, A)
    settle(host, git_bare, tmp_path)
    assert host.run("switch", "--quiet", "--", f"{REPO}@{B}").returncode == 0
    assert host.status()["status"]["staged"] is not None
    full_step(host, git_bare, tmp_path)
    # switched back to the booted pin: a reboot would not leave it
    assert ["switch", "--quiet", "--", f"{REPO}@{A}"] in host.calls()
    staged = host.status()["status"]["staged"]
    assert staged is None or staged["image"]["imageDigest"] == A


def test_a_reboot_is_a_full_step(host: FakeHost, git_bare: GitServer, tmp_path: Path) -> None:
    publish(git_bare, A)
    done = settle(host, git_bare, tmp_path)
    boot_id = host.boot_id_file.read_text()
    host.reboot()
    assert host.boot_id_file.read_text() != boot_id
    assert full_step(host, git_bare, tmp_path).stdout == done
    assert idle_step(host, git_bare, tmp_path) == done


def test_a_pending_health_check_is_run_again(host, git_bare: GitServer, tmp_path) -> None:
    flag = tmp_path / "healthy"
    check = ("--health-check", f"test -e {flag}")
    publish(git_bare, A)
    settle(host, git_bare, tmp_path, *check)
    publish(git_bare, B)
    assert agent(host, git_bare, tmp_path, *check).stdout.startswith("edge: rebooting")
    host.reboot()
    for _ in range(2):  # nothing changed between these two, but the check is due
        step = full_step(host, git_bare, tmp_path, *check)
        assert step.stdout.startswith("edge: verifying: waiting: health check"), step.stdout
        assert not record(tmp_path).exists()
    flag.touch()
    assert full_step(host, git_bare, tmp_path, *check).stdout.startswith(
        f"edge: done: booted {B}; health checks passed"
    )


def test_a_degraded_host_retries(host: FakeHost, git_bare: GitServer, tmp_path: Path) -> None:
    publish(git_bare, A)
    settle(host, git_bare, tmp_path)
    publish(git_bare, B)
    host.inject(switch={"error": "enospc"})
    for _ in range(2):
        step = full_step(host, git_bare, tmp_path)
        assert step.returncode == 1
        assert step.stdout.startswith(f"edge: degraded: bootc switch to {REPO}@{B} failed")
        assert not record(tmp_path).exists()
    host.inject()  # the registry is back: the same facts, and the retry goes through
    assert full_step(host, git_bare, tmp_path).stdout.startswith("edge: rebooting")


@pytest.mark.parametrize(
    "flag",
    [("--soft-reboot", "auto"), ("--health-check", "true"), ("--no-live-settings",),
     ("--enforce-container-sigpolicy",), ("--node", "edge-7")],
    ids=lambda flag: flag[0],
)  # fmt: skip
def test_a_changed_flag_is_a_full_step(
    host: FakeHost, git_bare: GitServer, tmp_path: Path, flag: tuple[str, ...]
) -> None:
    publish(git_bare, A)
    settle(host, git_bare, tmp_path)
    full_step(host, git_bare, tmp_path, *flag)


def test_signers_or_a_signature_policy_on_the_host_make_a_full_step(
    host: FakeHost, git_bare: GitServer, tmp_path: Path
) -> None:
    publish(git_bare, A)
    done = settle(host, git_bare, tmp_path)
    policy = tmp_path / "root/etc/containers/policy.json"
    policy.parent.mkdir(parents=True)
    policy.write_text(
        json.dumps(
            {
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {
                        REPO: [{"type": "sigstoreSigned", "keyPath": "/etc/pki/containers/k.pub"}]
                    }
                },
            }
        )
    )
    assert full_step(host, git_bare, tmp_path).stdout == done  # nothing to switch: no flag
    assert idle_step(host, git_bare, tmp_path) == done

    key = tmp_path / "signer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    signers = tmp_path / "root/etc/bootc-reconciler/allowed-signers"
    signers.parent.mkdir(parents=True)
    signers.write_text(f"pins@example.com {key.with_suffix('.pub').read_text()}")
    step = full_step(host, git_bare, tmp_path)  # the image's signers now judge the pin
    assert step.returncode == 1
    assert "refusing the pin of commit" in step.stdout
    assert not record(tmp_path).exists()


def test_a_changed_state_file_is_a_full_step(host, git_bare: GitServer, tmp_path) -> None:
    publish(git_bare, A)
    settle(host, git_bare, tmp_path)
    path = tmp_path / "state/state.json"
    doc = json.loads(path.read_text())
    doc["reason"] = "edited by hand"
    path.write_text(json.dumps(doc))
    assert full_step(host, git_bare, tmp_path).stdout == "edge: done: edited by hand\n"
    record(tmp_path).write_text("{not json")  # a torn record is no record
    assert full_step(host, git_bare, tmp_path).returncode == 0
    assert json.loads(record(tmp_path).read_text())["version"] == 1


def test_unreadable_settings_are_read_again_every_step(host, git_bare, tmp_path) -> None:
    # the pin's sourceCommit names no commit: the kernel arguments stay unknown
    git_bare.commit_files(
        {"machineconfigpools/edge.yaml": POOL, "pins/edge.yaml": pin_text("edge", f"{REPO}@{A}")},
        "pool edge pinned to A",
    )
    for _ in range(3):
        step = full_step(host, git_bare, tmp_path)
        assert step.stdout.startswith(f"edge: done: booted {A}")
        assert "cannot read the config at the pin's sourceCommit" in step.stderr
        assert not record(tmp_path).exists()


def test_without_pool_or_with_coordination_every_step_is_full(
    host: FakeHost, git_bare: GitServer, kubeapi: FakeKube, tmp_path: Path
) -> None:
    publish(git_bare, A)
    settle(host, git_bare, tmp_path)
    record(tmp_path).unlink()
    by_labels = ("--node", "edge-1", "--node-label", "node-role.kubernetes.io/edge=")
    for _ in range(2):  # the pool is found in the repository: the loader is needed
        assert full_step(host, git_bare, tmp_path, pool=by_labels).stdout.startswith("edge: done")
        assert not record(tmp_path).exists()
    # FleetLock's steady-state report is made every step (here it fails: no server)
    for _ in range(2):
        step = full_step(host, git_bare, tmp_path, "--coordination", "fleetlock",
                         "--fleetlock-url", "http://127.0.0.1:9")  # fmt: skip
        assert "could not release a leftover update slot" in step.stderr
        assert not record(tmp_path).exists()
    kubeapi.create("nodes", node("edge-1", {"node-role.kubernetes.io/edge": ""}))
    in_cluster = ("--pool", "edge", "--node", "edge-1", "--coordination", "kubernetes",
                  "--kubeconfig", str(kubeapi.kubeconfig), "--lease-namespace", "fleet")  # fmt: skip
    for _ in range(2):
        assert full_step(host, git_bare, tmp_path, *in_cluster).stdout.startswith("edge: done")
        notes = kubeapi.get("nodes", "edge-1")["metadata"]["annotations"]
        assert notes["gitops.bootc.dev/state"] == "done"
        assert not record(tmp_path).exists()


def test_a_full_step_after_the_check_does_not_run_bootc_status_again(
    host: FakeHost, git_bare: GitServer, tmp_path: Path
) -> None:
    spawned = tmp_path / "bootc.log"
    logged = tmp_path / "bootc-logged"
    logged.write_text(f'#!/bin/sh\necho "$1" >> {spawned}\nexec {host.bootc} "$@"\n')
    logged.chmod(0o755)
    via = ("--bootc", str(logged))
    publish(git_bare, A)
    done = settle(host, git_bare, tmp_path, *via)
    spawned.unlink()
    git_bare.commit_files({"README.md": "fleet\n"}, "not a config change")
    assert full_step(host, git_bare, tmp_path, *via).stdout == done
    assert spawned.read_text().split() == ["status"]  # the check's, used by the step

    settle(host, git_bare, tmp_path, *via)
    spawned.unlink()
    host.inject(status={"hang": True})  # another bootc client holds the sysroot lock
    step = full_step(host, git_bare, tmp_path, *via, "--status-timeout", "2")
    assert step.returncode == 1
    assert step.stdout.startswith("edge: degraded: bootc status: `bootc status")
    assert "did not finish within 2s" in step.stdout
    assert spawned.read_text().split() == ["status"]  # waited for once, not twice
