"""Hostile input is bounded (DESIGN.md §2, promise 9): what a repository can make us read.

Real files, FIFOs, sockets and symbolic links on this machine's file system, real gzip
and real YAML; bombs run in a child process so that its peak memory (`ru_maxrss`) is
measured alone. The Git reader's share (a link out of the tree and a 5 MiB blob in a
real repository) is at the end, against a real `git` (marked `git`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters import directory
from reconciler.adapters.git import Mirror
from reconciler.adapters.git import runner as gitmod
from reconciler.core import contents, load
from reconciler.core.load import Unreadable
from reconciler.core.yamlsource import MAX_ALIAS_VALUES, YAMLSyntaxError, parse_documents
from reconciler.errors import GitError
from tests.fixtures.gitservers import run_git

BIG = load.MAX_FILE_BYTES + 1024 * 1024
BOMB_MEMORY_KIB = 64 * 1024
"""The most a bomb may add to a process's peak memory: far below what it expands to
(1 GiB, 10^9 values), above what Python's allocator may keep from bounded work."""


def bounded_child(code: str) -> tuple[Any, int]:
    """Run `code` in a fresh Python: its part after `# --- run ---` (which sets `result`)
    is measured. Returns `result` and how much the peak RSS grew (KiB) meanwhile."""
    setup, run = code.split("# --- run ---")
    program = (
        "import json, resource, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        f"{setup}\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{run}\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'result': result, 'grew_kib': after - before}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout.decode().splitlines()[-1])
    return out["result"], int(out["grew_kib"])


# --- a directory (validate, render, plan --repo) ----------------------------------------


@pytest.fixture
def hostile_tree(tmp_path: Path) -> Path:
    """A checkout whose machineconfigs/ holds every kind of thing that is not a file."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.yaml").write_text("secret: 1\n")
    repo = tmp_path / "repo"
    mc = repo / "machineconfigs"
    mc.mkdir(parents=True)
    (repo / "shared").mkdir()
    (repo / "shared" / "chrony.yaml").write_text("chrony: 1\n")
    (repo / ".git").mkdir()
    (repo / ".git" / "config").write_text("[remote]\nurl = https://token@host/r.git\n")
    (mc / "00-plain.yaml").write_text("plain: 1\n")
    links = {
        "10-in-tree.yaml": "../shared/chrony.yaml",
        "11-chain.yaml": "10-in-tree.yaml",
        "20-out.yaml": "../../outside/secret.yaml",
        "21-passwd.yaml": "/etc/passwd",
        "22-zero.yaml": "/dev/zero",
        "23-git-config.yaml": "../.git/config",
        "30-loop.yaml": "30-loop.yaml",
        "31-dangling.yaml": "nothing.yaml",
        "40-fifo-link.yaml": "41-fifo.yaml",
        "50-dir.yaml": "../shared",
        "outdir": "../../outside",
        "51-through-outdir.yaml": "outdir/secret.yaml",
        "selfdir": ".",
    }
    for name, target in links.items():
        os.symlink(target, mc / name)
    os.mkfifo(mc / "41-fifo.yaml")
    (mc / "60-big.yaml").write_bytes(b"#" * BIG)
    return repo


@pytest.mark.timeout(30)
def test_a_directory_is_read_without_leaving_it_or_blocking(hostile_tree: Path) -> None:
    files = directory.read_config_files(hostile_tree)

    ok = {p: v for p, v in files.items() if isinstance(v, bytes)}
    assert ok == {
        "machineconfigs/00-plain.yaml": b"plain: 1\n",
        "machineconfigs/10-in-tree.yaml": b"chrony: 1\n",
        "machineconfigs/11-chain.yaml": b"chrony: 1\n",
        "shared/chrony.yaml": b"chrony: 1\n",
    }
    problems = {p: v.problem for p, v in files.items() if isinstance(v, Unreadable)}
    assert problems == {
        "machineconfigs/20-out.yaml": (
            "symbolic link to '../../outside/secret.yaml', which leads out of the repository"
        ),
        "machineconfigs/21-passwd.yaml": (
            "symbolic link to the absolute path '/etc/passwd', outside the repository"
        ),
        "machineconfigs/22-zero.yaml": (
            "symbolic link to the absolute path '/dev/zero', outside the repository"
        ),
        "machineconfigs/23-git-config.yaml": (
            "symbolic link to '../.git/config', which leads out of the repository"
        ),
        "machineconfigs/30-loop.yaml": "symbolic links lead in a loop (or a chain of more than 40)",
        "machineconfigs/31-dangling.yaml": (
            "symbolic link to 'machineconfigs/nothing.yaml', which is not a file in the repository"
        ),
        "machineconfigs/40-fifo-link.yaml": (
            "is a FIFO (the link's target 'machineconfigs/41-fifo.yaml'), not a regular file"
        ),
        "machineconfigs/41-fifo.yaml": "is a FIFO, not a regular file",
        "machineconfigs/50-dir.yaml": "symbolic link to the directory 'shared', not to a file",
        "machineconfigs/51-through-outdir.yaml": (
            "symbolic link to 'machineconfigs/outdir/secret.yaml', which leads through a link "
            "to a directory"
        ),
        "machineconfigs/60-big.yaml": (
            f"is {BIG:,} bytes, more than the {load.MAX_FILE_BYTES:,} a config file may have"
        ),
    }
    assert all(v.fix for v in files.values() if isinstance(v, Unreadable))
    # Nothing of what lies outside (or in .git) was read, under any name.
    assert not any(b"secret" in v or b"token" in v or b"root:" in v for v in ok.values())


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        yield Path(d)


@pytest.mark.timeout(30)
def test_a_socket_is_refused_not_opened(short_dir: Path) -> None:
    (short_dir / "machineconfigs").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(short_dir / "machineconfigs" / "s.yaml"))
        files = directory.read_config_files(short_dir)
    finally:
        sock.close()
    assert files == {
        "machineconfigs/s.yaml": Unreadable(
            "is a socket, not a regular file", "replace it with a regular file"
        )
    }


@pytest.mark.timeout(30)
def test_directory_links_are_not_descended_even_in_a_loop(tmp_path: Path) -> None:
    # What Git stores for a linked directory is the link, not the files beneath it, so
    # `run` would not see them: neither do `validate` and `render`.
    mc = tmp_path / "machineconfigs"
    (mc / "real").mkdir(parents=True)
    (mc / "real" / "a.yaml").write_text("a: 1\n")
    os.symlink("real", mc / "alias")
    os.symlink("..", mc / "real" / "up")
    os.symlink(".", mc / "here")
    assert directory.read_config_files(tmp_path) == {"machineconfigs/real/a.yaml": b"a: 1\n"}


# --- YAML aliases ("billion laughs") ------------------------------------------------------


def laughs(levels: int = 9, width: int = 9, merge: bool = False) -> str:
    """A MachineConfig whose kernelArguments alias 9 lists of 9 lists ... (9^9 values)."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * width)
        if merge:  # PyYAML's constructor does merge keys; the bound must hold there too
            lines.append(f"m{i}: &l{i} {{<<: *l{i - 1}, k: [{refs}]}}")
        else:
            lines.append(f"m{i}: &l{i} [{refs}]")
    if merge:
        lines[0] = "l0: &l0 {k0: [" + ", ".join(["lol"] * width) + "]}"
    return (
        "apiVersion: machineconfiguration.openshift.io/v1\n"
        "kind: MachineConfig\n"
        "metadata:\n  name: 99-laughs\n"
        "  labels: {machineconfiguration.openshift.io/role: worker}\n"
        "x-anchors:\n" + "".join(f"  {line}\n" for line in lines) + "spec:\n"
        f"  kernelArguments: *l{levels - 1}\n"
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("merge", [False, True], ids=["lists", "merge keys"])
def test_aliases_that_expand_past_the_bound_are_a_yaml_error(merge: bool) -> None:
    with pytest.raises(YAMLSyntaxError) as err:
        parse_documents(laughs(merge=merge))
    assert err.value.problem == f"YAML aliases expand to more than {MAX_ALIAS_VALUES:,} values"
    assert err.value.line is not None


@pytest.mark.timeout(60)
def test_a_billion_laughs_costs_neither_time_nor_memory() -> None:
    result, grew_kib = bounded_child(
        "from reconciler.core import load\n"
        f"text = {laughs()!r}\n"
        "# --- run ---\n"
        "repo = load.load_repository({'machineconfigs/99-laughs.yaml': text.encode()})\n"
        "result = [str(p) for p in repo.problems]\n"
    )
    assert any(
        "machineconfigs/99-laughs.yaml" in p and "YAML aliases expand to more than" in p
        for p in result
    ), result
    assert grew_kib < BOMB_MEMORY_KIB


def test_aliases_within_the_bound_still_mean_what_pyyaml_says() -> None:
    text = "a: &a {x: [1, 2]}\nb: [*a, *a]\nc: {<<: *a, y: 3}\n"
    assert parse_documents(text) == [
        {"a": {"x": [1, 2]}, "b": [{"x": [1, 2]}, {"x": [1, 2]}], "c": {"x": [1, 2], "y": 3}}
    ]
    # Nine levels of three: 3^9 ≈ 20,000 values, well within the bound.
    parse_documents(laughs(levels=9, width=3))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: &a [*a]\n", "a YAML alias refers to a node that contains it"),
        ("a: &a {b: {<<: *a}}\n", "a YAML alias refers to a node that contains it"),
        ("[" * 600 + "]" * 600, "YAML is nested too deeply"),
    ],
    ids=["recursive alias", "recursive merge", "deep nesting"],
)
def test_structures_no_config_has_are_refused_not_crashed_on(text: str, problem: str) -> None:
    with pytest.raises(YAMLSyntaxError, match=problem):
        parse_documents(text)


# --- gzip bombs -------------------------------------------------------------------------

# 1 GiB of zeros, gzip-compressed a MiB at a time (about 1 MB), as a data: URL.
GZIP_BOMB = """\
import base64, zlib
packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
zeros = bytes(1 << 20)
bomb = b"".join([packer.compress(zeros) for _ in range(1024)] + [packer.flush()])
url = "data:;base64," + base64.b64encode(bomb).decode()
del zeros
"""


@pytest.mark.timeout(60)
def test_a_gzip_bomb_is_refused_after_the_limit_not_inflated() -> None:
    result, grew_kib = bounded_child(
        "from reconciler.core import contents\n" + GZIP_BOMB + "# --- run ---\n"
        "try:\n"
        "    contents.decode_resource({'source': url, 'compression': 'gzip'})\n"
        "    result = 'inflated'\n"
        "except contents.ContentsError as exc:\n"
        "    result = exc.problem\n"
    )
    assert result.startswith(
        f"contents gunzip to more than {contents.MAX_CONTENTS_BYTES:,} bytes; a file may have"
    )
    assert grew_kib < BOMB_MEMORY_KIB


def gz(data: bytes) -> str:
    import base64
    import gzip

    return "data:;base64," + base64.b64encode(gzip.compress(data)).decode()


def test_gzip_is_decoded_as_gzip_decompress_does() -> None:
    import base64
    import gzip

    members = gzip.compress(b"hello ") + b"\0\0" + gzip.compress(b"world")
    url = "data:;base64," + base64.b64encode(members).decode()
    assert contents.decode_resource({"source": url, "compression": "gzip"}) == b"hello world"
    limit = bytes(contents.MAX_CONTENTS_BYTES)  # exactly the limit: fits
    assert contents.decode_resource({"source": gz(limit), "compression": "gzip"}) == limit
    incompressible = os.urandom(contents.MAX_CONTENTS_BYTES)
    source = gz(incompressible)
    assert contents.decode_resource({"source": source, "compression": "gzip"}) == incompressible


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"junk", "data after the gzip stream is not gzip"),
        (b"truncated", "the gzip stream ends before its end marker"),
        (b"plain", "(not gzip)"),
    ],
    ids=["trailing garbage", "truncated", "not gzip"],
)
def test_broken_gzip_says_what_is_wrong(payload: bytes, problem: str) -> None:
    import base64
    import gzip

    data = {
        b"junk": gzip.compress(b"x") + b"junk",
        b"truncated": gzip.compress(b"x" * 100)[:-5],
        b"plain": b"plain",
    }[payload]
    url = "data:;base64," + base64.b64encode(data).decode()
    with pytest.raises(contents.ContentsError, match="does not gunzip") as err:
        contents.decode_resource({"source": url, "compression": "gzip"})
    assert problem in err.value.problem


def test_a_data_url_longer_than_any_file_is_refused_before_decoding() -> None:
    import base64

    over = bytes(contents.MAX_CONTENTS_BYTES + 1)
    for source in ("data:;base64," + base64.b64encode(over).decode(), "data:," + "a" * 5_000_000):
        with pytest.raises(contents.ContentsError, match="a file may have at most 1,572,864"):
            contents.decode_resource({"source": source})
    exact = bytes(contents.MAX_CONTENTS_BYTES)
    source = "data:;base64," + base64.b64encode(exact).decode()
    assert contents.decode_resource({"source": source}) == exact


# --- the Git reader (run, plan against a remote) ----------------------------------------


@pytest.mark.git
@pytest.mark.timeout(120)
@pytest.mark.parametrize("partial", [False, True], ids=["full mirror", "partial mirror"])
def test_git_reads_refuse_links_out_and_big_blobs_without_reading_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partial: bool
) -> None:
    work = tmp_path / "work"
    run_git("init", "-q", "-b", "main", work)
    mc = work / "machineconfigs"
    mc.mkdir()
    (mc / "00-ok.yaml").write_text("ok: 1\n")
    (mc / "10-big.yaml").write_bytes(b"#" * (5 * 1024 * 1024))
    os.symlink("../../outside.yaml", mc / "20-out.yaml")
    os.symlink("/etc/passwd", mc / "21-passwd.yaml")
    os.symlink("10-big.yaml", mc / "30-to-big.yaml")
    run_git("add", "-A", cwd=work)
    run_git("-c", "user.name=A", "-c", "user.email=a@x", "commit", "-qm", "hostile", cwd=work)
    run_git("config", "uploadpack.allowFilter", "true", cwd=work)
    big_sha = run_git("rev-parse", "HEAD:machineconfigs/10-big.yaml", cwd=work).strip()

    mirror = Mirror(work, tmp_path / "m")
    head = mirror.fetch("main", filter="blob:none" if partial else None)
    fed: list[bytes] = []
    real_run = subprocess.run

    def spy(argv: Any, *args: Any, **kwargs: Any) -> Any:
        if "--batch" in argv:
            fed.append(kwargs.get("input") or b"")
        if "cat-file" in argv:
            fed.append(" ".join(map(str, argv)).encode())
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(gitmod.subprocess, "run", spy)
    files = mirror.read_files(head, load.is_config_path)

    too_big = f"is {5 * 1024 * 1024:,} bytes"
    assert files["machineconfigs/00-ok.yaml"] == b"ok: 1\n"
    for path, start in {
        "machineconfigs/10-big.yaml": too_big + ", more than",
        "machineconfigs/20-out.yaml": "symbolic link to '../outside.yaml', which is not a file",
        "machineconfigs/21-passwd.yaml": "symbolic link to '/etc/passwd', which is not a file",
        "machineconfigs/30-to-big.yaml": (
            too_big + " (the link's target 'machineconfigs/10-big.yaml'), more than"
        ),
    }.items():
        value = files[path]
        assert isinstance(value, Unreadable), (path, value)
        assert value.problem.startswith(start), (path, value)
    # The big blob's content was never asked of git, so never held in memory.
    assert fed
    assert not any(big_sha.encode() in batch for batch in fed)
    # One file at a time (how agents read a pin): refused on its size, never read.
    fed.clear()
    with pytest.raises(GitError, match="more than the"):
        mirror.read_file(head, "machineconfigs/10-big.yaml")
    assert mirror.read_file(head, "machineconfigs/00-ok.yaml") == b"ok: 1\n"
    assert not any(big_sha.encode() in batch for batch in fed)


def test_a_nested_repository_is_not_read_as_git_would_not(tmp_path: Path) -> None:
    """A submodule or a nested clone: this repository's commits hold only a pointer to
    it, so `run` never sees its files and `validate` must not either."""
    (tmp_path / "machineconfigs" / "vendor").mkdir(parents=True)
    (tmp_path / "machineconfigs" / "vendor" / ".git").write_text("gitdir: ../../.git/modules/v\n")
    (tmp_path / "machineconfigs" / "vendor" / "extra.yaml").write_text("a: 1\n")
    (tmp_path / "machineconfigs" / "own.yaml").write_text("b: 2\n")
    assert sorted(directory.read_config_files(tmp_path)) == ["machineconfigs/own.yaml"]
