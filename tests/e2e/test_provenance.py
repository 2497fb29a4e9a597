"""The signed chain, checked with tools other than ours: real `git verify-commit` on
pin commits (gpg.format=ssh, an allowed-signers file), `openssl dgst -verify` on the
cosign-format signature payload and annotation read back from the real registry with
skopeo, and the repository's source policy stalling a pass on an unsigned admin commit.

Keys are generated in each test (ssh-keygen, openssl); nothing here reads our verifier's
answers to decide whether the signatures are sound.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_loop import Fleet, change_chrony, make_fleet
from tests.fixtures.gitservers import GitServers, make_ssh_key, run_git
from tests.fixtures.registry import BaseImage, RunningRegistry

pytestmark = [pytest.mark.registry, pytest.mark.git]


@pytest.fixture
def fleet(
    git_servers: GitServers, registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> Fleet:
    return make_fleet(git_servers, "file", registry, base_image, tmp_path)


def ec_key(path: Path) -> Path:
    """An ECDSA P-256 private key in PEM (mode 0600) and its public key at `.pub.pem`."""
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", str(path)], check=True, capture_output=True)  # fmt: skip
    path.chmod(0o600)
    subprocess.run(["openssl", "ec", "-in", str(path), "-pubout", "-out",
                    str(path.with_suffix(".pub.pem"))], check=True, capture_output=True)  # fmt: skip
    return path


def run_once(fleet: Fleet, work: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "run", "--once", "--repo", fleet.server.url,
         "--work-dir", str(work), "--insecure-registry", fleet.registry.host, *extra],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def allowed_signers(path: Path, principal: str, pub: Path) -> Path:
    path.write_text(f"{principal} {pub.read_text().split()[0]} {pub.read_text().split()[1]}\n")
    return path


def verify_commit(fleet: Fleet, sha: str, signers: Path) -> subprocess.CompletedProcess[str]:
    """Plain `git verify-commit`, as an auditor runs it in a clone."""
    return subprocess.run(
        ["git", f"--git-dir={fleet.server.path}", "-c", "gpg.format=ssh",
         "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", "--raw", sha],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def skopeo_raw(fleet: Fleet, ref: str) -> bytes:
    return subprocess.run(
        ["skopeo", "inspect", "--raw", *fleet.registry.skopeo_args(), f"docker://{ref}"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip


def fetch_blob(fleet: Fleet, repo: str, digest: str, dest: Path) -> Path:
    """A blob straight from the registry's HTTP API (curl, not our client)."""
    path = repo.split("/", 1)[1]
    subprocess.run(["curl", "-sf", "-o", str(dest),
                    f"http://{fleet.registry.host}/v2/{path}/blobs/{digest}"], check=True)  # fmt: skip
    return dest


def openssl_verify(pub: Path, sig_der: Path, payload: Path) -> bool:
    proc = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(sig_der),
         str(payload)], capture_output=True, text=True, check=False,
    )  # fmt: skip
    return proc.returncode == 0 and "Verified OK" in proc.stdout


def test_pin_commits_are_ssh_signed_and_git_verify_commit_accepts_them(
    fleet: Fleet, tmp_path: Path
) -> None:
    key = make_ssh_key(tmp_path / "bot")
    proc = run_once(fleet, tmp_path / "work", "--commit-signing-key", str(key))
    assert proc.returncode == 0, proc.stderr
    head = fleet.server.head()
    assert head is not None
    assert fleet.log()[0].startswith("pin 2 pools")
    signers = allowed_signers(tmp_path / "allowed", "reconciler@gitops.bootc.dev",
                              key.with_suffix(".pub"))  # fmt: skip
    ok = verify_commit(fleet, head, signers)
    assert ok.returncode == 0, ok.stderr
    assert 'Good "git" signature for reconciler@gitops.bootc.dev' in ok.stderr
    # another key in the allowed-signers file: git refuses the same commit
    other = make_ssh_key(tmp_path / "other")
    wrong = allowed_signers(tmp_path / "wrong", "reconciler@gitops.bootc.dev",
                            other.with_suffix(".pub"))  # fmt: skip
    assert verify_commit(fleet, head, wrong).returncode != 0
    # the admin's own (unsigned) commit is not accepted either
    parent = run_git(f"--git-dir={fleet.server.path}", "rev-parse", f"{head}^").strip()
    assert verify_commit(fleet, parent, signers).returncode != 0


def test_a_commit_signing_key_that_others_can_read_is_refused_by_path(
    fleet: Fleet, tmp_path: Path
) -> None:
    key = make_ssh_key(tmp_path / "bot")
    key.chmod(0o644)
    proc = run_once(fleet, tmp_path / "work", "--commit-signing-key", str(key))
    assert proc.returncode != 0
    assert f"--commit-signing-key {key}: permissions 0644" in proc.stderr
    assert "chmod 600" in proc.stderr
    assert "PRIVATE KEY" not in proc.stderr and key.read_text().split()[1] not in proc.stderr
    assert fleet.log()[0].startswith("pin") is False  # nothing was pinned


def test_images_are_signed_in_cosign_format_and_openssl_verifies_them(
    fleet: Fleet, tmp_path: Path
) -> None:
    key = ec_key(tmp_path / "cosign.key")
    pub = key.with_suffix(".pub.pem")
    proc = run_once(fleet, tmp_path / "work", "--image-signing-key", str(key))
    assert proc.returncode == 0, proc.stderr
    pin = fleet.pin("worker")
    repo, _, digest = pin.spec.image.partition("@")
    # the signature manifest at the tag containers/image looks for
    tag = digest.replace(":", "-") + ".sig"
    manifest = json.loads(skopeo_raw(fleet, f"{repo}:{tag}"))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = fetch_blob(fleet, repo, layer["digest"], tmp_path / "payload.json")
    doc = json.loads(payload.read_bytes())
    assert doc["critical"] == {
        "identity": {"docker-reference": repo},
        "image": {"docker-manifest-digest": digest},
        "type": "cosign container image signature",
    }
    sig = tmp_path / "sig.der"
    sig.write_bytes(base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]))
    assert openssl_verify(pub, sig, payload)
    # a payload naming another digest does not verify with that signature
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(payload.read_bytes().replace(digest[7:15].encode(), b"00000000"))
    assert tampered.read_bytes() != payload.read_bytes()
    assert not openssl_verify(pub, sig, tampered)
    # reusing the image (a second pass, another work directory) adds no second signature
    proc = run_once(fleet, tmp_path / "work2", "--image-signing-key", str(key))
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(skopeo_raw(fleet, f"{repo}:{tag}"))["layers"]) == 1
    # a changed config: the new image is signed too
    change_chrony(fleet, "ntp9.example.internal")
    proc = run_once(fleet, tmp_path / "work", "--image-signing-key", str(key))
    assert proc.returncode == 0, proc.stderr
    new = fleet.pin("worker").spec.image
    assert new != pin.spec.image
    new_tag = new.partition("@")[2].replace(":", "-") + ".sig"
    assert json.loads(skopeo_raw(fleet, f"{repo}:{new_tag}"))["layers"]
    # the key itself is nowhere in what the run printed
    secret = "".join(key.read_text().splitlines()[1:-1])
    assert secret[:40] not in proc.stderr + proc.stdout
