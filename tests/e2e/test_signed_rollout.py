"""The signed chain down to the node: the reconciler signs its pin commits and images,
the image carries its own update policy, and the node agent (against the bootc stand-in,
whose containers-policy check uses openssl on what it fetches from the real registry)
applies a properly signed pin, refuses an unsigned pin commit, and cannot stage an image
whose signature is not by the pool's key.

The node's /etc is filled from the pinned image's own config layer (read back with
skopeo), as it would be after the node booted an image built with these settings.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from reconciler.adapters import git
from reconciler.adapters.registry import signatures
from reconciler.loop import controller
from tests.e2e.test_loop import Fleet, change_chrony, make_fleet
from tests.e2e.test_provenance import ec_key, entry
from tests.fixtures.bootc import FakeHost
from tests.fixtures.gitservers import GitServers, make_ssh_key
from tests.fixtures.registry import BaseImage, RunningRegistry

pytestmark = [pytest.mark.registry, pytest.mark.git]

POLICY_FILES = ("etc/containers/", "etc/pki/containers/", "etc/bootc-reconciler/")


@pytest.fixture
def fleet(
    git_servers: GitServers, registry: RunningRegistry, base_image: BaseImage, tmp_path: Path
) -> Fleet:
    return make_fleet(git_servers, "file", registry, base_image, tmp_path)


def reconciler(fleet: Fleet, bot: Path, image_key: Path) -> controller.Reconciler:
    work = fleet.root / "r1"
    mirror = git.Mirror(fleet.server.url, work / "mirror", fleet.server.auth,
                        signing_key=git.SshSigningKey.load(bot))  # fmt: skip
    settings = controller.RunSettings(image_signer=signatures.KeySigner.load(image_key))
    return controller.Reconciler(mirror, fleet.registry.client(), work, settings)


def image_policy_files(fleet: Fleet, image: str, dest: Path, tmp: Path) -> list[str]:
    """Copy the update-policy files out of `image`'s top layer into `dest` (the node)."""
    tmp.mkdir(parents=True, exist_ok=True)
    layout = tmp / "oci"
    subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false",
                    f"docker://{image}", f"oci:{layout}:img"], check=True)  # fmt: skip
    index = json.loads((layout / "index.json").read_text())
    blob = lambda d: (layout / "blobs" / d.replace(":", "/")).read_bytes()  # noqa: E731
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    found = []
    with tarfile.open(fileobj=io.BytesIO(blob(manifest["layers"][-1]["digest"]))) as tar:
        for member in tar.getmembers():
            name = member.name.lstrip("./")
            if member.isfile() and name.startswith(POLICY_FILES):
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                data = tar.extractfile(member)
                assert data is not None
                target.write_bytes(data.read())
                found.append(name)
    return sorted(found)


def run_agent(fleet: Fleet, host: FakeHost, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "agent", "--once", "--repo", fleet.server.url,
         "--pool", "worker", "--bootc", str(host.bootc), "--systemctl", str(host.systemctl),
         "--state-dir", str(tmp / "state"), "--reboot-command", " ".join(host.reboot_command),
         "--boot-id-file", str(host.boot_id_file), "--host-root", str(host.root),
         "--no-live-settings"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def chrony_to(fleet: Fleet, old: str, new: str) -> None:
    """Commit (unsigned) chrony's server `old` → `new` (the file holds it base64'd)."""
    path = "machineconfigs/50-chrony.yaml"
    text = fleet.file(path)

    def swap(m: re.Match[str]) -> str:
        data = base64.b64decode(m.group(1)).decode().replace(old, new)
        return "source: data:;base64," + base64.b64encode(data.encode()).decode()

    changed = re.sub(r"source: data:;base64,([A-Za-z0-9+/=]+)", swap, text)
    assert changed != text
    fleet.commit({path: changed}, f"chrony: use {new}")


def sign_head(fleet: Fleet, admin: Path, clone: Path) -> None:
    """Replace the head commit (an admin's change) by the same commit SSH-signed."""
    subprocess.run(["git", "clone", "-q", str(fleet.server.path), str(clone)], check=True)
    subprocess.run(["git", "-c", "gpg.format=ssh", "-c", f"user.signingKey={admin}",
                    "-c", "user.name=a", "-c", "user.email=admin@example.test",
                    "commit", "-q", "--amend", "-S", "--no-edit"], cwd=clone, check=True, capture_output=True)  # fmt: skip
    subprocess.run(["git", "push", "-q", "-f", "origin", "main"], cwd=clone, check=True)


def switches(host: FakeHost) -> list[list[str]]:
    return [c for c in host.calls() if c[:1] == ["switch"]]


def test_the_node_applies_signed_pins_and_refuses_unsigned_ones(
    fleet: Fleet, bootc_host: FakeHost, tmp_path: Path
) -> None:
    admin, bot = make_ssh_key(tmp_path / "admin"), make_ssh_key(tmp_path / "bot")
    image_key = ec_key(tmp_path / "image.key")
    doc = yaml.safe_load(fleet.file("reconciler.yaml"))
    doc["spec"]["sourceVerification"] = {
        "allowedSigners": [entry("admin@example.test", admin)],
        "pinSigners": [entry("reconciler@gitops.bootc.dev", bot)],
    }
    doc["spec"]["imageSigning"] = {"publicKey": image_key.with_suffix(".pub.pem").read_text()}
    fleet.server.commit_files({"reconciler.yaml": yaml.safe_dump(doc)}, "signed fleet",
                              sign_with=admin)  # fmt: skip
    r = reconciler(fleet, bot, image_key)
    assert r.reconcile_once().changed == ["master", "worker"]
    first = fleet.pin("worker").spec
    repo = first.image.partition("@")[0]
    # the node booted the first image: its /etc holds what that image carries
    host = bootc_host
    host.add_image(repo, first.digest)
    host.install(first.image)
    files = image_policy_files(fleet, first.image, host.root, tmp_path / "first")
    assert files == [
        "etc/bootc-reconciler/allowed-signers",
        "etc/containers/policy.json",
        "etc/containers/registries.d/bootc-reconciler-worker.yaml",
        "etc/pki/containers/bootc-reconciler.pub",
    ]
    policy = json.loads((host.root / "etc/containers/policy.json").read_text())
    assert policy["default"] == [{"type": "reject"}]
    assert policy["transports"]["docker"][repo][0]["type"] == "sigstoreSigned"

    # 1. a new config, signed by the admin: pinned, signed; the node switches to it,
    # with the signature policy enforced
    change_chrony(fleet, "ntp8.example.internal")
    sign_head(fleet, admin, tmp_path / "clone1")
    report = r.reconcile_once()
    assert report.pools["worker"].state == "pinned", report.pools["worker"].message
    second = fleet.pin("worker").spec
    host.add_image(repo, second.digest)
    step = run_agent(fleet, host, tmp_path)
    assert step.returncode == 0, step.stderr + step.stdout
    assert step.stdout.startswith(f"worker: rebooting: rebooting into {second.digest}")
    assert switches(host) == [["switch", "--quiet", "--enforce-container-sigpolicy", "--",
                               second.image]]  # fmt: skip
    step = run_agent(fleet, host, tmp_path)
    assert host.booted_digest == second.digest, step.stdout

    # 2. a pin edited by hand and pushed unsigned: the agent refuses it, switches nothing
    pin_file = fleet.file("pins/worker.yaml").replace(second.digest, first.digest)
    hand = fleet.server.commit_files({"pins/worker.yaml": pin_file}, "hand-made pin")
    step = run_agent(fleet, host, tmp_path)
    assert step.returncode == 1
    assert f"refusing the pin of commit {hand}: the pin commit is not signed" in step.stdout
    assert len(switches(host)) == 1
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert hand in json.dumps(state)

    # 3. a pin signed properly, but its image signed with another key: bootc (the
    # stand-in's containers-policy check) refuses to stage it
    fleet.server.git("update-ref", "refs/heads/main", f"{hand}^")
    rogue_key = ec_key(tmp_path / "rogue.key")
    chrony_to(fleet, "ntp8.example.internal", "ntp6.example.internal")
    sign_head(fleet, admin, tmp_path / "clone2")
    rogue = reconciler(fleet, bot, rogue_key)
    assert rogue.reconcile_once().pools["worker"].state == "pinned"
    third = fleet.pin("worker").spec
    assert third.digest != second.digest
    host.add_image(repo, third.digest)
    step = run_agent(fleet, host, tmp_path)
    assert step.returncode == 1
    assert "Source image rejected" in step.stdout + step.stderr
    assert "cryptographic signature verification failed" in step.stdout + step.stderr
    assert host.booted_digest == second.digest

    # 4. the audit from Git (and the registry): every pin with its signers and whether
    # its image signature verifies; the rogue-signed image is called out
    audit = tmp_path / "audit"
    subprocess.run(["git", "clone", "-q", str(fleet.server.path), str(audit)], check=True)
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "history", "--verify", "--repo", str(audit),
         "--pool", "worker", "-o", "json", "--insecure-registry", fleet.registry.host],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    schema = json.loads((Path(__file__).parents[2] / "docs/json/HistoryList.schema.json")
                        .read_text())  # fmt: skip
    jsonschema.validate(doc, schema)
    items = doc["items"]
    assert [i["digest"] for i in items] == [first.digest, second.digest, third.digest]
    for item in items:
        v = item["verification"]
        assert v["policy"] is True
        assert v["pinCommit"]["accepted"] is True
        assert v["pinCommit"]["signer"] == "reconciler@gitops.bootc.dev"
    assert [i["verification"]["image"]["signature"] for i in items] == [
        "verified", "verified", "invalid",
    ]  # fmt: skip
    assert [c["signer"] for c in items[1]["verification"]["configCommits"]] == [
        "admin@example.test"
    ]
    text = subprocess.run(
        [sys.executable, "-m", "reconciler", "history", "--verify", "--repo", str(audit),
         "--pool", "worker", "--insecure-registry", fleet.registry.host],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "pin commit signed by reconciler@gitops.bootc.dev [ok]" in text
    assert "image signature: invalid (the signature does not verify with the key)" in text
