"""The Git adapter against real servers: file://, git daemon, smart HTTP, sshd.

What a user of the reconcile loop and the node agent relies on: the remote head is
one `ls-remote`; a pass where nothing moved fetches nothing; files are read at any
revision without a checkout; pin commits are made without a work tree and pushed as
compare-and-swap; credentials never leak into messages.
"""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.git import GitAuth, Mirror, remote_head
from reconciler.adapters.git import runner as gitmod
from reconciler.core.load import Unreadable
from reconciler.errors import GitError, PushRejected
from tests.fixtures.gitservers import GitServer, make_ssh_key, run_git

pytestmark = pytest.mark.git

BOT = ("reconciler", "reconciler@example.test")
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def git_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every git command line the adapter runs while the test watches."""
    calls: list[list[str]] = []
    real_run = subprocess.run

    def spy(argv: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(argv, list) and argv and argv[0] == "git":
            calls.append([str(a) for a in argv])
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(gitmod.subprocess, "run", spy)
    return calls


def subcommands(calls: list[list[str]]) -> list[str]:
    """`fetch`, `ls-remote`, ... : the git subcommand of each call, options skipped."""
    out = []
    for argv in calls:
        rest = argv[1:]
        while rest and (rest[0].startswith("-") or rest[0] in ("-c",)):
            rest = rest[2:] if rest[0] == "-c" else rest[1:]
        out.append(rest[0] if rest else "")
    return out


def run_cmd(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, check=True).stdout.decode()


def mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


# --- over every transport --------------------------------------------------------------


def test_remote_head_is_the_branch_head_on_the_server(git_server: GitServer) -> None:
    assert remote_head(git_server.url, "main", git_server.auth) == git_server.head()
    new = git_server.commit_files({"machineconfigs/a.yaml": "a: 1\n"}, "add a")
    assert remote_head(git_server.url, "main", git_server.auth) == new
    assert remote_head(git_server.url, "no-such-branch", git_server.auth) is None


def test_remote_head_is_one_ls_remote(git_server: GitServer, git_calls: list[list[str]]) -> None:
    remote_head(git_server.url, "main", git_server.auth)
    assert subcommands(git_calls) == ["ls-remote"]


def test_fetch_only_when_the_remote_moved(
    git_server: GitServer, tmp_path: Path, git_calls: list[list[str]]
) -> None:
    cache = tmp_path / "mirror"
    mirror = Mirror(git_server.url, cache, git_server.auth)
    first = mirror.fetch("main")
    assert first == git_server.head()
    fetch_head = cache / "FETCH_HEAD"
    seen = mtime(fetch_head)
    assert seen is not None
    requests_before = len(git_server.requests)

    git_calls.clear()
    assert mirror.fetch("main") == first
    # Nothing moved: one ls-remote, no fetch (FETCH_HEAD untouched).
    assert subcommands(git_calls) == ["ls-remote"]
    assert mtime(fetch_head) == seen
    if git_server.transport == "http":
        # What the server saw is what a bare `git ls-remote` costs: the ref
        # advertisement and one ls-refs request, and no pack request.
        assert [m for m, _ in git_server.requests[requests_before:]] == ["GET", "POST"]

    moved = git_server.commit_files({"machineconfigs/a.yaml": "a: 2\n"}, "change a")
    assert mirror.fetch("main") == moved
    assert mtime(fetch_head) != seen
    assert mirror.read_file(moved, "machineconfigs/a.yaml") == b"a: 2\n"

    # A restart on the same cache: the mirror already holds the head, nothing to fetch.
    seen = mtime(fetch_head)
    git_calls.clear()
    restarted = Mirror(git_server.url, cache, git_server.auth)
    assert restarted.fetch("main") == moved
    assert "fetch" not in subcommands(git_calls)
    assert mtime(fetch_head) == seen


def test_read_files_at_a_revision_without_a_checkout(git_server: GitServer, tmp_path: Path) -> None:
    old = git_server.commit_files(
        {
            "machineconfigs/50-chrony.yaml": "chrony: old\n",
            "machineconfigs/nested/deep/x.yaml": "x: 1\n",
            "pins/worker.yaml": "pin: old\n",
            "blob.bin": bytes(range(256)),
            "dir with space/f.yaml": "s: 1\n",
        },
        "config",
    )
    new = git_server.commit_files(
        {"machineconfigs/50-chrony.yaml": "chrony: new\n", "pins/worker.yaml": None}, "update"
    )
    mirror = Mirror(git_server.url, tmp_path / "mirror", git_server.auth)
    assert mirror.fetch("main") == new

    at_old = mirror.read_files(old, lambda p: p.startswith("machineconfigs/"))
    assert at_old == {
        "machineconfigs/50-chrony.yaml": b"chrony: old\n",
        "machineconfigs/nested/deep/x.yaml": b"x: 1\n",
    }
    at_new = mirror.read_files(new, lambda p: True)
    assert at_new["machineconfigs/50-chrony.yaml"] == b"chrony: new\n"
    assert "pins/worker.yaml" not in at_new
    assert at_new["blob.bin"] == bytes(range(256))
    assert at_new["dir with space/f.yaml"] == b"s: 1\n"

    assert mirror.read_file(old, "pins/worker.yaml") == b"pin: old\n"
    assert mirror.read_file(new, "pins/worker.yaml") is None
    assert mirror.read_file(new, "dir with space/f.yaml") == b"s: 1\n"
    with pytest.raises(GitError, match="is a tree, not a file"):
        mirror.read_file(new, "machineconfigs")
    with pytest.raises(GitError, match="fetch it first"):
        mirror.read_file("0" * 40, "pins/worker.yaml")

    # A bare mirror: no work tree, none of the repository's files on disk.
    assert (
        run_git(f"--git-dir={tmp_path / 'mirror'}", "rev-parse", "--is-bare-repository").strip()
        == "true"
    )
    on_disk = {p.name for p in (tmp_path / "mirror").rglob("*")}
    assert not on_disk & {"50-chrony.yaml", "x.yaml", "worker.yaml", "README.md", "index"}


def test_commit_without_a_work_tree_then_push(
    git_server: GitServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = git_server.commit_files({"pins/old.yaml": "old\n", "pins/keep.yaml": "keep\n"}, "pins")
    mirror = Mirror(git_server.url, tmp_path / "mirror", git_server.auth)
    assert mirror.fetch("main") == base
    scratch_tmp = tmp_path / "tmp"
    scratch_tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch_tmp))
    listing_before = sorted(
        p.relative_to(mirror.path).as_posix()
        for p in mirror.path.rglob("*")
        if "objects" not in p.parts
    )

    message = "Pin worker\n\nPool: worker\nImage: reg.example/pools/worker@sha256:" + "a" * 64
    sha = mirror.commit(
        base,
        {"pins/worker.yaml": b"image: new\n", "pins/keep.yaml": b"kept\n", "pins/old.yaml": None},
        message,
        author=BOT,
        committer=("ops", "ops@example.test"),
        date=WHEN,
    )
    # No work tree, no index, nothing left in the temp dir; only new objects.
    assert list(scratch_tmp.iterdir()) == []
    listing_after = sorted(
        p.relative_to(mirror.path).as_posix()
        for p in mirror.path.rglob("*")
        if "objects" not in p.parts
    )
    assert listing_after == listing_before
    assert git_server.head() == base  # not pushed yet

    mirror.push(sha, "main", expected_old=base)
    assert git_server.head() == sha
    assert remote_head(git_server.url, "main", git_server.auth) == sha
    # Read back by git itself, on the server.
    assert git_server.git("ls-tree", "-r", "--name-only", sha).split() == [
        "README.md",
        "pins/keep.yaml",
        "pins/worker.yaml",
    ]
    assert git_server.git("show", f"{sha}:pins/worker.yaml") == "image: new\n"
    assert git_server.git("show", f"{sha}:pins/keep.yaml") == "kept\n"
    assert git_server.git("rev-parse", f"{sha}^") == base + "\n"
    fmt = "%an <%ae>|%cn <%ce>|%aI|%B"
    assert git_server.git("show", "-s", f"--format={fmt}", sha) == (
        f"reconciler <reconciler@example.test>|ops <ops@example.test>|2026-01-02T03:04:05+00:00|{message}\n\n"
    )
    # After our own push the next pass is a no-op: the mirror knows its own commit.
    assert mirror.fetch("main") == sha


def test_commit_is_deterministic_and_skips_empty_changes(
    git_bare: GitServer, tmp_path: Path
) -> None:
    base = git_bare.head()
    assert base is not None
    a = Mirror(git_bare.url, tmp_path / "a")
    b = Mirror(git_bare.url, tmp_path / "b")
    a.fetch("main")
    b.fetch("main")
    changes: dict[str, bytes | None] = {"pins/w.yaml": b"w\n", "pins/x.yaml": b"x\n"}
    sha_a = a.commit(base, changes, "Pin w and x", author=BOT, date=WHEN)
    sha_b = b.commit(base, dict(reversed(changes.items())), "Pin w and x\n", author=BOT, date=WHEN)
    assert sha_a == sha_b
    # Writing what is already there, or deleting what is not, makes no commit.
    assert (
        a.commit(sha_a, {"pins/w.yaml": b"w\n", "pins/gone.yaml": None}, "noop", author=BOT)
        == sha_a
    )


def test_push_is_compare_and_swap(git_server: GitServer, tmp_path: Path) -> None:
    head = git_server.head()
    assert head is not None
    one = Mirror(git_server.url, tmp_path / "one", git_server.auth)
    two = Mirror(git_server.url, tmp_path / "two", git_server.auth)
    assert one.fetch("main") == two.fetch("main") == head

    first = one.commit(head, {"pins/a.yaml": b"from one\n"}, "one", author=BOT)
    second = two.commit(head, {"pins/a.yaml": b"from two\n"}, "two", author=BOT)
    one.push(first, "main", expected_old=head)
    with pytest.raises(PushRejected) as rejected:
        two.push(second, "main", expected_old=head)
    assert git_server.url.split("://")[0] in str(rejected.value)
    # The first writer's commit stands; the second's never reached the server.
    assert git_server.head() == first
    assert git_server.git("cat-file", "-t", first).strip() == "commit"
    assert second not in git_server.git("rev-list", "--all")

    # The loser fetches, re-plans on the new head and retries: both commits kept.
    new_head = two.fetch("main")
    assert new_head == first
    retry = two.commit(new_head, {"pins/b.yaml": b"from two\n"}, "two again", author=BOT)
    two.push(retry, "main", expected_old=new_head)
    assert git_server.head() == retry
    assert git_server.git("rev-list", "main").split() == [retry, first, head]


def test_two_replicas_pushing_the_same_commit_make_one_commit(
    git_server: GitServer, tmp_path: Path
) -> None:
    head = git_server.head()
    assert head is not None
    shas = []
    for name in ("one", "two"):
        mirror = Mirror(git_server.url, tmp_path / name, git_server.auth)
        mirror.fetch("main")
        sha = mirror.commit(head, {"pins/w.yaml": b"w\n"}, "Pin w", author=BOT, date=WHEN)
        mirror.push(sha, "main", expected_old=head)
        shas.append(sha)
    assert shas[0] == shas[1] == git_server.head()
    assert git_server.git("rev-list", "--count", "main").strip() == "2"


def test_shallow_partial_fetch_then_log_and_read(git_server: GitServer, tmp_path: Path) -> None:
    for i in range(3):
        git_server.commit_files({f"machineconfigs/m{i}.yaml": f"m: {i}\n"}, f"config {i}")
    last = git_server.commit_files(
        {"pins/worker.yaml": "pin: 1\n"},
        "Pin worker\n\nPool: worker\nSource-Commit: " + "b" * 40,
    )
    cache = tmp_path / "mirror"
    mirror = Mirror(git_server.url, cache, git_server.auth)
    assert mirror.fetch("main", depth=1, filter="blob:none") == last
    (only,) = mirror.log(last)
    assert only.sha == last
    assert only.trailers == {"Pool": ["worker"], "Source-Commit": ["b" * 40]}
    # The filter took effect: file contents are not in the mirror until read.
    listing = run_git(
        f"--git-dir={cache}", "rev-list", "--objects", "--missing=print", "--no-walk", last
    )
    assert sum(line.startswith("?") for line in listing.splitlines()) >= 4
    assert mirror.read_file(last, "pins/worker.yaml") == b"pin: 1\n"
    files = mirror.read_files(last, lambda p: p.startswith("machineconfigs/"))
    assert files == {f"machineconfigs/m{i}.yaml": f"m: {i}\n".encode() for i in range(3)}

    # A full fetch later deepens the shallow mirror to the whole history.
    assert mirror.fetch("main") == last
    assert len(mirror.log(last)) == 5


def commits_in(cache: Path) -> int:
    out = run_git(f"--git-dir={cache}", "cat-file", "--batch-all-objects", "--batch-check")
    return sum(line.split()[1] == "commit" for line in out.splitlines())


def test_fetch_commit_brings_one_older_commit_into_a_shallow_mirror(
    git_server: GitServer, tmp_path: Path, git_calls: list[list[str]]
) -> None:
    # What the agent does for the pin's sourceCommit: the head moved on since.
    source = git_server.commit_files({"machineconfigs/m.yaml": "m: old\n"}, "config")
    for i in range(3):
        head = git_server.commit_files({"machineconfigs/m.yaml": f"m: {i}\n"}, f"config {i}")
    cache = tmp_path / "mirror"
    mirror = Mirror(git_server.url, cache, git_server.auth)
    assert mirror.fetch("main", depth=1, filter="blob:none") == head

    mirror.fetch_commit(source, "main", filter="blob:none")

    assert mirror.read_files(source, lambda p: True)["machineconfigs/m.yaml"] == b"m: old\n"
    assert commits_in(cache) == 2  # the head and that one, none in between
    assert source in (cache / "shallow").read_text().split()
    # present now: asking again fetches nothing
    git_calls.clear()
    mirror.fetch_commit(source, "main", filter="blob:none")
    assert "fetch" not in subcommands(git_calls)


def test_fetch_commit_from_a_server_that_refuses_unadvertised_wants(
    git_bare: GitServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Protocol v0 without uploadpack.allowReachableSHA1InWant (or AnySHA1, which the
    # test servers set): the commit cannot be asked for by id, so the branch's history
    # is fetched instead.
    run_git(f"--git-dir={git_bare.path}", "config", "--unset", "uploadpack.allowAnySHA1InWant")
    source = git_bare.commit_files({"a.yaml": "a: 1\n"}, "config")
    for i in range(3):
        git_bare.commit_files({"a.yaml": f"a: {i + 2}\n"}, f"config {i}")
    cache = tmp_path / "mirror"
    mirror = Mirror(git_bare.url, cache)
    mirror.fetch("main", depth=1)
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.version")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "0")
    v0 = Mirror(git_bare.url, cache)

    v0.fetch_commit(source, "main")

    assert v0.read_file(source, "a.yaml") == b"a: 1\n"
    assert commits_in(cache) == 4 + 1  # the whole history (and the fixture's first commit)
    # a commit the branch does not have (rewritten history) is a clear, lasting error
    with pytest.raises(GitError, match="commit 0123456789ab is not on branch 'main'") as info:
        v0.fetch_commit("0123456789abcdef0123456789abcdef01234567", "main")
    assert info.value.transient is False
    with pytest.raises(ValueError, match="not a commit id"):
        v0.fetch_commit("--upload-pack=evil", "main")


def test_log_paths_trailers_ancestry_and_diff(git_server: GitServer, tmp_path: Path) -> None:
    root = git_server.head()
    assert root is not None
    cfg = git_server.commit_files({"machineconfigs/a.yaml": "a: 1\n"}, "config a")
    pin = git_server.commit_files(
        {"pins/worker.yaml": "pin: 1\n", "pins/infra.yaml": "pin: 1\n"},
        "Pin worker, infra\n\nBody line.\n\nPool: worker\nPool: infra\n"
        "Inputs-Digest: sha256:" + "c" * 64 + "\nFolded: one\n  two\n",
        author=BOT,
    )
    other = git_server.commit_files({"machineconfigs/b.yaml": "b\n"}, "config b")
    mirror = Mirror(git_server.url, tmp_path / "mirror", git_server.auth)
    mirror.fetch("main")

    log = mirror.log(other)
    assert [c.sha for c in log] == [other, pin, cfg, root]
    assert log[0].parents == (pin,)
    (pinned,) = mirror.log(other, paths=["pins/worker.yaml"])
    assert pinned.sha == pin
    assert (pinned.author_name, pinned.author_email) == BOT
    assert pinned.subject == "Pin worker, infra"
    assert pinned.body.startswith("Body line.")
    assert pinned.trailers == {
        "Pool": ["worker", "infra"],
        "Inputs-Digest": ["sha256:" + "c" * 64],
        "Folded": ["one two"],
    }
    assert pinned.author_time.tzinfo is not None
    assert [c.sha for c in mirror.log(other, paths=["machineconfigs/"])] == [other, cfg]
    assert [c.sha for c in mirror.log(other, max_count=2)] == [other, pin]
    assert [c.sha for c in mirror.log(f"{cfg}..{other}")] == [other, pin]

    assert mirror.is_ancestor(cfg, other)
    assert mirror.is_ancestor(other, other)
    assert not mirror.is_ancestor(other, cfg)
    assert mirror.diff_paths(cfg, other) == [
        "machineconfigs/b.yaml",
        "pins/infra.yaml",
        "pins/worker.yaml",
    ]


def test_missing_branch_and_bad_branch_name_are_clear(
    git_server: GitServer, tmp_path: Path
) -> None:
    mirror = Mirror(git_server.url, tmp_path / "mirror", git_server.auth)
    with pytest.raises(GitError, match="branch 'nope' does not exist") as missing:
        mirror.fetch("nope")
    assert not missing.value.transient
    with pytest.raises(GitError, match="not a valid branch name") as bad:
        mirror.fetch("-upload-pack=evil")
    assert not bad.value.transient


# --- authentication --------------------------------------------------------------------


def _all_text(exc: BaseException) -> str:
    """Everything a log line could show of an error, its causes included."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen), *(str(a) for a in seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def test_http_wrong_password_is_clear_and_secret_free(git_http: GitServer, tmp_path: Path) -> None:
    secret = "wrong-s3cret-password"
    auth = GitAuth.basic(git_http.username or "", secret)
    with pytest.raises(GitError) as err:
        remote_head(git_http.url, "main", auth)
    assert not err.value.transient
    assert "ls-remote" in str(err.value)
    assert git_http.url in str(err.value)
    assert "refused the credentials; check the username and password or token" in str(err.value)
    assert secret not in _all_text(err.value)
    assert secret not in repr(auth)

    # The same with the password written into the URL: the URL shown is redacted.
    host = git_http.url.removeprefix("http://")
    with pytest.raises(GitError) as err:
        Mirror(f"http://{git_http.username}:{secret}@{host}", tmp_path / "m").fetch("main")
    assert f"http://{git_http.username}:***@{host}" in str(err.value)
    assert secret not in _all_text(err.value)


def test_http_without_credentials_says_so(git_http: GitServer) -> None:
    with pytest.raises(GitError, match="server wants credentials") as err:
        remote_head(git_http.url, "main")
    assert not err.value.transient


def test_http_token_and_url_credentials_stay_out_of_argv(
    git_http: GitServer, tmp_path: Path, git_calls: list[list[str]]
) -> None:
    assert git_http.token
    assert git_http.password
    head = git_http.head()
    assert remote_head(git_http.url, "main", GitAuth.token(git_http.token)) == head
    host = git_http.url.removeprefix("http://")
    mirror = Mirror(f"http://{git_http.username}:{git_http.password}@{host}", tmp_path / "m")
    assert mirror.fetch("main") == head
    sha = mirror.commit(head, {"pins/w.yaml": b"w\n"}, "pin", author=BOT)
    mirror.push(sha, "main", expected_old=head)
    assert git_http.head() == sha
    argv = "\n".join(" ".join(c) for c in git_calls)
    assert git_http.token not in argv
    assert git_http.password not in argv
    # ... nor in the mirror's config on disk.
    assert git_http.password not in (tmp_path / "m" / "config").read_text()


def test_ssh_unknown_key_is_refused_clearly(git_ssh: GitServer, tmp_path: Path) -> None:
    stranger = make_ssh_key(tmp_path / "stranger")
    auth = GitAuth.ssh(stranger, known_hosts=git_ssh.known_hosts)
    with pytest.raises(GitError, match="refused the SSH key") as err:
        remote_head(git_ssh.url, "main", auth)
    assert not err.value.transient


def test_ssh_host_key_is_checked(git_ssh: GitServer, tmp_path: Path) -> None:
    assert git_ssh.ssh_key
    assert git_ssh.known_hosts
    impostor = make_ssh_key(tmp_path / "impostor")
    port = git_ssh.url.split(":")[2].split("/")[0]
    wrong = tmp_path / "known_hosts.wrong"
    kind, key = (tmp_path / "impostor.pub").read_text().split()[:2]
    wrong.write_text(f"[127.0.0.1]:{port} {kind} {key}\n")
    assert impostor.exists()
    with pytest.raises(GitError, match="host key") as err:
        remote_head(git_ssh.url, "main", GitAuth.ssh(git_ssh.ssh_key, known_hosts=wrong))
    assert not err.value.transient

    # Trust on first use: an empty known_hosts learns the key, and it works.
    tofu = tmp_path / "known_hosts.new"
    tofu.write_text("")
    auth = GitAuth.ssh(git_ssh.ssh_key, known_hosts=tofu, host_key_checking="accept-new")
    assert remote_head(git_ssh.url, "main", auth) == git_ssh.head()
    found = run_cmd("ssh-keygen", "-F", f"[127.0.0.1]:{port}", "-f", str(tofu))
    assert (git_ssh.known_hosts.read_text().split()[2]) in found


def test_ssh_deploy_key_cannot_run_commands(git_ssh: GitServer) -> None:
    """The fixture's key is restricted to git-shell, as a real deploy key should be."""
    assert git_ssh.ssh_key
    port = git_ssh.url.split(":")[2].split("/")[0]
    proc = subprocess.run(
        ["ssh", "-i", str(git_ssh.ssh_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={git_ssh.known_hosts}", "-p", port,
         f"{git_ssh.url.split('//')[1].split('@')[0]}@127.0.0.1", "id"],
        capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    assert proc.returncode != 0
    assert b"unrecognized command" in proc.stderr


def test_ssh_missing_key_file_is_named(git_ssh: GitServer, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="does not exist") as err:
        remote_head(git_ssh.url, "main", GitAuth.ssh(tmp_path / "no-such-key"))
    assert "no-such-key" in str(err.value)


# --- local repositories and unreachable servers ----------------------------------------


def test_local_working_repository(tmp_path: Path) -> None:
    work = tmp_path / "work"
    run_git("init", "-q", "-b", "main", work)
    (work / "machineconfigs").mkdir()
    (work / "machineconfigs" / "a.yaml").write_text("a: 1\n")
    run_git("add", "-A", cwd=work)
    run_git("-c", "user.name=A", "-c", "user.email=a@x", "commit", "-qm", "init", cwd=work)
    head = run_git("rev-parse", "HEAD", cwd=work).strip()

    for given in (work, work.as_uri()):
        mirror = Mirror(given, tmp_path / f"m{len(str(given))}")
        assert mirror.fetch("main") == head
        assert mirror.read_files(head, lambda p: True) == {"machineconfigs/a.yaml": b"a: 1\n"}

    sha = mirror.commit(head, {"pins/w.yaml": b"w\n"}, "pin", author=BOT)
    with pytest.raises(GitError) as err:
        mirror.push(sha, "main", expected_old=head)
    assert not isinstance(err.value, PushRejected)
    assert not err.value.transient
    assert "bare repository" in str(err.value)
    assert run_git("rev-parse", "HEAD", cwd=work).strip() == head  # the checkout is untouched
    mirror.push(sha, "pins", expected_old=None)  # another branch is fine
    assert run_git("rev-parse", "refs/heads/pins", cwd=work).strip() == sha


def test_unreachable_server_is_transient(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(GitError) as err:
        Mirror(f"git://127.0.0.1:{port}/x.git", tmp_path / "m").fetch("main")
    assert err.value.transient
    assert f"git://127.0.0.1:{port}/x.git" in str(err.value)


def test_missing_repository_is_not_transient(git_daemon: GitServer) -> None:
    url = git_daemon.url.rsplit("/", 1)[0] + "/does-not-exist.git"
    with pytest.raises(GitError) as err:
        remote_head(url, "main")
    assert not err.value.transient
    assert "check the repository URL" in str(err.value)


def test_push_refuses_a_commit_not_built_on_the_expected_head(
    git_bare: GitServer, tmp_path: Path
) -> None:
    head = git_bare.head()
    assert head is not None
    mirror = Mirror(git_bare.url, tmp_path / "m")
    mirror.fetch("main")
    orphan = mirror.commit(None, {"pins/w.yaml": b"w\n"}, "orphan", author=BOT)
    with pytest.raises(ValueError, match="is not built on"):
        mirror.push(orphan, "main", expected_old=head)
    # And a stale expected head (branch gone from under us) is never forced over.
    with pytest.raises(PushRejected):
        mirror.push(orphan, "main", expected_old=None)
    assert git_bare.head() == head


def test_commit_and_push_from_a_shallow_partial_mirror_download_no_files(
    git_server: GitServer, tmp_path: Path
) -> None:
    head = git_server.commit_files({f"machineconfigs/m{i}.yaml": f"{i}\n" for i in range(10)}, "c")
    cache = tmp_path / "mirror"
    mirror = Mirror(git_server.url, cache, git_server.auth)
    mirror.fetch("main", depth=1, filter="blob:none")

    def missing() -> int:
        out = run_git(
            f"--git-dir={cache}", "rev-list", "--objects", "--missing=print", "--no-walk", head
        )
        return sum(line.startswith("?") for line in out.splitlines())

    before = missing()
    assert before >= 10
    sha = mirror.commit(head, {"pins/w.yaml": b"w\n"}, "Pin w", author=BOT)
    mirror.push(sha, "main", expected_old=head)
    assert missing() == before
    assert git_server.head() == sha
    assert git_server.git("show", f"{sha}:machineconfigs/m3.yaml") == "3\n"
    assert git_server.git("show", f"{sha}:pins/w.yaml") == "w\n"


def test_misuse_is_refused_with_a_reason(git_bare: GitServer, tmp_path: Path) -> None:
    clutter = tmp_path / "clutter"
    clutter.mkdir()
    (clutter / "notes.txt").write_text("mine")
    with pytest.raises(GitError, match="not empty and not a git mirror"):
        Mirror(git_bare.url, clutter).fetch("main")
    assert (clutter / "notes.txt").read_text() == "mine"

    mirror = Mirror(git_bare.url, tmp_path / "m")
    head = mirror.fetch("main")
    for bad in ("/etc/passwd", "../x", "a//b", ".git/config", "pins/../x"):
        with pytest.raises(ValueError, match="not a relative repository file path"):
            mirror.commit(head, {bad: b"x"}, "bad", author=BOT)
    with pytest.raises(ValueError, match="commit message is empty"):
        mirror.commit(head, {"pins/w.yaml": b"w"}, " \n", author=BOT)
    with pytest.raises(ValueError, match="not a commit identity"):
        mirror.commit(head, {"pins/w.yaml": b"w"}, "m", author=("x", "<evil>"))
    with pytest.raises(GitError, match="fetch it first"):
        mirror.commit("f" * 40, {"pins/w.yaml": b"w"}, "m", author=BOT)
    assert git_bare.head() == head


def test_blobs_read_before_are_not_read_again(tmp_path: Path, git_calls: list[list[str]]) -> None:
    """With the caller's blob cache, a read of the next commit reads only the blobs that
    are new (a pass reads the one file that changed), and gives what a read without it
    gives, links followed."""
    work = tmp_path / "work"
    run_git("init", "-q", "-b", "main", work)
    (work / "machineconfigs").mkdir()
    (work / "machineconfigs" / "a.yaml").write_text("a: 1\n")
    (work / "machineconfigs" / "b.yaml").write_text("b: 1\n")
    os.symlink("a.yaml", work / "machineconfigs" / "c.yaml")
    run_git("add", "-A", cwd=work)
    run_git("-c", "user.name=A", "-c", "user.email=a@x", "commit", "-qm", "one", cwd=work)
    mirror = Mirror(work, tmp_path / "m")
    first = mirror.fetch("main")
    blobs: dict[str, bytes] = {}
    wanted = lambda p: p.startswith("machineconfigs/")  # noqa: E731
    assert mirror.read_files(first, wanted, blobs) == mirror.read_files(first, wanted)
    assert len(blobs) == 3  # a, b and the link
    git_calls.clear()
    assert mirror.read_files(first, wanted, blobs)["machineconfigs/c.yaml"] == b"a: 1\n"
    assert subcommands(git_calls) == ["ls-tree"]  # every blob known: none read

    (work / "machineconfigs" / "a.yaml").write_text("a: 2\n")
    run_git("-c", "user.name=A", "-c", "user.email=a@x", "commit", "-qam", "two", cwd=work)
    second = mirror.fetch("main")
    git_calls.clear()
    files = mirror.read_files(second, wanted, blobs)
    assert files == mirror.read_files(second, wanted)
    assert files["machineconfigs/c.yaml"] == files["machineconfigs/a.yaml"] == b"a: 2\n"
    assert subcommands(git_calls)[:2] == ["ls-tree", "cat-file"]
    assert len(blobs) == 3  # the blobs of this read only: the old a.yaml is gone
    assert b"a: 1\n" not in blobs.values()


def test_symbolic_links_are_read_as_a_checkout_would(tmp_path: Path) -> None:
    work = tmp_path / "work"
    run_git("init", "-q", "-b", "main", work)
    (work / "shared").mkdir()
    (work / "shared" / "chrony.yaml").write_text("chrony: 1\n")
    (work / "machineconfigs").mkdir()
    os.symlink("../shared/chrony.yaml", work / "machineconfigs" / "50-chrony.yaml")
    os.symlink("50-chrony.yaml", work / "machineconfigs" / "51-again.yaml")
    run_git("add", "-A", cwd=work)
    run_git("-c", "user.name=A", "-c", "user.email=a@x", "commit", "-qm", "links", cwd=work)
    mirror = Mirror(work, tmp_path / "m")
    head = mirror.fetch("main")
    assert mirror.read_files(head, lambda p: p.startswith("machineconfigs/")) == {
        "machineconfigs/50-chrony.yaml": b"chrony: 1\n",
        "machineconfigs/51-again.yaml": b"chrony: 1\n",
    }

    os.symlink("/etc/hostname", work / "machineconfigs" / "60-outside.yaml")
    run_git("add", "-A", cwd=work)
    run_git("-c", "user.name=A", "-c", "user.email=a@x", "commit", "-qm", "bad link", cwd=work)
    head = mirror.fetch("main")
    # A problem of that file (loading reports it), not an error that ends the pass.
    files = mirror.read_files(head, lambda p: p.startswith("machineconfigs/"))
    assert files["machineconfigs/50-chrony.yaml"] == b"chrony: 1\n"
    assert files["machineconfigs/60-outside.yaml"] == Unreadable(
        "symbolic link to '/etc/hostname', which is not a file in the repository",
        "commit the file itself, or point the link at a file in the repository",
    )
