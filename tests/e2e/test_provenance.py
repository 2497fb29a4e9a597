"""The signed chain, checked with tools other than ours: real `git verify-commit` on
pin commits (gpg.format=ssh, an allowed-signers file), `openssl dgst -verify` on the
cosign-format signature payload and annotation read back from the real registry with
skopeo, and the repository's source policy stalling a pass on an unsigned admin commit.

Keys are generated in each test (ssh-keygen, openssl); nothing here reads our verifier's
answers to decide whether the signatures are sound.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.adapters import git
from reconciler.loop import controller
from tests.e2e.test_loop import CHRONY, Fleet, change_chrony, make_fleet
from tests.fixtures.gitservers import GitServers, make_ssh_key, run_git
from tests.fixtures.registry import BaseImage, RunningRegistry
from tests.helpers import example_repo

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
    assert "PRIVATE KEY" not in proc.stderr
    assert key.read_text().split()[1] not in proc.stderr
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


# --- source verification in the loop -------------------------------------------------------


def entry(principal: str, key: Path) -> str:
    kind, b64 = key.with_suffix(".pub").read_text().split()[:2]
    return f"{principal} {kind} {b64}"


def with_policy(fleet: Fleet, admin: Path, bot: Path | None = None) -> str:
    """reconciler.yaml with a sourceVerification naming `admin` (and the bot's key)."""
    doc = yaml.safe_load(fleet.file("reconciler.yaml"))
    doc["spec"]["sourceVerification"] = {
        "allowedSigners": [entry("admin@example.test", admin)],
        **({"pinSigners": [entry("reconciler@gitops.bootc.dev", bot)]} if bot else {}),
    }
    return yaml.safe_dump(doc)


def signed_reconciler(fleet: Fleet, name: str, bot: Path) -> controller.Reconciler:
    work = fleet.root / name
    mirror = git.Mirror(fleet.server.url, work / "mirror", fleet.server.auth,
                        signing_key=git.SshSigningKey.load(bot))  # fmt: skip
    return controller.Reconciler(mirror, fleet.registry.client(), work, controller.RunSettings())


def test_an_unsigned_admin_commit_stalls_the_pass_and_pools_keep_their_pins(
    fleet: Fleet, tmp_path: Path
) -> None:
    admin = make_ssh_key(tmp_path / "admin")
    bot = make_ssh_key(tmp_path / "bot")
    fleet.server.commit_files({"reconciler.yaml": with_policy(fleet, admin, bot)},
                              "require signed changes", sign_with=admin)  # fmt: skip
    r = signed_reconciler(fleet, "r1", bot)
    first = r.reconcile_once()  # first use: the head is the admin's signed commit
    assert first.changed == ["master", "worker"], first.pools
    pinned = fleet.pin("worker").spec.image
    # a change nobody signed
    unsigned = change_chrony(fleet, "ntp7.example.internal")
    report = r.reconcile_once()
    assert report.commit is None
    assert report.pools["worker"].state == "stalled"
    assert f"refused commit {unsigned}: it is not signed" in report.pools["worker"].message
    assert report.pools["worker"].pin is not None
    assert fleet.pin("worker").spec.image == pinned  # the pin did not move
    status = json.loads((fleet.root / "r1" / "status.json").read_text())
    stalled = status["pools"]["worker"]["conditions"]["Stalled"]
    assert stalled["status"] is True
    assert unsigned in stalled["message"]
    # a signed commit on top does not launder it: the unsigned one is still on the line
    fleet.server.commit_files({"README.md": "x\n"}, "docs", sign_with=admin)
    change = fleet.server.commit_files({"machineconfigs/50-chrony.yaml": fleet.file(CHRONY)},
                                       "no-op", sign_with=admin)  # fmt: skip
    assert change
    assert r.reconcile_once().pools["worker"].state == "stalled"


def test_signed_changes_and_a_signed_merge_are_reconciled_others_refused(
    fleet: Fleet, tmp_path: Path
) -> None:
    admin = make_ssh_key(tmp_path / "admin")
    bot = make_ssh_key(tmp_path / "bot")
    stranger = make_ssh_key(tmp_path / "stranger")
    fleet.server.commit_files({"reconciler.yaml": with_policy(fleet, admin, bot)},
                              "require signed changes", sign_with=admin)  # fmt: skip
    r = signed_reconciler(fleet, "r1", bot)
    assert r.reconcile_once().changed == ["master", "worker"]
    # signed by an allowed admin: reconciled
    new_chrony = fleet.file(CHRONY) + "\n"
    fleet.server.commit_files({CHRONY: new_chrony}, "chrony: whitespace", sign_with=admin)
    report = r.reconcile_once()
    assert all(p.state in ("pinned", "unchanged", "unmanaged") for p in report.pools.values())
    # signed, but by a key the policy does not list
    bad = fleet.server.commit_files({CHRONY: new_chrony + "\n"}, "by a stranger",
                                    sign_with=stranger)  # fmt: skip
    report = r.reconcile_once()
    message = report.pools["worker"].message
    assert f"refused commit {bad}: it is signed by SHA256:" in message
    assert "allowedSigners does not list" in message
    # the stranger cannot add himself: that commit is judged by the policy before it
    fleet.server.git("update-ref", "refs/heads/main", f"{bad}^")
    doc = yaml.safe_load(fleet.file("reconciler.yaml"))
    doc["spec"]["sourceVerification"]["allowedSigners"].append(entry("eve@x", stranger))
    grab = fleet.server.commit_files({"reconciler.yaml": yaml.safe_dump(doc)}, "let me in",
                                     sign_with=stranger)  # fmt: skip
    assert f"refused commit {grab}" in r.reconcile_once().pools["worker"].message
    # an unsigned branch merged by a signed merge commit is accepted (the merge vouches)
    fleet.server.git("update-ref", "refs/heads/main", f"{grab}^")
    base = fleet.server.head()
    assert base is not None
    w = tmp_path / "clone"
    run_git("clone", "-q", str(fleet.server.path), w)
    run_git("checkout", "-q", "-b", "topic", cwd=w)
    (w / CHRONY).write_text(new_chrony + "\n\n")
    run_git("-c", "user.name=c", "-c", "user.email=c@x", "commit", "-qam", "contrib", cwd=w)
    run_git("checkout", "-q", "main", cwd=w)
    run_git("-c", "user.name=a", "-c", "user.email=admin@example.test", "-c", "gpg.format=ssh",
            "-c", f"user.signingKey={admin}", "merge", "-q", "-S", "--no-ff", "-m", "merge topic",
            "topic", cwd=w)  # fmt: skip
    run_git("push", "-q", "origin", "main", cwd=w)
    report = r.reconcile_once()
    assert report.pools["worker"].state != "stalled", report.pools["worker"].message


def test_policy_without_a_commit_signing_key_stalls_with_the_fix(
    fleet: Fleet, tmp_path: Path
) -> None:
    admin = make_ssh_key(tmp_path / "admin")
    fleet.server.commit_files({"reconciler.yaml": with_policy(fleet, admin)},
                              "require signed changes", sign_with=admin)  # fmt: skip
    report = fleet.reconciler().reconcile_once()
    assert report.pools["worker"].state == "stalled"
    assert "--commit-signing-key" in report.pools["worker"].message


def test_plan_base_says_whether_the_head_would_be_accepted(fleet: Fleet, tmp_path: Path) -> None:
    admin = make_ssh_key(tmp_path / "admin")
    fleet.server.commit_files({"reconciler.yaml": with_policy(fleet, admin)},
                              "require signed changes", sign_with=admin)  # fmt: skip
    w = tmp_path / "pr"
    run_git("clone", "-q", str(fleet.server.path), w)
    run_git("checkout", "-q", "-b", "topic", cwd=w)
    (w / CHRONY).write_text(fleet.file(CHRONY) + "\n")
    run_git("-c", "user.name=c", "-c", "user.email=c@x", "-c", "commit.gpgSign=false",
            "commit", "-qam", "unsigned change", cwd=w)  # fmt: skip
    unsigned = run_git("rev-parse", "HEAD", cwd=w).strip()

    def plan() -> tuple[int, dict[str, Any], str]:
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler", "plan", "--repo", str(w), "--base", "main",
             "--head", "topic", "-o", "json", "--insecure-registry", fleet.registry.host],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        text = subprocess.run(
            [sys.executable, "-m", "reconciler", "plan", "--repo", str(w), "--base", "main",
             "--head", "topic", "--insecure-registry", fleet.registry.host],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        return proc.returncode, json.loads(proc.stdout), text

    code, doc, text = plan()
    assert code == 1
    assert doc["source"]["accepted"] is False
    assert doc["source"]["refusedCommit"] == unsigned
    assert "do not merge" in text
    assert f"refused commit {unsigned}: it is not signed" in text
    # signed by the admin instead: accepted, and the signer is named
    run_git("-c", "gpg.format=ssh", "-c", f"user.signingKey={admin}", "commit", "-q",
            "--amend", "-S", "--no-edit", cwd=w)  # fmt: skip
    code, doc, text = plan()
    assert code == 0, doc
    assert doc["source"]["accepted"] is True
    assert [c["signer"] for c in doc["source"]["commits"]] == ["admin@example.test"]
    assert "source verification: accepted" in text
    assert "admin@example.test" in text


def key_fragments(*keys: Path) -> list[bytes]:
    """Pieces of the private keys' encodings (every 24-character run of their base64
    body, and of its decoding as hex), any of which would show a key leaked."""
    out = []
    for key in keys:
        body = "".join(line for line in key.read_text().splitlines() if "-----" not in line)
        out += [body[i : i + 24].encode() for i in range(0, len(body) - 24, 12)]
        raw = base64.b64decode(body)
        out += [raw[i : i + 16] for i in range(0, len(raw) - 16, 8)]
        out += [raw[i : i + 16].hex().encode() for i in range(0, len(raw) - 16, 8)]
    return out


def test_no_private_key_material_in_logs_commits_pins_images_or_work_dir(
    fleet: Fleet, tmp_path: Path
) -> None:
    (tmp_path / "keys").mkdir()
    ssh_key = make_ssh_key(tmp_path / "keys" / "bot")
    image_key = ec_key(tmp_path / "keys" / "cosign.key")
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "--debug", "run", "--once", "--repo",
         fleet.server.url, "--work-dir", str(work), "--insecure-registry", fleet.registry.host,
         "--commit-signing-key", str(ssh_key), "--image-signing-key", str(image_key)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # and a refusal: the key path is named, not its content
    broken = tmp_path / "keys" / "broken.key"
    broken.write_text(image_key.read_text().replace("EC PRIVATE", "RSA PRIVATE"))
    broken.chmod(0o600)
    bad = run_once(fleet, tmp_path / "work2", "--image-signing-key", str(broken))
    assert bad.returncode != 0
    assert f"--image-signing-key {broken}: not an unencrypted PEM private key" in bad.stderr
    haystack: list[tuple[str, bytes]] = [
        ("stdout", proc.stdout.encode()), ("stderr", proc.stderr.encode()),
        ("refusal", bad.stdout.encode() + bad.stderr.encode()),
    ]  # fmt: skip
    # every object in the config repository: commits, trees, pins
    objects = subprocess.run(
        ["git", f"--git-dir={fleet.server.path}", "cat-file", "--batch-all-objects",
         "--batch"], capture_output=True, check=True,
    ).stdout  # fmt: skip
    haystack.append(("git objects", objects))
    # every file the run left in its work directory (mirror, status, logs)
    haystack += [(str(p), p.read_bytes()) for p in work.rglob("*") if p.is_file()]
    # every blob of every pushed image and signature, layers uncompressed
    for pool in ("master", "worker"):
        image = fleet.pin(pool).spec.image
        tag = image.partition("@")[2].replace(":", "-") + ".sig"
        for ref in (image, f"{image.partition('@')[0]}:{tag}"):
            layout = tmp_path / "oci" / ref.rsplit("/", 1)[1].replace(":", "_")
            layout.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false",
                            f"docker://{ref}", f"oci:{layout}:x"], check=True)  # fmt: skip
            for blob in (layout / "blobs" / "sha256").iterdir():
                data = blob.read_bytes()
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                haystack.append((f"{ref} {blob.name[:12]}", data))
    fragments = key_fragments(ssh_key, image_key)
    assert len(fragments) > 20
    leaks = [(where, f) for where, data in haystack for f in fragments if f in data]
    assert leaks == []


def test_build_signs_what_it_pushes_and_what_it_reuses(
    registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> None:
    repo = example_repo(tmp_path / "repo", registry.host, base_image.ref,
                        prefix=f"build-{tmp_path.name}"[:50].lower().replace("_", "-"))  # fmt: skip
    key = ec_key(tmp_path / "cosign.key")
    pub = key.with_suffix(".pub.pem")
    other = ec_key(tmp_path / "other.key")

    def build(signing_key: Path) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler", "build", "--repo", str(repo), "--pool",
             "worker", "--insecure-registry", registry.host, "--image-signing-key",
             str(signing_key)], capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    image = build(key)  # built and pushed
    build(other)  # reused: signed again, by the other key, beside the first signature
    repo_name, _, digest = image.partition("@")
    tag = digest.replace(":", "-") + ".sig"
    raw = subprocess.run(["skopeo", "inspect", "--raw", *registry.skopeo_args(),
                          f"docker://{repo_name}:{tag}"], capture_output=True, check=True)  # fmt: skip
    layers = json.loads(raw.stdout)["layers"]
    assert len(layers) == 2
    verdicts = []
    for i, layer in enumerate(layers):
        payload = tmp_path / f"payload{i}"
        path = repo_name.split("/", 1)[1]
        subprocess.run(["curl", "-sf", "-o", str(payload),
                        f"http://{registry.host}/v2/{path}/blobs/{layer['digest']}"], check=True)  # fmt: skip
        sig = tmp_path / f"sig{i}"
        sig.write_bytes(
            base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
        )
        verdicts.append((openssl_verify(pub, sig, payload),
                         openssl_verify(other.with_suffix(".pub.pem"), sig, payload)))  # fmt: skip
    assert verdicts == [(True, False), (False, True)]
