"""Hostile and careless input, each case through both `reconciler validate` (on a work
tree) and `reconciler run --once` (on the bare repository it was pushed to), against the
real registry and real Git.

The repository has three managed pools: master, worker and infra (which takes worker's
configs too). It is reconciled once; then every case commits one bad change *and* a
good change to every pool (a kernel argument per role), so a pool that is not blocked
must move to a new pin and a blocked pool must keep its old one. What a user would
notice, asserted per case:
- no traceback and no exit code but 0 (all fine) or 1 (a problem);
- `validate` names exactly the expected pools as blocked, the others as fine;
- `run --once` keeps the pins of exactly those pools, pins every other one, and says
  stalled for each blocked pool; `validate`'s verdict is what `run` did.

Cases that Git cannot hold (a FIFO, a device) go through `validate` only; a commit can
never contain them. Peak memory of the worst bombs is measured in a subprocess.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from reconciler.cli import cli
from tests.fixtures.gitservers import run_git
from tests.fixtures.registry import BaseImage, RunningRegistry

pytestmark = [pytest.mark.registry, pytest.mark.git]

POOLS = frozenset({"infra", "master", "worker"})
ALL = POOLS
W = frozenset({"worker", "infra"})  # a worker-role config reaches infra too
M = frozenset({"master"})
I = frozenset({"infra"})  # noqa: E741 - the infra role
NONE: frozenset[str] = frozenset()
ROLE = "machineconfiguration.openshift.io/role"


@dataclass(frozen=True)
class Link:
    target: str


@dataclass(frozen=True)
class Fifo:
    pass


Content = str | bytes | Link | Fifo | None


@dataclass
class Case:
    id: str
    files: dict[str, Content]
    blocks: frozenset[str]
    bad: bool = True
    """`validate` fails (a problem, though perhaps no real pool is blocked)."""
    git: bool = True
    """The change can be committed (FIFOs and devices cannot)."""
    gone: frozenset[str] = NONE
    """Pools the change deletes cleanly: not judged, their pins left alone."""
    says: str = ""
    """Part of the message `validate` must print."""


# --- the repository ------------------------------------------------------------------


def pool(name: str, roles: tuple[str, ...]) -> str:
    values = ", ".join(roles)
    return f"""\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigPool
metadata:
  name: {name}
spec:
  machineConfigSelector:
    matchExpressions:
      - {{key: {ROLE}, operator: In, values: [{values}]}}
  maxUnavailable: 1
"""


def mc(name: str, role: str, spec: str) -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return f"""\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: {name}
  labels:
    {ROLE}: {role}
spec:
{body}
"""


def mosc(name: str, push: str, base: str) -> str:
    return f"""\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineOSConfig
metadata:
  name: {name}
spec:
  machineConfigPool:
    name: {name}
  baseImagePullSpec: {base}
  renderedImagePushSpec: {push}
"""


WORKER_MC = mc(
    "00-worker",
    "worker",
    """
    kernelArguments: [audit=1]
    config:
      ignition: {version: 3.4.0}
      passwd:
        users:
          - name: core
            sshAuthorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOM5WxQ1rS2C8dK3mP4v8Z0x admin"]
      storage:
        files:
          - path: /etc/worker.conf
            mode: 420
            contents: {source: "data:,worker"}
""",
)
MASTER_MC = mc(
    "00-master",
    "master",
    """
    kernelArguments: [audit=1]
    config:
      ignition: {version: 3.4.0}
      storage:
        files:
          - path: /etc/master.conf
            contents: {source: "data:,master"}
""",
)
INFRA_MC = mc("10-infra", "infra", "kernelArguments: [isolcpus=2]")
SETTINGS = """\
apiVersion: gitops.bootc.dev/v1alpha1
kind: ReconcilerConfig
metadata:
  name: fleet
spec:
  architecture: amd64
"""


def seed_files(push: str, base: str) -> dict[str, str]:
    return {
        "machineconfigpools/master.yaml": pool("master", ("master",)),
        "machineconfigpools/worker.yaml": pool("worker", ("worker",)),
        "machineconfigpools/infra.yaml": pool("infra", ("worker", "infra")),
        "machineconfigs/00-worker.yaml": WORKER_MC,
        "machineconfigs/00-master.yaml": MASTER_MC,
        "machineconfigs/10-infra.yaml": INFRA_MC,
        **{f"machineosconfigs/{p}.yaml": mosc(p, f"{push}/{p}:latest", base) for p in POOLS},
        "reconciler.yaml": SETTINGS,
    }


def bump(n: int) -> str:
    """A good change to every pool: one new kernel argument per role."""
    return "---\n".join(
        mc(f"zz-bump-{role}", role, f"kernelArguments: [bump={n}]")
        for role in ("worker", "master", "infra")
    )


# --- the cases -------------------------------------------------------------------------

WF = "machineconfigs/00-worker.yaml"
MF = "machineconfigs/00-master.yaml"
NEW = "machineconfigs/50-new.yaml"


def worker_mc(spec: str, name: str = "50-new", role: str = "worker") -> str:
    return mc(name, role, spec)


def ign(body: str) -> str:
    return "config:\n  ignition: {version: 3.4.0}\n" + textwrap.indent(
        textwrap.dedent(body).strip("\n"), "  "
    )


def laughs(depth: int = 9, width: int = 9) -> str:
    """Aliases of aliases: `width ** depth` strings from a few hundred bytes."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, depth + 1):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines)


def gzip_bomb(size: int = 1 << 30) -> str:
    """A data: URL of gzip'd zeros that inflates to `size` bytes (about 1 MiB here): one
    member of 1 MiB of zeros, repeated (gzip streams may be concatenated, RFC 1952)."""
    member = gzip.compress(b"\0" * (1 << 20), compresslevel=9)
    return "data:;base64," + base64.b64encode(member * (size >> 20)).decode()


def merge_bomb(depth: int = 9, width: int = 9) -> str:
    """`laughs` through merge keys (`<<`), which PyYAML's own constructor expands."""
    lines = ["m0: &m0 {x: lol}"]
    for i in range(1, depth + 1):
        refs = ", ".join([f"*m{i - 1}"] * width)
        lines.append(f"m{i}: &m{i} {{<<: *m{i - 1}, v: [{refs}]}}")
    return "\n".join(lines) + "\n"


BOMB = gzip_bomb()
GZ_SMALL = "data:;base64," + base64.b64encode(gzip.compress(b"fine\n")).decode()
DUP_POOL = pool("worker", ("master",))
LONG = "x" * 300


def cases() -> list[Case]:
    c = Case
    return [
        # syntax: the file's content is unknown, so it might be any pool's
        c(
            "yaml-unclosed-flow",
            {WF: WORKER_MC.replace("users:", "users: [")},
            ALL,
            says="YAML error",
        ),
        c(
            "yaml-tab-indent",
            {WF: WORKER_MC.replace("  kernelArguments", "\tkernelArguments")},
            ALL,
        ),
        c("yaml-unterminated-quote", {NEW: 'a: "open\nb: 1\n'}, ALL),
        c(
            "yaml-duplicate-key",
            {WF: WORKER_MC.replace("spec:\n", "spec:\n  fips: true\n  fips: false\n")},
            ALL,
            says="duplicate key",
        ),
        c("yaml-colon-in-scalar", {NEW: "a: b: c\n"}, ALL),
        c("yaml-python-tag", {NEW: "a: !!python/object:os.system {}\n"}, ALL),
        c("yaml-undefined-alias", {NEW: "a: *nope\n"}, ALL),
        c("yaml-bad-directive", {NEW: "%YAML 2.0\n---\na: 1\n"}, ALL),
        c("yaml-second-document-broken", {MF: MASTER_MC + "---\nkind: [\n"}, ALL),
        c("yaml-deep-nesting", {NEW: "a: " + "[" * 5000 + "]" * 5000 + "\n"}, ALL),
        c("yaml-list-key", {NEW: "? [a, b]\n: c\n"}, ALL, says="mapping key is a list"),
        c("yaml-map-key-in-mc", {NEW: worker_mc("kernelArguments: [a]\n? {x: 1}\n: y")}, ALL),
        c("yaml-empty-file", {NEW: ""}, NONE, bad=False),
        c("yaml-comments-only", {NEW: "# nothing here\n# at all\n"}, NONE, bad=False),
        c("yaml-empty-documents", {NEW: "---\n---\n---\n"}, NONE, bad=False),
        # encoding
        c(
            "latin1-bytes",
            {WF: WORKER_MC.encode().replace(b"admin", b"adm\xe9n")},
            ALL,
            says="not UTF-8",
        ),
        c("utf16-bom", {NEW: "\ufeffa: 1\n".encode("utf-16")}, ALL),
        c(
            "utf8-bom",
            {NEW: b"\xef\xbb\xbf" + worker_mc("kernelArguments: [bom=1]").encode()},
            NONE,
            bad=False,
        ),
        c("nul-byte", {WF: WORKER_MC.replace("audit=1", "audit=\0").encode()}, ALL),
        c("control-char", {NEW: "a: \x07\n"}, ALL),
        c("invalid-utf8-in-master-file", {MF: MASTER_MC.encode() + b"\n# \xff\xfe\n"}, ALL),
        c("surrogate-escape", {NEW: b"a: \xed\xa0\x80\n"}, ALL),
        # types, tied to the object by its labels or name
        c("kargs-string", {NEW: worker_mc("kernelArguments: audit=0")}, W),
        c("kargs-ints", {NEW: worker_mc("kernelArguments: [1, 2]")}, W),
        c("spec-list", {NEW: worker_mc("- 1")}, W),
        c("config-string", {NEW: worker_mc("config: hello")}, W),
        c("ignition-version-float", {NEW: worker_mc("config:\n  ignition: {version: 3.2}")}, W),
        c(
            "mode-string",
            {NEW: worker_mc(ign("storage:\n  files: [{path: /etc/a, mode: '0644'}]"))},
            W,
        ),
        c("files-mapping", {NEW: worker_mc(ign("storage:\n  files: {path: /etc/a}"))}, W),
        c("users-mapping", {NEW: worker_mc(ign("passwd:\n  users: {core: 1}"))}, W),
        c(
            "ssh-keys-string",
            {
                NEW: worker_mc(
                    ign("passwd:\n  users: [{name: core, sshAuthorizedKeys: ssh-rsa AAA}]")
                )
            },
            W,
        ),
        c("karg-nul", {NEW: worker_mc('kernelArguments: ["a\\0b"]')}, W, says="control character"),
        c(
            "uid-out-of-range",
            {
                NEW: worker_mc(
                    ign(
                        "storage:\n  files: [{path: /etc/a, user: {id: 99999999999999999999}, contents: {source: 'data:,a'}}]"
                    )
                )
            },
            W,
        ),
        c(
            "gid-negative",
            {NEW: worker_mc(ign("storage:\n  directories: [{path: /etc/d, group: {id: -3}}]"))},
            W,
        ),
        c("master-kernel-type", {NEW: worker_mc("kernelType: rt", role="master")}, M),
        c("worker-fips-string", {NEW: worker_mc("fips: 'yes'")}, W),
        c(
            "labels-list",
            {
                NEW: worker_mc("fips: true").replace(
                    f"labels:\n    {ROLE}: worker", f"labels: [{ROLE}]"
                )
            },
            ALL,
        ),
        c(
            "metadata-string",
            {
                NEW: "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata: hello\nspec: {}\n"
            },
            ALL,
        ),
        c(
            "label-value-int",
            {NEW: worker_mc("fips: true").replace(f"{ROLE}: worker", f"{ROLE}: 5")},
            ALL,
        ),
        c(
            "document-list",
            {NEW: "- apiVersion: machineconfiguration.openshift.io/v1\n- kind: MachineConfig\n"},
            ALL,
        ),
        c("document-scalar", {NEW: "just a string\n"}, ALL),
        c(
            "pool-selector-string",
            {
                "machineconfigpools/worker.yaml": pool("worker", ("worker",)).replace(
                    "machineConfigSelector:", "machineConfigSelector: x\n  old:"
                )
            },
            frozenset({"worker"}),
        ),
        c(
            "pool-max-unavailable-word",
            {
                "machineconfigpools/worker.yaml": pool("worker", ("worker",)).replace(
                    "maxUnavailable: 1", "maxUnavailable: lots"
                )
            },
            frozenset({"worker"}),
        ),
        c(
            "push-spec-int",
            {
                "machineosconfigs/master.yaml": "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineOSConfig\nmetadata: {name: master}\nspec:\n  machineConfigPool: {name: master}\n  renderedImagePushSpec: 5\n"
            },
            M,
        ),
        c(
            "settings-architecture-list",
            {"reconciler.yaml": SETTINGS.replace("architecture: amd64", "architecture: [amd64]")},
            ALL,
        ),
        c("settings-unknown-field", {"reconciler.yaml": SETTINGS + "  colour: blue\n"}, ALL),
        # kinds and API versions: not tied to any pool
        c(
            "api-version-typo",
            {NEW: worker_mc("fips: true").replace("openshift.io/v1", "openshift.io/v2")},
            ALL,
        ),
        c(
            "kind-typo",
            {NEW: worker_mc("fips: true").replace("kind: MachineConfig", "kind: MachineConfg")},
            ALL,
        ),
        c("kind-missing", {NEW: worker_mc("fips: true").replace("kind: MachineConfig\n", "")}, ALL),
        c(
            "api-version-missing",
            {
                NEW: worker_mc("fips: true").replace(
                    "apiVersion: machineconfiguration.openshift.io/v1\n", ""
                )
            },
            ALL,
        ),
        c(
            "kubelet-config",
            {
                NEW: "apiVersion: machineconfiguration.openshift.io/v1\nkind: KubeletConfig\nmetadata: {name: k}\nspec: {}\n"
            },
            ALL,
        ),
        c(
            "foreign-configmap",
            {
                "other/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n"
            },
            NONE,
            bad=False,
        ),
        c(
            "kustomization",
            {"kustomization.yaml": "resources: [machineconfigs/00-worker.yaml]\n"},
            NONE,
            bad=False,
        ),
        # names
        c("mc-name-trailing-newline", {NEW: worker_mc("fips: true", name='"50-new\\n"')}, W),
        c("mc-name-uppercase", {NEW: worker_mc("fips: true", name="50-New")}, W),
        c("mc-name-too-long", {NEW: worker_mc("fips: true", name=LONG)}, W),
        c("mc-name-unicode", {NEW: worker_mc("fips: true", name="50-nеw")}, W),
        c(
            "pool-name-trailing-newline",
            {"machineconfigpools/worker.yaml": pool('"worker\\n"', ("worker",))},
            ALL,
        ),
        c("pool-name-slash", {"machineconfigpools/x.yaml": pool("a/b", ("worker",))}, ALL),
        c("pool-name-empty", {"machineconfigpools/x.yaml": pool('""', ("worker",))}, ALL),
        c(
            "mosc-pool-mismatch",
            {
                "machineosconfigs/master.yaml": mosc(
                    "master", "x.io/a/b:latest", "x.io/c:1"
                ).replace("name: master\n  base", "name: worker\n  base")
            },
            frozenset({"master", "worker"}),
        ),
        c(
            "unit-name-no-suffix",
            {NEW: worker_mc(ign("systemd:\n  units: [{name: chronyd, enabled: true}]"))},
            W,
        ),
        c(
            "file-path-relative",
            {
                NEW: worker_mc(
                    ign("storage:\n  files: [{path: etc/a, contents: {source: 'data:,a'}}]")
                )
            },
            W,
            says="is not absolute",
        ),
        c(
            "file-path-dotdot",
            {
                NEW: worker_mc(
                    ign(
                        "storage:\n  files: [{path: /etc/../root/a, contents: {source: 'data:,a'}}]"
                    )
                )
            },
            W,
        ),
        # duplicates: every pool that takes either copy
        c(
            "duplicate-pool-name",
            {"machineconfigpools/worker-2.yaml": DUP_POOL},
            frozenset({"worker"}),
            says="defined twice",
        ),
        c(
            "duplicate-mc-other-role",
            {NEW: mc("00-worker", "master", "kernelArguments: [evil=1]")},
            W | M,
        ),
        c(
            "duplicate-mc-same-role",
            {NEW: mc("00-master", "master", "kernelArguments: [evil=1]")},
            M,
        ),
        c(
            "duplicate-mosc",
            {
                "machineosconfigs/master-2.yaml": mosc(
                    "master", "x.io/evil/master:latest", "x.io/c:1"
                )
            },
            M,
        ),
        c("duplicate-settings", {"settings-2.yaml": SETTINGS}, ALL),
        c(
            "duplicate-mc-in-one-file",
            {NEW: worker_mc("fips: true") + "---\n" + worker_mc("fips: false")},
            W,
        ),
        c(
            "duplicate-file-path",
            {NEW: worker_mc(ign("storage:\n  files: [{path: /etc/a}, {path: /etc/a}]"))},
            W,
        ),
        c("symlink-in-tree-duplicates", {NEW: Link("00-worker.yaml")}, W),
        # references
        c(
            "push-spec-digest",
            {
                "machineosconfigs/master.yaml": mosc(
                    "master", "x.io/a/master@sha256:" + "a" * 64, "x.io/c:1"
                )
            },
            M,
        ),
        c(
            "push-spec-whitespace",
            {"machineosconfigs/master.yaml": mosc("master", '"x.io/a/master :latest"', "x.io/c:1")},
            M,
        ),
        c(
            "push-spec-transport",
            {
                "machineosconfigs/master.yaml": mosc(
                    "master", "docker://x.io/a/master:latest", "x.io/c:1"
                )
            },
            M,
        ),
        c(
            "base-uppercase",
            {
                "machineosconfigs/master.yaml": mosc(
                    "master", "x.io/a/master:latest", "x.io/UPPER:1"
                )
            },
            M,
        ),
        c("os-image-url-garbage", {NEW: worker_mc('osImageURL: "not a ref!"')}, W),
        c(
            "os-image-url-transport",
            {NEW: worker_mc("osImageURL: ostree-unverified-registry:x.io/a:1", role="master")},
            M,
        ),
        c(
            "mosc-for-missing-pool",
            {"machineosconfigs/ghost.yaml": mosc("ghost", "x.io/a/g:latest", "x.io/c:1")},
            NONE,
        ),
        c("pool-selects-nothing", {"machineconfigpools/edge.yaml": pool("edge", ("edge",))}, NONE),
        c("unsupported-extension", {NEW: worker_mc("extensions: [kernel-hacks]")}, W),
        c(
            "pool-deleted-and-file-broken",
            {"machineconfigpools/worker.yaml": None, NEW: "a: [\n"},
            ALL,
        ),
        c(
            "pool-deleted-cleanly",
            {"machineconfigpools/worker.yaml": None, "machineosconfigs/worker.yaml": None},
            NONE,
            bad=False,
            gone=frozenset({"worker"}),
        ),
        # sizes
        c("file-5mib", {NEW: "# " + "x" * (5 << 20) + "\n"}, ALL, says="a config file may have"),
        c(
            "rendered-too-large",
            {
                NEW: worker_mc(
                    ign(
                        f"storage:\n  files: [{{path: /etc/big, contents: {{source: 'data:,{'y' * (2 << 20)}'}}}}]"
                    )
                )
            },
            W,
        ),
        c("karg-3mib", {NEW: worker_mc(f"kernelArguments: [{'z' * (3 << 20)}]")}, W),
        c("many-scalar-documents", {NEW: "--- 0\n" * 20000}, ALL),
        c(
            "repository-over-16mib",
            {f"machineconfigs/pad-{i}.yaml": "# " + "p" * (7 << 19) + "\n" for i in range(5)},
            ALL,
            says="in all",
        ),
        # bombs
        c(
            "billion-laughs-kargs",
            {NEW: laughs() + "\n" + worker_mc("kernelArguments: *a9")},
            ALL,
            says="alias",
        ),
        c("billion-laughs-mapping", {NEW: laughs() + "\nb: {x: *a9}\n"}, ALL),
        c("merge-key-bomb", {NEW: merge_bomb()}, ALL),
        c(
            "gzip-bomb-etc",
            {
                NEW: worker_mc(
                    ign(
                        f"storage:\n  files: [{{path: /etc/bomb, contents: {{source: '{BOMB}', compression: gzip}}}}]"
                    )
                )
            },
            W,
        ),
        c(
            "gzip-bomb-var",
            {
                NEW: worker_mc(
                    ign(
                        f"storage:\n  files: [{{path: /var/lib/bomb, contents: {{source: '{BOMB}', compression: gzip}}}}]"
                    )
                )
            },
            W,
        ),
        c(
            "gzip-fine",
            {
                NEW: worker_mc(
                    ign(
                        f"storage:\n  files: [{{path: /etc/small, contents: {{source: '{GZ_SMALL}', compression: gzip}}}}]"
                    )
                )
            },
            NONE,
            bad=False,
        ),
        # odd names: bytes that are not UTF-8, a newline
        c("file-name-not-utf8", {"machineconfigs/\udcff.yaml": "a: [\n"}, ALL),
        c(
            "file-name-newline",
            {"machineconfigs/a\nb.yaml": worker_mc("kernelArguments: [nl=1]")},
            NONE,
            bad=False,
        ),
        # links: never followed out of the tree
        c("link-etc-passwd", {NEW: Link("/etc/passwd")}, ALL),
        c("link-out-of-tree", {NEW: Link("../../outside.yaml")}, ALL),
        c("link-dev-zero", {NEW: Link("/dev/zero")}, ALL),
        c("link-dev-null", {NEW: Link("/dev/null")}, ALL),
        c(
            "link-loop",
            {NEW: Link("50-loop.yaml"), "machineconfigs/50-loop.yaml": Link("50-new.yaml")},
            ALL,
        ),
        c("link-dangling", {NEW: Link("nowhere.yaml")}, ALL),
        c("link-to-dir-named-yaml", {NEW: Link("/etc")}, ALL),
        c("link-to-outside-dir", {"machineconfigs/ext": Link("/etc")}, NONE, bad=False),
        # FIFOs and devices: a directory can hold them, a commit cannot
        c("fifo", {NEW: Fifo()}, ALL, git=False),
        c("link-to-fifo", {"machineconfigs/pipe": Fifo(), NEW: Link("pipe")}, ALL, git=False),
    ]


CASES = cases()


# --- running a case --------------------------------------------------------------------


@dataclass
class Seeded:
    bare: Path
    pins: dict[str, str]
    registry: RunningRegistry
    counter: list[int] = field(default_factory=lambda: [0])


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, registry: RunningRegistry, base_image: BaseImage
) -> Seeded:
    """A bare repository reconciled once: every pool pinned."""
    root = tmp_path_factory.mktemp("hostile")
    bare = root / "seed.git"
    run_git("init", "-q", "--bare", "-b", "main", bare)
    work = root / "seed"
    run_git("clone", "-q", bare, work)
    write(work, seed_files(f"{registry.host}/hostile", base_image.ref))
    commit_and_push(work, "seed")
    result = run_once(bare, root / "seed-work", registry)
    assert result.exit_code == 0, result.output
    return Seeded(bare, read_pins(bare), registry)


def write(work: Path, files: dict[str, Content]) -> None:
    for rel, content in files.items():
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        if content is None:
            continue
        if isinstance(content, Link):
            path.symlink_to(content.target)
        elif isinstance(content, Fifo):
            os.mkfifo(path)
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)


def commit_and_push(work: Path, message: str) -> None:
    run_git("add", "-A", cwd=work)
    run_git("-c", "user.name=Admin", "-c", "user.email=admin@example.com",
            "commit", "-q", "-m", message, cwd=work)  # fmt: skip
    run_git("push", "-q", "origin", "HEAD:main", cwd=work)


def run_once(bare: Path, work: Path, registry: RunningRegistry):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["run", "--once", "--repo", bare.as_uri(), "--work-dir",
                                    str(work), "--insecure-registry", registry.host])  # fmt: skip


def read_pins(bare: Path) -> dict[str, str]:
    names = run_git(f"--git-dir={bare}", "ls-tree", "--name-only", "main", "pins/").split()
    return {
        Path(n).stem: yaml.safe_load(run_git(f"--git-dir={bare}", "show", f"main:{n}"))["spec"][
            "digest"
        ]
        for n in names
    }


def listed(output: str, label: str) -> set[str]:
    m = re.search(rf"^{re.escape(label)}: (.*)$", output, re.MULTILINE)
    return set(m.group(1).split(", ")) if m else set()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, seeded: Seeded, tmp_path: Path) -> None:
    seeded.counter[0] += 1
    bare = tmp_path / "repo.git"
    shutil.copytree(seeded.bare, bare, symlinks=True)
    work = tmp_path / "work"
    run_git("clone", "-q", bare, work)
    write(work, {"machineconfigs/zz-bump.yaml": bump(seeded.counter[0])})
    if case.git:
        write(work, case.files)
        commit_and_push(work, f"hostile: {case.id}")
    else:  # Git cannot hold it: commit the good change, then put it in the work tree
        commit_and_push(work, "good change only")
        write(work, case.files)

    checked = CliRunner().invoke(cli, ["validate", "--repo", str(work)])
    ran = run_once(bare, tmp_path / "reconciler", seeded.registry)

    for name, result in (("validate", checked), ("run", ran)):
        assert "Traceback" not in result.output, f"{name}:\n{result.output}"
        assert result.exit_code in (0, 1), f"{name} exited {result.exit_code}:\n{result.output}"
    assert checked.exit_code == (1 if case.bad else 0), checked.output
    assert case.says in checked.output
    live = POOLS - case.gone
    if case.bad:
        assert listed(checked.output, "blocked (keep their pins)") & POOLS == case.blocks
        assert listed(checked.output, "fine (would be pinned)") & POOLS == live - case.blocks
    pins_now = read_pins(bare)
    moved = {p for p in POOLS if pins_now.get(p) != seeded.pins[p]}
    stalled = set(re.findall(r"^(\w+): stalled\b", ran.output, re.MULTILINE)) & POOLS
    if case.git:
        assert moved == live - case.blocks, ran.output
        assert stalled == set(case.blocks), ran.output
        assert ran.exit_code == (1 if case.bad else 0), ran.output
    else:
        assert moved == live, ran.output  # the commit holds the good change only


# --- the loop survives a bug in one pool ------------------------------------------------


def test_a_core_exception_in_one_pool_stalls_it_and_the_others_are_pinned(
    seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.core.image import layout

    real = layout.plan_image

    def broken_for_master(rendered, *args, **kw):  # type: ignore[no-untyped-def]
        if rendered.pool == "master":
            raise KeyError("surprise")
        return real(rendered, *args, **kw)

    monkeypatch.setattr(layout, "plan_image", broken_for_master)
    bare = tmp_path / "repo.git"
    shutil.copytree(seeded.bare, bare, symlinks=True)
    work = tmp_path / "work"
    run_git("clone", "-q", bare, work)
    write(work, {"machineconfigs/zz-bump.yaml": bump(10_000)})
    commit_and_push(work, "good change")
    ran = run_once(bare, tmp_path / "reconciler", seeded.registry)
    assert ran.exit_code == 1
    assert "internal error" in ran.output
    assert "KeyError" in ran.output
    assert "Traceback" not in ran.output
    pins_now = read_pins(bare)
    assert pins_now["master"] == seeded.pins["master"]
    assert {p for p in POOLS if pins_now[p] != seeded.pins[p]} == {"worker", "infra"}


def test_an_unexpected_exception_is_one_line_and_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.cli import repository as cli_module

    def boom(*_a: object, **_k: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli_module, "load_checked", boom)
    result = CliRunner().invoke(cli, ["validate", "--repo", "."])
    assert result.exit_code == 3
    assert result.output.strip().splitlines() == [
        "error: internal error while running validate: ZeroDivisionError: division by zero "
        "(a bug in the reconciler: please report it; --debug shows the traceback)"
    ]


# --- memory -------------------------------------------------------------------------------

WORST = ["billion-laughs-kargs", "merge-key-bomb", "gzip-bomb-etc", "file-5mib", "karg-3mib",
         "link-dev-zero", "many-scalar-documents"]  # fmt: skip


def test_peak_memory_of_the_worst_cases_is_bounded(tmp_path: Path) -> None:
    """Each of the worst cases in a fresh `validate` process: its peak RSS stays within
    64 MiB of an idle validate of the same repository.

    The peak is the process's own VmHWM, read as it exits: `ru_maxrss` from wait4 would
    count pytest's own memory, which Linux carries into a child across fork and exec.
    """
    base = seed_files("x.io/hostile", "x.io/base:1")
    report = textwrap.dedent("""
        import atexit, runpy, sys
        out = sys.argv[1]
        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    open(out, "w").write(line.split()[1])
        atexit.register(hwm)
        sys.argv = ["reconciler", *sys.argv[2:]]
        runpy.run_module("reconciler", run_name="__main__")
    """)  # fmt: skip

    def peak(files: dict[str, Content], name: str) -> int:
        repo = tmp_path / name
        write(repo, {**base, **files})
        out = tmp_path / f"{name}.hwm"
        proc = subprocess.run(
            [sys.executable, "-c", report, str(out), "validate", "--repo", str(repo)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
            env={**os.environ, "PYTHONSAFEPATH": "1"},
        )  # fmt: skip
        assert proc.returncode in (0, 1)
        return int(out.read_text())  # KiB

    idle = peak({}, "idle")
    by_case = {c.id: c for c in CASES}
    worst = {name: peak(by_case[name].files, name) for name in WORST}
    print(
        f"\npeak RSS, KiB: idle validate {idle}; " + ", ".join(f"{k} {v}" for k, v in worst.items())
    )
    assert max(worst.values()) < idle + 64 * 1024, worst


# --- a property: random mutations of a valid repository -----------------------------------

TOKENS = ["[", "]", ":", "\t", '"', "&x", "*x", "- ", "{", "\n  ", "#", "!!binary "]
SWAPS = [("worker", "master"), ("420", '"420"'), ("true", "1"), ("3.4.0", "3.9.0"),
         ("/etc/", "etc/"), ("name: ", "name: X"), ("kernelArguments", "kernelArgs"),
         ("spec:", "spec: []\nx:"), ("In", "Maybe"), ("amd64", "s390")]  # fmt: skip


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, str, int, int]]:
    """(file, operation, position, choice) tuples, applied in order."""
    files = sorted(seed_files("h", "b"))
    ops = ["insert", "delete-line", "duplicate-line", "truncate", "swap", "delete-file",
           "copy-file", "bytes"]  # fmt: skip
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(files),
                st.sampled_from(ops),
                st.integers(0, 10_000),
                st.integers(0, 100),
            ),
            min_size=1,
            max_size=3,
        )
    )


def mutate(work: Path, steps: list[tuple[str, str, int, int]]) -> None:
    for rel, op, pos, choice in steps:
        path = work / rel
        if not path.exists():
            continue
        data = path.read_bytes()
        lines = data.split(b"\n")
        at, line = pos % (len(data) + 1), pos % len(lines)
        if op == "insert":
            data = data[:at] + TOKENS[choice % len(TOKENS)].encode() + data[at:]
        elif op == "delete-line":
            data = b"\n".join(lines[:line] + lines[line + 1 :])
        elif op == "duplicate-line":
            data = b"\n".join(lines[: line + 1] + lines[line:])
        elif op == "truncate":
            data = data[:at]
        elif op == "swap":
            old, new = SWAPS[choice % len(SWAPS)]
            data = data.replace(old.encode(), new.encode(), 1)
        elif op == "bytes":
            data = data[:at] + bytes([0xFF, choice % 32]) + data[at:]
        elif op == "delete-file":
            path.unlink()
            continue
        elif op == "copy-file":
            path = path.with_name(f"copy-{choice}-{path.name}")
        path.write_bytes(data)


DONE = ("pinned", "unchanged", "unmanaged")
"""What `run` says of a pool `validate` calls fine (unmanaged: rendered, no image)."""


def states(output: str) -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9-]+): (\w+)", output, re.MULTILINE))


@settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "40")), deadline=None,
          derandomize="HOSTILE_EXAMPLES" not in os.environ, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(steps=mutations())
def test_validate_and_run_agree_on_random_mutations(
    seeded: Seeded, tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, str, int, int]]
) -> None:
    """`validate` passes ⇒ `run` pins every pool; it fails ⇒ the pools it names as blocked
    keep their pins (stalled) and the pools it names as fine are pinned."""
    root = tmp_path_factory.mktemp("mutant")
    bare = root / "repo.git"
    shutil.copytree(seeded.bare, bare, symlinks=True)
    work = root / "work"
    run_git("clone", "-q", bare, work)
    seeded.counter[0] += 1
    write(work, {"machineconfigs/zz-bump.yaml": bump(seeded.counter[0])})
    mutate(work, steps)
    commit_and_push(work, "mutated")
    checked = CliRunner().invoke(cli, ["validate", "--repo", str(work)])
    ran = run_once(bare, root / "reconciler", seeded.registry)
    assert "Traceback" not in checked.output + ran.output
    assert checked.exit_code in (0, 1)
    assert ran.exit_code in (0, 1)
    got = {p: s for p, s in states(ran.output).items() if s != "no"}
    if checked.exit_code == 0:
        fine = set(re.findall(r"([a-z0-9-]+)=rendered-", checked.output))
        assert ran.exit_code == 0, ran.output
        assert {p for p, s in got.items() if s in DONE} == fine, ran.output
        return
    blocked = listed(checked.output, "blocked (keep their pins)")
    fine = listed(checked.output, "fine (would be pinned)")
    assert {p for p, s in got.items() if s == "stalled"} == blocked, (checked.output, ran.output)
    assert {p for p, s in got.items() if s in DONE} == fine, ran.output
    pins_now = read_pins(bare)
    for p in blocked & POOLS:
        assert pins_now.get(p) == seeded.pins[p], f"{p} moved though validate blocked it"


def test_plan_names_a_pinned_pool_whose_own_file_broke(tmp_path: Path) -> None:
    """`plan --repo` judges like `validate`: a pool known only from its pin, whose file
    no longer parses, is reported as blocked rather than left out."""
    repo = tmp_path / "repo"
    write(repo, seed_files("127.0.0.1:1/hostile", "127.0.0.1:1/base:1"))
    write(repo, {"pins/worker.yaml": "# a pin\n", "machineconfigpools/worker.yaml": "a: [\n"})
    checked = CliRunner().invoke(cli, ["validate", "--repo", str(repo)])
    planned = CliRunner().invoke(cli, ["plan", "--repo", str(repo), "-o", "json",
                                       "--insecure-registry", "127.0.0.1:1"])  # fmt: skip
    assert "worker" in listed(checked.output, "blocked (keep their pins)")
    assert planned.exit_code == 1
    items = {p["pool"]: p for p in json.loads(planned.stdout)["items"]}
    assert "worker" in items
    assert "machineconfigpools/worker.yaml" in items["worker"]["error"]
