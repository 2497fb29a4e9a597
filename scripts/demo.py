"""The main job on the embedded default: `examples/` reconciled into pinned images.

What it sets up, all on 127.0.0.1 and under `demo/` (removed and made anew each run):
- a real registry (Debian's `docker-registry`) on a free port;
- a base bootc image pushed to it: busybox-static, usr-merged, bootc labels, a dummy
  kernel, and **shims** of `dnf`, `rpm` and `bootc container lint` that install from a
  small package server on 127.0.0.1 (there is no Fedora package source here; the same
  base the tests use, `tests/fixtures/buildbase.py`, says exactly what the shims do);
- a bare Git repository made from `examples/`, with the MachineOSConfigs pointing at the
  local registry and base image instead of quay.io and registry.example.com.

Then the reconciler runs as an admin would run it: `run --once` pins master and worker
(built natively) at once while infra builds with buildah in the background (its
realtime kernel and sysstat extension), and pins infra in a second commit when its
build is done; an admin commits a config change, the next `run --once` moves only the
pools it reaches, and a third finds nothing to do. Run as `scripts/demo`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures import buildbase  # noqa: E402
from tests.fixtures import registry as registry_fixture  # noqa: E402

DEMO = Path(os.environ.get("RECONCILER_DEMO_DIR") or ROOT / "demo")
EXAMPLE_BASE = "quay.io/fedora/fedora-bootc:42"


def sh(*args: str | Path, cwd: Path | None = None) -> str:
    out = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


def step(title: str) -> None:
    # bold on a terminal only, as the reconciler's own output (NO_COLOR turns it off)
    bold = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    print(f"\n\033[1m== {title}\033[0m" if bold else f"\n== {title}", flush=True)


def reconciler(*args: str) -> int:
    """Run the real command, output shown as is."""
    print(f"$ reconciler {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "reconciler", *args], check=False).returncode


def make_config_repo(registry_host: str, base_ref: str) -> Path:
    seed = DEMO / "seed"
    shutil.copytree(ROOT / "examples", seed)
    for path in seed.rglob("*.yaml"):
        text = path.read_text()
        new = text.replace("registry.example.com/fleet/", f"{registry_host}/fleet/")
        new = new.replace(EXAMPLE_BASE, base_ref)
        if new != text:
            path.write_text(new)
    bare = DEMO / "config.git"
    sh("git", "init", "-q", "--bare", "-b", "main", bare)
    admin = DEMO / "admin"
    shutil.copytree(seed, admin)
    sh("git", "init", "-q", "-b", "main", cwd=admin)
    sh("git", "add", "-A", cwd=admin)
    commit(admin, "Fleet config from examples/")
    sh("git", "push", "-q", bare, "main", cwd=admin)
    return bare


def commit(work: Path, message: str) -> None:
    sh("git", "-c", "user.name=Admin", "-c", "user.email=admin@example.com",
       "-c", "commit.gpgSign=false", "commit", "-q", "-m", message, cwd=work)  # fmt: skip


def admin_change(bare: Path) -> None:
    admin = DEMO / "admin"
    sh("git", "pull", "-q", "--rebase", bare, "main", cwd=admin)
    kargs = admin / "machineconfigs" / "05-worker-kernelargs.yaml"
    kargs.write_text(
        kargs.read_text().replace("audit_backlog_limit=8192", "audit_backlog_limit=16384")
    )
    sh("git", "add", "-A", cwd=admin)
    commit(admin, "worker: raise audit_backlog_limit")
    sh("git", "push", "-q", bare, "main", cwd=admin)
    print(sh("git", "log", "-1", "--stat", "--format=%h %s", cwd=admin).rstrip())


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    (DEMO / "registry").mkdir(parents=True)
    step("a local registry, a base image, a Git repository made from examples/")
    proc, host, log = registry_fixture.start_registry("demo", DEMO / "registry")
    (DEMO / "auth.json").write_text('{"auths": {}}')
    registry = registry_fixture.RunningRegistry(
        "demo", host, "http", DEMO / "registry", DEMO / "auth.json", proc, log
    )
    packages = buildbase.PackageRepo(DEMO / "packages")
    try:
        with registry.client() as client:
            base = buildbase.push_base(
                client, f"{host}/bootc/base", buildbase.build_image(packages.url), packages
            )
        print(f"registry   http://{host}")
        print(f"base image {base.ref} ({base.digest[:19]}…; dnf/rpm/bootc are shims)")
        bare = make_config_repo(host, base.ref)
        print(f"config     {bare} (from examples/)")
        common = ["--repo", str(bare), "--work-dir", str(DEMO / "work"),
                  "--insecure-registry", host]  # fmt: skip

        step(
            "first run: master and worker pinned at once; infra (buildah, in the background) "
            "pinned by the pass after its build"
        )
        if reconciler("run", "--once", *common) != 0:
            return 1
        print(sh("git", f"--git-dir={bare}", "log", "-2", "--stat", "main").rstrip())
        print("\npins/worker.yaml:")
        print(sh("git", f"--git-dir={bare}", "show", "main:pins/worker.yaml").rstrip())

        step("an admin changes a worker kernel argument")
        admin_change(bare)
        step("second run: worker and infra (which takes worker configs) move; master does not")
        if reconciler("run", "--once", *common) != 0:
            return 1
        print(sh("git", f"--git-dir={bare}", "log", "-2", "--format=%B", "main").rstrip())

        step("third run: nothing changed, no commit")
        reconciler("run", "--once", *common)
        step("status")
        reconciler("status", "--repo", str(bare), "--work-dir", str(DEMO / "work"))
        history = sh("git", f"--git-dir={bare}", "log", "--format=%h %an: %s", "main")
        step("git log (the audit trail)")
        print(re.sub(r"^", "  ", history.rstrip(), flags=re.M))
        return 0
    finally:
        packages.stop()
        registry.stop()


if __name__ == "__main__":
    raise SystemExit(main())
