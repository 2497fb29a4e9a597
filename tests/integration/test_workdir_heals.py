"""A work dir that heals: a corrupt mirror or status file costs a warning, not a human.

Real git throughout (file:// bare repositories from `tests/fixtures/gitservers.py`);
each test breaks the mirror the way a full disk, a killed process or a stray `rm` does,
then runs the operations the loop runs (fetch, read_files, log, commit, push) and checks
that their results are right and that exactly one warning said what happened.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.adapters.git import Mirror
from reconciler.loop.status import Status, StatusStore
from tests.fixtures.gitservers import GitServer, run_git

pytestmark = pytest.mark.git

BOT = ("reconciler", "reconciler@example.test")
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CONFIGS = {f"machineconfigs/{i:02d}-c.yaml": f"c: {i}\n" for i in range(5)}


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def loose_objects(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "objects").glob("??/*") if p.is_file())


def delete_refs(cache: Path) -> None:
    shutil.rmtree(cache / "refs")  # git then no longer sees a repository at all
    (cache / "packed-refs").unlink(missing_ok=True)


def delete_head(cache: Path) -> None:
    (cache / "HEAD").unlink()


def truncate_loose_objects(cache: Path) -> None:
    for obj in loose_objects(cache):
        obj.chmod(0o644)
        obj.write_bytes(obj.read_bytes()[:10])


def truncate_pack(cache: Path) -> None:
    run_git(f"--git-dir={cache}", "repack", "-a", "-d", "-q")
    (pack,) = (cache / "objects" / "pack").glob("*.pack")
    pack.chmod(0o644)
    pack.write_bytes(pack.read_bytes()[:200])


def delete_objects(cache: Path) -> None:
    shutil.rmtree(cache / "objects")


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "refs deleted": delete_refs,
    "HEAD deleted": delete_head,
    "loose objects truncated": truncate_loose_objects,
    "pack truncated": truncate_pack,
    "objects deleted": delete_objects,
}


@pytest.fixture
def repo(git_bare: GitServer) -> tuple[GitServer, str]:
    return git_bare, git_bare.commit_files(CONFIGS, "configs")


def the_loop_works(mirror: Mirror, server: GitServer, head: str) -> None:
    """What a pass does after fetching: read, look at history, commit a pin, push it."""
    files = mirror.read_files(head, lambda p: p.startswith("machineconfigs/"))
    assert files == {p: c.encode() for p, c in CONFIGS.items()}
    assert [c.subject for c in mirror.log(head)] == ["configs", "Initial commit"]
    sha = mirror.commit(head, {"pins/worker.yaml": b"pin: 1\n"}, "Pin worker", author=BOT)
    mirror.push(sha, "main", expected_old=head)
    assert server.head() == sha
    assert server.git("show", f"{sha}:pins/worker.yaml") == "pin: 1\n"


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
@pytest.mark.parametrize("restarted", [False, True], ids=["same process", "after a restart"])
def test_a_corrupt_mirror_is_moved_aside_and_fetched_again(
    repo: tuple[GitServer, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    corrupt: Callable[[Path], None],
    restarted: bool,
) -> None:
    server, head = repo
    cache = tmp_path / "work" / "mirror"
    mirror = Mirror(server.url, cache)
    assert mirror.fetch("main") == head
    corrupt(cache)
    if restarted:
        mirror = Mirror(server.url, cache)
    caplog.set_level(logging.WARNING)

    assert mirror.fetch("main") == head
    the_loop_works(mirror, server, head)

    (warning,) = warnings(caplog)
    (aside,) = (tmp_path / "work").glob("mirror.corrupt-*")
    assert f"git mirror {cache} is corrupt" in warning
    assert f"moved it to {aside}" in warning
    assert aside.is_dir()


def test_a_read_that_finds_the_mirror_corrupt_heals_it_and_reads(
    repo: tuple[GitServer, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Corrupted after the fetch, in the same process: the fetch is a no-op (the remote
    # did not move), so it is the read that finds the damage.
    server, head = repo
    cache = tmp_path / "mirror"
    mirror = Mirror(server.url, cache)
    mirror.fetch("main")
    truncate_loose_objects(cache)
    caplog.set_level(logging.WARNING)
    assert mirror.fetch("main") == head
    assert mirror.read_files(head, lambda p: True)["machineconfigs/00-c.yaml"] == b"c: 0\n"
    assert len(warnings(caplog)) == 1
    the_loop_works(mirror, server, head)
    assert len(warnings(caplog)) == 1


def test_a_first_operation_that_is_not_a_fetch_heals_too(
    repo: tuple[GitServer, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # After a restart, a mirror read before any fetch (as `reconciler status` and the
    # review helpers do) fetches every branch again.
    server, head = repo
    cache = tmp_path / "mirror"
    Mirror(server.url, cache).fetch("main")
    truncate_pack(cache)
    caplog.set_level(logging.WARNING)
    mirror = Mirror(server.url, cache)
    assert [c.sha for c in mirror.log(head, max_count=1)] == [head]
    assert len(warnings(caplog)) == 1


def test_a_commit_lost_with_the_corrupt_mirror_is_a_transient_push_error(
    repo: tuple[GitServer, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from reconciler.errors import GitError

    server, head = repo
    cache = tmp_path / "mirror"
    mirror = Mirror(server.url, cache)
    mirror.fetch("main")
    sha = mirror.commit(head, {"pins/worker.yaml": b"pin: 1\n"}, "Pin worker", author=BOT)
    delete_refs(cache)
    caplog.set_level(logging.WARNING)
    with pytest.raises(GitError, match="went with the corrupt mirror") as err:
        mirror.push(sha, "main", expected_old=head)
    assert err.value.transient
    assert server.head() == head
    assert len(warnings(caplog)) == 1
    # The next pass commits again, in the healed mirror, and its push goes through.
    again = mirror.commit(head, {"pins/worker.yaml": b"pin: 1\n"}, "Pin worker", author=BOT)
    mirror.push(again, "main", expected_old=head)
    assert server.head() == again


def test_only_the_newest_corrupt_copy_is_kept(
    repo: tuple[GitServer, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server, head = repo
    cache = tmp_path / "mirror"
    for _ in range(3):
        mirror = Mirror(server.url, cache)
        assert mirror.fetch("main") == head
        delete_head(cache)
    caplog.set_level(logging.WARNING)
    Mirror(server.url, cache).fetch("main")
    assert len(list(tmp_path.glob("mirror.corrupt-*"))) == 1


def test_a_directory_that_is_no_mirror_is_still_left_alone(
    git_bare: GitServer, tmp_path: Path
) -> None:
    from reconciler.errors import GitError

    clutter = tmp_path / "clutter"
    clutter.mkdir()
    (clutter / "notes.txt").write_text("mine")
    with pytest.raises(GitError, match="not empty and not a git mirror"):
        Mirror(git_bare.url, clutter).fetch("main")
    assert (clutter / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob("clutter.corrupt-*"))


# --- status.json ---------------------------------------------------------------------

BAD_STATUS = {
    "garbage": b"\x89PNG\r\n\x1a\n not json",
    "truncated": b'{"repo": "r", "pools": {"worker": {"pool": "wor',
    "a list": b"[]",
    "a pool that is a number": b'{"pools": {"worker": 5}}',
    "a condition that is not an object": (
        b'{"pools": {"worker": {"pool": "worker", "conditions": {"Ready": true}}}}'
    ),
    "a field of the wrong type": b'{"pools": {"worker": {"pool": "worker", "failures": "x"}}}',
    "deeply nested": b"[" * 100_000,
    "warnings that are not strings": b'{"warnings": [1, 2]}',
}


@pytest.mark.parametrize("content", BAD_STATUS.values(), ids=BAD_STATUS.keys())
def test_an_unreadable_status_file_is_moved_aside_and_started_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(content)
    store = StatusStore(path)
    caplog.set_level(logging.WARNING)

    assert store.load() == Status()

    (warning,) = warnings(caplog)
    (aside,) = tmp_path.glob("status.json.corrupt-*")
    assert aside.read_bytes() == content
    assert f"status file {path} is unreadable" in warning
    assert str(aside) in warning
    # The loop saves after its pass; the next start reads that without complaint.
    status = Status(repo="r")
    status.pool("worker").set("Ready", True, "Pinned", "pinned", 1.0)
    store.save(status)
    assert store.load() == status
    assert len(warnings(caplog)) == 1


def test_a_status_file_from_a_newer_version_keeps_what_this_one_knows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "status.json"
    path.write_text(
        '{"repo": "r", "future": 1, "pools": {"worker": {"pool": "worker", "failures": 2,'
        ' "retry_at": 7, "later": true}}}'
    )
    loaded = StatusStore(path).load()
    assert loaded.repo == "r"
    assert loaded.pools["worker"].failures == 2
    assert loaded.pools["worker"].retry_at == 7
    assert not warnings(caplog)
