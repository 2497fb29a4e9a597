"""Build locks (`adapters/builders/buildlock.py`): one local build per inputs digest on a
host. Real: flock on real files in the test's directory, a real child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.adapters.builders import buildlock
from reconciler.errors import BuildError

INPUTS = "sha256:" + "ab" * 32


def test_one_holder_at_a_time_and_the_others_are_told_who(tmp_path: Path) -> None:
    locks = buildlock.BuildLocks(tmp_path / "locks")
    claim = locks.try_claim(INPUTS, "buildah build of r/infra:x for pool infra")
    assert claim is not None
    # another open of the same lock (another process, or another reconciler here) fails
    assert buildlock.BuildLocks(tmp_path / "locks").try_claim(INPUTS, "second") is None
    holder = locks.holder(INPUTS)
    assert holder.startswith("buildah build of r/infra:x for pool infra (pid ")
    assert f"pid {os.getpid()} on " in holder
    assert locks.is_held(INPUTS)
    claim.release()
    assert not locks.is_held(INPUTS)
    assert locks.try_claim(INPUTS, "second") is not None
    assert (tmp_path / "locks").stat().st_mode & 0o777 == 0o700


def test_a_child_that_inherits_the_lock_keeps_it_after_its_parent_lets_go(
    tmp_path: Path,
) -> None:
    locks = buildlock.BuildLocks(tmp_path / "locks")
    claim = locks.try_claim(INPUTS, "build")
    assert claim is not None
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE, pass_fds=(claim.fd,))  # fmt: skip
    try:
        os.close(claim.fd)  # the parent's descriptor is gone (as if it was killed)
        claim.fd = -1
        assert locks.is_held(INPUTS)  # the child holds it
        assert not locks.wait(INPUTS, timeout_s=0.5)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    assert locks.wait(INPUTS, timeout_s=5)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a directory of another user")
def test_a_lock_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "locks"
    other.mkdir()
    os.chown(other, 12345, 12345)
    with pytest.raises(BuildError) as info:
        buildlock.BuildLocks(other).try_claim(INPUTS, "build")
    assert str(info.value) == (
        f"the build lock directory {other} is not a directory of this user (uid 0); "
        "remove it or give another with --build-lock-dir"
    )


def test_a_lock_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    locks = buildlock.BuildLocks(tmp_path / "locks")
    (tmp_path / "locks").mkdir(mode=0o700)
    locks.path(INPUTS).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BuildError, match="is a symbolic link; remove it"):
        locks.try_claim(INPUTS, "build")
    assert not (tmp_path / "elsewhere").exists()


def test_the_default_directory_is_this_users(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert buildlock.default_dir() == tmp_path / "reconciler" / "build-locks"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert buildlock.default_dir().name == "build-locks"
    assert buildlock.default_dir().parent.name == f"reconciler-{os.getuid()}"
