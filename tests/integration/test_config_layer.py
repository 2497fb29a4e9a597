"""The config layer as real tools see it: an OCI layout written by the test, read back
by skopeo and umoci; the tmpfiles.d file run by systemd-tmpfiles; the generated
Containerfile built by buildah (chroot isolation) from the same base.

Real: skopeo, umoci, systemd-tmpfiles (`--root`, so it resolves owners from the
unpacked image's /etc/passwd), buildah. Not real: the base image is a few files written
by the test (no kernel, no bootc), so the Containerfile is generated without the lint
step; registry pushes are the native builder's tests.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.core import canonical, identity, merge, model
from reconciler.core.image import containerfile, layer, layout, oci, tmpfiles
from reconciler.core.image.layer import Entry
from reconciler.core.merge import RenderedConfig

BASE_CREATED = "2026-01-02T03:04:05Z"
KEYS = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOM5 admin@example.com"]
SERVICE = "[Service]\nExecStart=/usr/bin/true\n[Install]\nWantedBy=multi-user.target\n"
VAR_BYTES = b"first line\nsecond line\n\x00\xff binary tail"


def data_url(data: bytes) -> str:
    return "data:;base64," + base64.b64encode(data).decode()


CONFIG: dict[str, Any] = {
    "ignition": {"version": "3.4.0"},
    "storage": {
        "files": [
            {
                "path": "/etc/app/secret.conf",
                "mode": 0o600,
                "user": {"id": 1001},
                "group": {"id": 1002},
                "contents": {"source": "data:,token%0A"},
            },
            {"path": "/etc/app/with space.conf", "contents": {"source": "data:,spaced%0A"}},
            {
                "path": "/usr/share/app/data.txt",
                "mode": 0o444,
                "contents": {"source": "data:,ro%0A"},
            },
            {
                "path": "/var/lib/app/state.bin",
                "mode": 0o640,
                "user": {"name": "core"},
                "contents": {"source": data_url(VAR_BYTES)},
            },
            {"path": "/var/lib/app/odd name 100%.txt", "contents": {"source": "data:,odd"}},
            {"path": "/opt/app/config.yaml", "contents": {"source": "data:,opt: true%0A"}},
            {"path": "/var/lib/app/empty"},
        ],
        "directories": [
            {
                "path": "/var/lib/app",
                "mode": 0o750,
                "user": {"name": "core"},
                "group": {"name": "core"},
            },
        ],
        "links": [
            {"path": "/etc/app/current.conf", "target": "secret.conf"},
            {"path": "/etc/app/hard.conf", "target": "/etc/app/secret.conf", "hard": True},
            {"path": "/var/lib/app/latest", "target": "/var/lib/app/state.bin"},
        ],
    },
    "systemd": {
        "units": [
            {
                "name": "app.service",
                "enabled": True,
                "contents": SERVICE,
                "dropins": [{"name": "10-mem.conf", "contents": "[Service]\nMemoryMax=64M\n"}],
            },
            {"name": "rpcbind.socket", "mask": True},
        ]
    },
    "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": KEYS}]},
}


def run(*argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, **kw)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout}\n{result.stderr}"
    return result


def the_plan(base_image: str) -> layout.ImagePlan:
    spec = {
        "config": merge.merge_ignition([CONFIG]),
        "kernelArguments": ["audit=1 quiet", 'msg="a b"'],
        "extensions": [],
        "fips": False,
        "kernelType": "default",
        "osImageURL": base_image,
        "baseOSExtensionsContainerImage": "",
    }
    rendered = RenderedConfig("worker", "rendered-worker-" + "0" * 32, spec, ())
    digest = identity.inputs_digest(
        "sha256:" + "a" * 64, rendered, None, model.ReconcilerConfigSpec(), architecture="amd64"
    )
    return layout.plan_image(
        rendered, None, model.ReconcilerConfigSpec(), "amd64", inputs_digest=digest
    )


@dataclass
class Layout:
    path: Path

    def blob(self, data: bytes) -> str:
        digest = canonical.sha256_digest(data)
        target = self.path / "blobs" / "sha256" / digest.split(":", 1)[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return digest

    def tag(self, name: str, manifest: bytes) -> None:
        index_path = self.path / "index.json"
        index = json.loads(index_path.read_text())
        index["manifests"].append(
            {
                "mediaType": oci.OCI_MANIFEST,
                "digest": self.blob(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": name},
            }
        )
        index_path.write_text(json.dumps(index))


@dataclass
class Base:
    layout: Layout
    manifest: bytes
    config: bytes


@pytest.fixture
def base(tmp_path: Path) -> Base:
    """A small base image in an OCI layout, tagged `base`, with a `core` user."""
    layout = Layout(tmp_path / "layout")
    layout.path.mkdir()
    (layout.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout.path / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    base_layer = layer.build_layer(
        [
            Entry("/etc/os-release", "file", data=b"ID=feasos\n"),
            Entry(
                "/etc/passwd",
                "file",
                data=b"root:x:0:0::/var/roothome:/bin/sh\ncore:x:1000:1000::/var/home/core:/bin/sh\n",
            ),
            Entry("/etc/group", "file", data=b"root:x:0:\ncore:x:1000:\n"),
            Entry("/usr/lib/os-release", "file", data=b"ID=feasos\n"),
            Entry("/var", "dir", 0o755),
        ]
    )
    layout.blob(base_layer.blob)
    config = canonical.canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": BASE_CREATED,
            "config": {"Labels": {"containers.bootc": "1", "ostree.bootable": "1"}},
            "rootfs": {"type": "layers", "diff_ids": [base_layer.diff_id]},
            "history": [{"created": BASE_CREATED, "created_by": "test base"}],
        }
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "config": {
                "mediaType": oci.OCI_CONFIG,
                "digest": layout.blob(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": oci.OCI_LAYER_GZIP,
                    "digest": base_layer.digest,
                    "size": base_layer.size,
                }
            ],
        },
        indent=2,
    ).encode()
    layout.tag("base", manifest)
    return Base(layout, manifest, config)


def compose_native(base: Base, plan: layout.ImagePlan) -> oci.ComposedImage:
    built = layer.build_layer(plan.entries)
    base.layout.blob(built.blob)
    image = oci.compose_image(
        base.manifest, base.config, built, labels=plan.labels, created_by="test: config layer"
    )
    base.layout.blob(image.config_bytes)
    base.layout.tag("native", image.manifest_bytes)
    return image


def unpack(layout: Path, tag: str, dest: Path) -> Path:
    run("umoci", "unpack", "--image", f"{layout}:{tag}", str(dest))
    return dest / "rootfs"


@dataclass(frozen=True)
class Node:
    kind: str
    mode: int
    uid: int
    gid: int
    content: bytes | str | None


def snapshot(root: Path, paths: list[str]) -> dict[str, Node]:
    out = {}
    for path in paths:
        p = root / path.lstrip("/")
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            node = Node("symlink", 0, st.st_uid, st.st_gid, os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            node = Node("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, None)
        else:
            node = Node("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, p.read_bytes())
        out[path] = node
    return out


def test_skopeo_reads_the_predicted_digest_and_umoci_unpacks_the_layer(
    base: Base, tmp_path: Path
) -> None:
    plan = the_plan("unused")
    image = compose_native(base, plan)
    ref = f"oci:{base.layout.path}:native"
    raw = run("skopeo", "inspect", "--raw", ref).stdout.encode()
    assert raw == image.manifest_bytes
    inspected = json.loads(run("skopeo", "inspect", ref).stdout)
    assert inspected["Digest"] == image.manifest_digest
    assert inspected["Labels"]["containers.bootc"] == "1"
    assert inspected["Labels"]["gitops.bootc.dev/pool"] == "worker"
    assert inspected["Created"].startswith("2026-01-02T03:04:05")

    rootfs = unpack(base.layout.path, "native", tmp_path / "bundle")
    secret = os.lstat(rootfs / "etc/app/secret.conf")
    assert (stat.S_IMODE(secret.st_mode), secret.st_uid, secret.st_gid) == (0o600, 1001, 1002)
    assert secret.st_mtime == 0
    assert (rootfs / "etc/app/with space.conf").read_bytes() == b"spaced\n"
    assert os.readlink(rootfs / "etc/app/current.conf") == "secret.conf"
    assert os.stat(rootfs / "etc/app/hard.conf").st_ino == secret.st_ino
    assert stat.S_IMODE(os.lstat(rootfs / "usr/share/app/data.txt").st_mode) == 0o444
    assert os.readlink(rootfs / "etc/systemd/system/rpcbind.socket") == "/dev/null"
    assert os.readlink(rootfs / "etc/systemd/system/multi-user.target.wants/app.service") == (
        "/etc/systemd/system/app.service"
    )
    assert (rootfs / "etc/systemd/system/app.service.d/10-mem.conf").exists()
    kargs = tomllib.loads((rootfs / "usr/lib/bootc/kargs.d/50-worker.toml").read_text())
    assert kargs == {"kargs": ["audit=1", "quiet", 'msg="a b"']}
    assert (rootfs / "etc/os-release").read_bytes() == b"ID=feasos\n"  # base kept
    assert not (rootfs / "var/lib/app").exists()  # /var content is made at boot, not shipped


def test_systemd_tmpfiles_creates_the_var_content_exactly(base: Base, tmp_path: Path) -> None:
    plan = the_plan("unused")
    compose_native(base, plan)
    rootfs = unpack(base.layout.path, "native", tmp_path / "bundle")
    conf = rootfs / tmpfiles.TMPFILES_PATH.lstrip("/")
    run("systemd-tmpfiles", "--create", f"--root={rootfs}", str(conf))
    state = os.lstat(rootfs / "var/lib/app/state.bin")
    assert (rootfs / "var/lib/app/state.bin").read_bytes() == VAR_BYTES
    assert (stat.S_IMODE(state.st_mode), state.st_uid, state.st_gid) == (0o640, 1000, 0)
    app_dir = os.lstat(rootfs / "var/lib/app")
    assert (stat.S_IMODE(app_dir.st_mode), app_dir.st_uid, app_dir.st_gid) == (0o750, 1000, 1000)
    assert (rootfs / "var/lib/app/odd name 100%.txt").read_bytes() == b"odd"
    assert (rootfs / "var/lib/app/empty").read_bytes() == b""
    assert os.readlink(rootfs / "var/lib/app/latest") == "/var/lib/app/state.bin"
    assert (rootfs / "var/opt/app/config.yaml").read_bytes() == b"opt: true\n"
    # core's keys are live settings the node agent writes, never image content; the
    # image makes core's ~/.ssh for them
    assert not (rootfs / "var/home/core/.ssh/authorized_keys").exists()
    ssh_dir = os.lstat(rootfs / "var/home/core/.ssh")
    assert (stat.S_IMODE(ssh_dir.st_mode), ssh_dir.st_uid, ssh_dir.st_gid) == (0o700, 1000, 1000)

    # f+ rewrites at every boot: a local edit is replaced by what Git says
    (rootfs / "var/lib/app/state.bin").write_bytes(b"drifted")
    run("systemd-tmpfiles", "--create", f"--root={rootfs}", str(conf))
    assert (rootfs / "var/lib/app/state.bin").read_bytes() == VAR_BYTES


@pytest.fixture
def buildah_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    store = tmp_path / "containers"
    conf = tmp_path / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{store}/run"\ngraphroot = "{store}/graph"\n'
    )
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)}
    yield env
    subprocess.run(
        ["buildah", "rmi", "--all", "--force"], env=env, capture_output=True, check=False
    )
    shutil.rmtree(store, ignore_errors=True)


@pytest.mark.buildah
def test_buildah_builds_the_same_filesystem_from_the_containerfile(
    base: Base, tmp_path: Path, buildah_env: dict[str, str]
) -> None:
    plan = the_plan(f"oci:{base.layout.path}:base")
    compose_native(base, plan)
    native_root = unpack(base.layout.path, "native", tmp_path / "native")

    generated = containerfile.generate(plan, base_labels={})  # the test base has no bootc
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(generated.text)
    for name, data in generated.context.items():
        (ctx / name).write_bytes(data)
    run(
        "buildah",
        "bud",
        "--isolation",
        "chroot",
        "--timestamp",
        "0",
        "-t",
        "localhost/cf:test",
        str(ctx),
        env=buildah_env,
    )
    run("buildah", "push", "localhost/cf:test", f"oci:{base.layout.path}:built", env=buildah_env)
    built_root = unpack(base.layout.path, "built", tmp_path / "built")

    ours = [e.path for e in plan.entries]
    assert snapshot(built_root, ours) == snapshot(native_root, ours)
    labels = json.loads(run("skopeo", "inspect", f"oci:{base.layout.path}:built").stdout)["Labels"]
    assert {k: labels[k] for k in plan.labels} == dict(plan.labels)
