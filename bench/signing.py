"""What the signed chain costs a pass, with a real registry and real Git.

For one config change (one pool, native build, admin commits pushed to a bare repo),
the pass from "the remote moved" to "the pin commit is on the remote", measured twice
in the same run: plain (no keys, no policy: the baseline), and signed (the admin's
commits SSH-signed, `sourceVerification` in reconciler.yaml, `--commit-signing-key`
and `--image-signing-key`: verification of the commits since the anchor, a signed pin
commit, a cosign signature pushed). Also the idle pass (nothing moved) for both.

    .venv/bin/python bench/signing.py [--changes 10] [--idle 30]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loop import SHARED, Remote, start_base_registry, write_repo
from reconciler.adapters import git
from reconciler.adapters.registry import signatures
from reconciler.loop import controller
from tests.fixtures import registry as reg_fixture
from tests.fixtures.gitservers import run_git

POLICY = """apiVersion: gitops.bootc.dev/v1alpha1
kind: ReconcilerConfig
metadata: {{name: fleet}}
spec:
  sourceVerification:
    allowedSigners: ["admin@example.com {admin}"]
    pinSigners: ["reconciler@gitops.bootc.dev {bot}"]
"""


class SignedRemote(Remote):
    def __init__(self, root: Path, files: dict[str, bytes], admin_key: Path | None) -> None:
        self.admin_key = admin_key
        super().__init__(root, files)

    def push(self, message: str) -> None:
        run_git("add", "-A", cwd=self.work)
        sign = (["-c", "gpg.format=ssh", "-c", f"user.signingKey={self.admin_key}", "-c",
                 "commit.gpgSign=true"] if self.admin_key else [])  # fmt: skip
        who = ["-c", "user.name=Admin", "-c", "user.email=admin@example.com", *sign]
        run_git(*who, "commit", "-q", "-m", message, cwd=self.work)
        if run_git(f"--git-dir={self.bare}", "branch", "--list", "main").strip():
            # on top of the reconciler's pin commit; the rebased commit is signed again
            run_git(*who, "pull", "-q", "--rebase", str(self.bare), "main", cwd=self.work)
        run_git("push", "-q", str(self.bare), "HEAD:refs/heads/main", cwd=self.work)


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def run_case(
    root: Path,
    registry: reg_fixture.RunningRegistry,
    base: str,
    signed: bool,
    changes: int,
    idle_rounds: int,
) -> tuple[list[float], list[float]]:
    where = root / ("signed" if signed else "plain")
    seed = where / "seed"
    files = write_repo(seed, 1, registry.host, base)
    admin_key = bot_key = image_key = None
    if signed:
        (where / "keys").mkdir(parents=True)
        admin_key, bot_key = where / "keys/admin", where / "keys/bot"
        admin_pub, bot_pub = keygen(admin_key), keygen(bot_key)
        image_key = where / "keys/image.key"
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                        "-out", str(image_key)], check=True)  # fmt: skip
        files["reconciler.yaml"] = POLICY.format(admin=admin_pub, bot=bot_pub).encode()
    remote = SignedRemote(where, files, admin_key)
    signing_key = git.SshSigningKey.load(bot_key) if bot_key else None
    mirror = git.Mirror(remote.bare.as_uri(), where / "work/mirror", signing_key=signing_key)
    settings = controller.RunSettings(
        image_signer=signatures.KeySigner.load(image_key) if image_key else None
    )
    r = controller.Reconciler(mirror, registry.client(), where / "work", settings)
    assert r.reconcile_once().changed == ["pool000"]
    motd = remote.work / "machineconfigs/50-worker-motd.yaml"
    passes = []
    for i in range(changes):
        motd.write_text(SHARED.format(text=f"change-{i}"))
        remote.push(f"motd {i}")
        start = time.perf_counter()
        report = r.reconcile_once()
        passes.append(time.perf_counter() - start)
        assert report.changed == ["pool000"], report.pools
    r.reconcile_once(force=True)
    idle = []
    for _ in range(idle_rounds):
        start = time.perf_counter()
        assert r.reconcile_once().skipped
        idle.append(time.perf_counter() - start)
    r.registry.close()
    return passes, idle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--idle", type=int, default=30)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-signing-"))
    registry, base = start_base_registry(root)
    try:
        plain = run_case(root, registry, base, False, args.changes, args.idle)
        signed = run_case(root, registry, base, True, args.changes, args.idle)
    finally:
        registry.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"config change -> pin commit pushed, one pass (1 pool, native; median of "
          f"{args.changes}); idle pass (median of {args.idle})")  # fmt: skip
    print("| pass | plain (baseline) | signed chain | ratio |")
    print("|---|---|---|---|")
    for name, i in (("change", 0), ("idle", 1)):
        a, b = statistics.median(plain[i]), statistics.median(signed[i])
        print(f"| {name} | {a * 1000:.0f} ms | {b * 1000:.0f} ms | {b / a:.2f} |")


if __name__ == "__main__":
    main()
