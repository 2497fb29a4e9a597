"""What Git says about pins: the pins at a commit, who last set each, and holds.

Stage: shared by the reconcile pass (`controller`) and the commands that predict it
(`review`: `plan`, `rollback`), so a prediction can never disagree with the pass.
Input: a reader of Git objects (`Mirror`) and commit ids. Output: values.

A hold (DESIGN §6): when the newest commit that changed `pins/<pool>.yaml` is not the
reconciler's (a `git revert` of a pin commit, a hand edit), the pool stays at that pin
until its inputs change, that is until the pool's config fingerprint (its inputs as Git
states them, `identity.config_fingerprint`) differs from the one at that commit.
History alone decides it, so every replica agrees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.adapters.git import CommitInfo, Mirror
from reconciler.core import history, load, pins, verdict

HISTORY_DEPTH = 500
"""How many commits touching `pins/` are read back to find who last set each pin."""


PinCache = dict[tuple[str, bytes], pins.Pin | pins.PinError]
"""Parsed pins by (path, file bytes): a pass parses only the pins that changed."""


def is_pin_path(path: str) -> bool:
    """Whether `read_pins` reads a path (`pins/<pool>.yaml`; deeper paths are skipped)."""
    return path.startswith("pins/") and path.endswith(".yaml")


def read_pins(
    reader: Mirror,
    rev: str,
    cache: PinCache | None = None,
    files: Mapping[str, bytes | load.Unreadable] | None = None,
) -> dict[str, pins.Pin | pins.PinError]:
    """Every `pins/<pool>.yaml` at `rev`, parsed, or why it cannot be trusted. With
    `cache`, a file read before with the same bytes is not parsed again, and `cache`
    is left holding the pins at `rev` only. `files`: the files at `rev` read already
    (with every path `is_pin_path` takes), so the mirror is not read again."""
    out: dict[str, pins.Pin | pins.PinError] = {}
    if files is None:
        files = reader.read_files(rev, is_pin_path)
    seen: PinCache = {}
    for path, data in files.items():
        pool = path.removeprefix("pins/").removesuffix(".yaml")
        if not is_pin_path(path) or "/" in pool:
            continue
        if cache is not None and isinstance(data, bytes):
            hit = cache.get((path, data))
            if hit is None:
                hit = _read_pin(path, pool, data)
            out[pool] = seen[(path, data)] = hit
            continue
        out[pool] = _read_pin(path, pool, data)
    if cache is not None:
        cache.clear()
        cache.update(seen)
    return out


def _read_pin(path: str, pool: str, data: bytes | load.Unreadable) -> pins.Pin | pins.PinError:
    try:
        if isinstance(data, load.Unreadable):
            raise pins.PinError(f"{path}: {data.problem}")
        pin = pins.parse_pin(data, where=path)
        if pin.spec.pool != pool:
            raise pins.PinError(f"{path}: spec.pool is {pin.spec.pool!r}, not {pool!r}")
        return pin
    except pins.PinError as exc:
        return exc


def touched_pools(reader: Mirror, commit: CommitInfo) -> set[str]:
    """Pools whose pin file `commit` changed: from its trailers when it is the
    reconciler's, else from its diff against its first parent. A root commit (or a
    shallow boundary) sets no hold."""
    if history.is_reconciler_commit(commit):
        return set(history.pinned_pools(commit))
    if not commit.parents:
        return set()
    paths = reader.diff_paths(commit.parents[0], commit.sha)
    return {
        p.removeprefix("pins/").removesuffix(".yaml")
        for p in paths
        if p.startswith("pins/") and p.endswith(".yaml") and p.count("/") == 1
    }


def last_pin_commits(reader: Mirror, head: str, pools: Iterable[str]) -> dict[str, CommitInfo]:
    """For each pool, the newest commit (from `head`) that changed its pin."""
    pending = set(pools)
    found: dict[str, CommitInfo] = {}
    if not pending:
        return found
    for commit in reader.log(head, paths=["pins"], max_count=HISTORY_DEPTH):
        touched = touched_pools(reader, commit) & pending
        for pool in touched:
            found[pool] = commit
        pending -= touched
        if not pending:
            break
    return found


def fingerprint(repo: load.Repository, pool: str) -> str | None:
    """The pool's inputs as Git states them, or None if something blocks it."""
    judged = verdict.judge_pool(repo, pool)
    return judged.fingerprint if isinstance(judged, verdict.Ready) else None


@dataclass(frozen=True)
class Hold:
    pool: str
    commit: CommitInfo
    """The commit that set the held pin."""

    @property
    def reason(self) -> str:
        return (
            f"pin set by {self.commit.author_name} in {self.commit.sha[:10]} "
            f"({self.commit.subject!r}); held until the pool's inputs change"
        )


class HoldFinder:
    """Finds holds at a head; remembers fingerprints computed at older commits."""

    def __init__(self, reader: Mirror) -> None:
        self.reader = reader
        self._then: dict[tuple[str, str], str | None] = {}

    def holds(
        self, head: str, repo: load.Repository, pinned: Mapping[str, object]
    ) -> dict[str, Hold]:
        """Holds among the pools of `pinned` (pool → its valid pin at `head`)."""
        out = {}
        for pool, commit in last_pin_commits(self.reader, head, pinned).items():
            if history.is_reconciler_commit(commit):
                continue
            now = fingerprint(repo, pool)
            if now is not None and now == self._fingerprint_at(commit.sha, pool):
                out[pool] = Hold(pool, commit)
        return out

    def _fingerprint_at(self, sha: str, pool: str) -> str | None:
        key = (sha, pool)
        if key not in self._then:
            repo = load.load_repository(self.reader.read_files(sha, load.is_config_path))
            self._then[key] = fingerprint(repo, pool)
        return self._then[key]
