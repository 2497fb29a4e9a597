"""Build locks: one local build per inputs digest on this host, whoever starts it.

Stage: build, for the buildah builder. Input: a lock directory that every reconciler
process of this user on this host shares, and a build's inputs digest. Output: a held
lock (an `flock` on `<dir>/<64 hex>.lock`, the holder's description written into it)
or the description of whoever holds it now.

Why flock: the kernel releases it when the last descriptor of it closes, so a
reconciler that dies cannot leave a stale lock; the build's process tree inherits the
descriptor (`Claim.fd`), so a build whose reconciler was killed keeps the lock until
the build itself is gone, and nobody starts a second one meanwhile. Lock files are
never deleted (deleting a lock file others may have open lets two holders in); they
are a few bytes each.

The default directory is per user and host (`$XDG_RUNTIME_DIR/reconciler/build-locks`,
else `<tmp>/reconciler-<uid>/build-locks`), made 0700 and refused when another user
owns it: a lock another user could hold would let them stop our builds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

from reconciler.errors import BuildError

POLL_S = 0.25


def default_dir() -> Path:
    """The lock directory reconciler processes of this user on this host share."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "reconciler" / "build-locks"
    return Path(tempfile.gettempdir()) / f"reconciler-{os.getuid()}" / "build-locks"


class Claim:
    """A held build lock; `release` (or the end of a `with`) lets the next one in."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class BuildLocks:
    """The lock directory (module docstring)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_dir()
        self._checked = False

    def path(self, inputs_digest: str) -> Path:
        return self.directory / f"{inputs_digest.split(':', 1)[-1]}.lock"

    def try_claim(self, inputs_digest: str, holder: str) -> Claim | None:
        """The lock for these inputs, or None when someone holds it (`holder` is what
        others are told: who builds, what, since when)."""
        claim = self._try_lock(inputs_digest)
        if claim is not None:
            os.ftruncate(claim.fd, 0)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            os.pwrite(claim.fd, f"{holder} (pid {os.getpid()} on {socket.gethostname()}, "
                                f"since {stamp})\n".encode(), 0)  # fmt: skip
        return claim

    def holder(self, inputs_digest: str) -> str:
        """Who holds (or last held) the lock, as they described themselves."""
        try:
            text = self.path(inputs_digest).read_text(errors="replace").strip()
        except OSError:
            text = ""
        return text.splitlines()[0][:300] if text else "another reconciler process"

    def is_held(self, inputs_digest: str) -> bool:
        claim = self._try_lock(inputs_digest)
        if claim is None:
            return True
        claim.release()
        return False

    def wait(
        self,
        inputs_digest: str,
        stop: threading.Event | None = None,
        timeout_s: float | None = None,
    ) -> bool:
        """Block until nobody holds the lock (True), polling so that `stop` (a
        `threading.Event`) or `timeout_s` can end the wait (False)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if not self.is_held(inputs_digest):
                return True
            if stop is not None and stop.is_set():
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)

    def _try_lock(self, inputs_digest: str) -> Claim | None:
        path = self.path(inputs_digest)
        fd = self._open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return Claim(fd, path)

    def _open(self, path: Path) -> int:
        self._check_dir()
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BuildError(f"build lock {path} is a symbolic link; remove it",
                                 transient=False) from None  # fmt: skip
            raise BuildError(f"cannot open build lock {path}: {exc.strerror}; check "
                             "--build-lock-dir", transient=True) from None  # fmt: skip

    def _check_dir(self) -> None:
        if self._checked:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            info = os.lstat(self.directory)
        except OSError as exc:
            raise BuildError(
                f"cannot create the build lock directory {self.directory}: {exc.strerror}; "
                "give a writable one with --build-lock-dir",
                transient=False,
            ) from None
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise BuildError(
                f"the build lock directory {self.directory} is not a directory of this user "
                f"(uid {os.getuid()}); remove it or give another with --build-lock-dir",
                transient=False,
            )
        with contextlib.suppress(OSError):
            os.chmod(self.directory, 0o700)
        self._checked = True
