"""Pull-request reviews built from the examples, for the markdown golden tests and the
screenshots in `docs/`: each case is a base (the examples) and a head (the examples edited
as a pull request would), reviewed by the real `review.review_revisions`.

Real: the loader, merge, verdict, diff, image plan and native layer build. Stand-ins: Git
(a dict of commits; commit ids and times are fixed so the output is stable) and the base
image (`FakeBase`: a fixed manifest in place of a registry lookup, or a registry that
cannot be reached).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.adapters import directory
from reconciler.adapters.git import CommitInfo
from reconciler.core import load, reference
from reconciler.core.poolplan import Resolved
from reconciler.errors import RegistryError
from reconciler.loop import planning
from reconciler.review import revisions as review
from tests.helpers import EXAMPLES

BASE_SHA = "1a2b3c4d5e" * 4
HEAD_SHA = "9f8e7d6c5b" * 4
SECRET = b"db-password: hunter2-correct-horse\n"
GITHUB_ENV = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/fleet"}


class FakeBase:
    """A base image resolver: one fixed image for every reference, or (`down`) a
    registry that cannot be reached."""

    def __init__(self, down: bool = False) -> None:
        self.down = down

    def resolve(
        self, ref: reference.ImageRef | str, arch: str = "amd64", os: str = "linux"
    ) -> Resolved:
        if self.down:
            raise RegistryError(
                "registry.example.com: connection refused",
                transient=True,
            )
        layer = "sha256:" + "1" * 64
        config = {"architecture": arch, "os": os, "config": {"Labels": {"containers.bootc": "1"}},
                  "rootfs": {"type": "layers", "diff_ids": [layer]}}  # fmt: skip
        config_bytes = json.dumps(config, sort_keys=True).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
                       "size": len(config_bytes)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": "sha256:" + "2" * 64, "size": 100}],
        }  # fmt: skip
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        parsed = reference.parse(ref) if isinstance(ref, str) else ref
        digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        return Resolved(parsed, digest, manifest["mediaType"], manifest_bytes, manifest,  # type: ignore[arg-type]
                        config, config_bytes, f"linux/{arch}")  # fmt: skip


def commit(sha: str, subject: str) -> CommitInfo:
    when = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    return CommitInfo(sha, (), "Admin", "admin@example.test", when, "Admin",
                      "admin@example.test", when, subject, "", {})  # fmt: skip


@dataclass
class FakeReader:
    """Two commits of the config repository, as `review` reads them from Git."""

    files: dict[str, dict[str, bytes]]
    subjects: dict[str, str]

    def read_files(
        self, rev: str, predicate: Callable[[str], bool]
    ) -> dict[str, bytes | load.Unreadable]:
        return {p: d for p, d in self.files[rev].items() if predicate(p)}

    def log(self, rev: str, max_count: int | None = None, **_: Any) -> list[CommitInfo]:
        return [commit(rev, self.subjects[rev])]


def examples() -> dict[str, bytes]:
    return {p: d for p, d in directory.read_config_files(EXAMPLES).items()
            if isinstance(d, bytes)}  # fmt: skip


def machine_config(name: str, role: str, body: str) -> bytes:
    head = ("apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\n"
            f"metadata:\n  name: {name}\n  labels:\n"
            f"    machineconfiguration.openshift.io/role: {role}\nspec:\n")  # fmt: skip
    return (head + body).encode()


def file_config(name: str, role: str, path: str, data: bytes, extra: str = "") -> bytes:
    source = "data:;base64," + base64.b64encode(data).decode()
    return machine_config(name, role, (
        "  config:\n    ignition: {version: 3.2.0}\n    storage:\n      files:\n"
        f"        - path: {path}\n{extra}          contents:\n            source: {source}\n"
    ))  # fmt: skip


def edited(path: str, old: str, new: str) -> Callable[[dict[str, bytes]], None]:
    def edit(files: dict[str, bytes]) -> None:
        text = files[path].decode()
        assert old in text, (path, old)
        files[path] = text.replace(old, new).encode()

    return edit


EXPORTER = "machineconfigs/60-worker-node-exporter.yaml"
MASTER_SSH = "machineconfigs/99-master-ssh.yaml"


def _plain(files: dict[str, bytes]) -> None:
    files["machineconfigs/51-master-motd.yaml"] = file_config(
        "51-master-motd", "master", "/etc/motd", b"Authorised use only.\nAsk #ops first.\n"
    )


def _two_pools(files: dict[str, bytes]) -> None:
    edited(EXPORTER, "MemoryMax=256M", "MemoryMax=512M")(files)


def _broken_and_valid(files: dict[str, bytes]) -> None:
    files["machineconfigs/70-worker-sysctl.yaml"] = file_config(
        "70-worker-sysctl", "worker", "etc/sysctl.d/90-net.conf", b"net.core.somaxconn = 4096\n"
    )
    edited(MASTER_SSH, "admin@example.com", "admin2@example.com")(files)


def _unused_key(files: dict[str, bytes]) -> None:
    files["machineconfigs/52-master-issue.yaml"] = file_config(
        "52-master-issue", "master", "/etc/issue", b"Welcome\n", extra="          colour: blue\n"
    )


def _secret(files: dict[str, bytes]) -> None:
    files["machineconfigs/80-worker-app-secret.yaml"] = file_config(
        "80-worker-app-secret", "worker", "/etc/app/db.conf", SECRET, extra="          mode: 384\n"
    )


CASES: Mapping[str, tuple[str, Callable[[dict[str, bytes]], None], bool]] = {
    "plain-change": ("master: a login banner", _plain, False),
    "two-pools-one-role": ("node-exporter: more memory", _two_pools, False),
    "broken-and-valid": ("worker sysctl; rotate master's admin key", _broken_and_valid, False),
    "no-registry": ("master: a login banner", _plain, True),
    "hidden-secret": ("worker: the app's database password", _secret, False),
    "unused-key": ("master: an /etc/issue", _unused_key, False),
}
"""name → (head commit subject, the pull request's edit, registry down)."""


def build(case: str) -> review.Review:
    subject, edit, down = CASES[case]
    base = examples()
    head = dict(base)
    edit(head)
    reader = FakeReader({BASE_SHA: base, HEAD_SHA: head},
                        {BASE_SHA: "main", HEAD_SHA: subject})  # fmt: skip
    planner = planning.Planner(FakeBase(down))
    return review.review_revisions(reader, BASE_SHA, HEAD_SHA, planner, None)  # type: ignore[arg-type]
