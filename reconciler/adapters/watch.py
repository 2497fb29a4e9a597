"""Watching a local repository: a commit on disk starts a pass at once.

Stage: a trigger for the loop, like webhooks. Input: the path of a local repository
(work tree or bare). It watches the repository's ref storage with watchfiles (inotify
on Linux) and sets an event when a ref changes; the pass then asks Git for the head
as usual, so spurious events cost one `ls-remote` of a local path.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import watchfiles

log = logging.getLogger(__name__)


def git_dir(path: Path) -> Path | None:
    """The repository's git directory (`.git` of a work tree, or a bare repository)."""
    if (path / ".git").is_dir():
        return path / ".git"
    if (path / "HEAD").is_file() and (path / "refs").is_dir():
        return path
    return None


class RepositoryWatcher:
    """Sets `trigger` whenever refs change under a local repository."""

    def __init__(self, repo: Path, trigger: threading.Event) -> None:
        found = git_dir(repo)
        if found is None:
            raise ValueError(f"{repo} is not a git repository")
        self.git_dir = found
        self.trigger = trigger
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="repo-watch")

    def _relevant(self, change: watchfiles.Change, path: str) -> bool:
        rel = Path(path).relative_to(self.git_dir).as_posix()
        return rel.startswith("refs/") or rel in ("packed-refs", "HEAD")

    def _watch(self) -> None:
        for changes in watchfiles.watch(
            self.git_dir,
            watch_filter=self._relevant,
            stop_event=self._stop,
            debounce=50,
            rust_timeout=500,
            yield_on_timeout=False,
        ):
            log.debug("repository %s changed: %s", self.git_dir, changes)
            self.trigger.set()

    def start(self) -> RepositoryWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
