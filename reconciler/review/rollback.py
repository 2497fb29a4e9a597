"""Rollback: take a pool back to a point in its history.

Stage: review, for `reconciler rollback`. Inputs: a local repository, a pool, a point
(`--to DIGEST|REV`), a `Planner` and the registry. Output: a `RollbackResult`: the config
commits reverted (or the hold committed) on a branch, and the next pass's predictions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from reconciler.adapters.git import CommitInfo, Mirror
from reconciler.adapters.git.local import LocalRepository
from reconciler.adapters.registry import RegistryClient
from reconciler.core import history, pins
from reconciler.errors import ConfigError
from reconciler.loop import holds, planning
from reconciler.review.history import HISTORY_DEPTH, HistoryEntry, pool_history
from reconciler.review.revisions import Prediction, load_at, predict_pass

_DIGEST_PREFIX_RE = re.compile(r"^sha256:[0-9a-f]{7,64}$")

# --- rollback --------------------------------------------------------------------------------


@dataclass
class RollbackResult:
    pool: str
    mode: Literal["revert", "hold"]
    target: HistoryEntry | None
    """The pin the pool goes back to, when the point is a pin in its history."""
    point: str
    """The config commit the pool's inputs go back to (revert) or the pin commit (hold)."""
    reverted: list[CommitInfo] = field(default_factory=list)
    commit: str = ""
    """The new head (last revert commit, or the hold commit)."""
    branch: str = ""
    predictions: dict[str, Prediction] = field(default_factory=dict)


def find_point(
    pool: str, entries: list[HistoryEntry], to: str, resolve: Callable[[str], str]
) -> tuple[HistoryEntry | None, str]:
    """`--to DIGEST|REV` → (the pin entry it names, if any; the commit it names)."""
    if to.startswith("sha256:"):
        if not _DIGEST_PREFIX_RE.match(to):
            raise ConfigError.simple(
                f"{to!r} is not a digest", fix="pass sha256:<hex> as `reconciler history` shows"
            )
        matches = [e for e in entries if e.digest and e.digest.startswith(to)]
        digests = {e.digest for e in matches}
        if not matches:
            known = ", ".join(sorted({e.digest[:19] for e in entries if e.digest})) or "none"
            raise ConfigError.simple(
                f"the pool was never pinned to {to} (pins in its history: {known})",
                fix=f"pick a digest from `reconciler history --pool {pool}`",
            )
        if len(digests) > 1:
            raise ConfigError.simple(f"{to} matches several digests", fix="give more digits")
        entry = matches[-1]
        return entry, entry.commit.sha
    sha = resolve(to)
    by_commit = [e for e in entries if e.commit.sha == sha]
    if by_commit:
        return by_commit[-1], sha
    by_source = [e for e in entries if e.pin and e.pin.spec.source_commit == sha]
    return (by_source[-1] if by_source else None), sha


def commits_changing_pool(reader: Mirror, point: str, head: str, pool: str) -> list[CommitInfo]:
    """Config commits after `point` up to `head` that changed the pool's inputs, newest
    first (the order `git revert` needs). Merges are skipped: their changes come from
    the commits they merge, which are in the range too."""
    found = []
    cache: dict[str, str | None] = {}

    def fingerprint(sha: str) -> str | None:
        if sha not in cache:
            cache[sha] = holds.fingerprint(load_at(reader, sha), pool)
        return cache[sha]

    for commit in reader.log(f"{point}..{head}", max_count=HISTORY_DEPTH):
        if history.is_reconciler_commit(commit) or len(commit.parents) != 1:
            continue
        if fingerprint(commit.sha) != fingerprint(commit.parents[0]):
            found.append(commit)
    return found


def rollback(
    local: LocalRepository,
    pool: str,
    to: str,
    planner: planning.Planner,
    registry: RegistryClient,
    *,
    hold: bool = False,
    branch: str | None = None,
    author: tuple[str, str] | None = None,
) -> RollbackResult:
    """Return `pool` to an earlier point (see `reconciler rollback --help`).

    Revert (default): `git revert` of every config commit after the point that changed
    the pool's inputs, newest first; the next pass finds the earlier image by identity
    and pins it without a build. Hold: one commit writing the earlier pin file back, which
    the loop honours as an explicit hold until the pool's inputs change (DESIGN §6).
    """
    reader = local.view
    head = local.resolve("HEAD")
    entries = pool_history(reader, head, pool)
    if not any(e.pin for e in entries):
        raise ConfigError.simple(
            f"pool {pool!r} has no pins in the history of {local.path}",
            fix="check the pool name (`reconciler history` lists every pool)",
        )
    entry, sha = find_point(pool, entries, to, local.resolve)
    if hold:
        result = _hold(local, head, pool, entries, entry, sha, author)
    else:
        point = entry.pin.spec.source_commit if entry is not None and entry.pin else sha
        if not reader.is_ancestor(point, head):
            raise ConfigError.simple(
                f"{point[:10]} is not in the history of HEAD ({head[:10]})",
                fix="pick a point on the current branch (`reconciler history` lists them)",
            )
        commits = commits_changing_pool(reader, point, head, pool)
        if not commits:
            raise ConfigError.simple(
                f"no config commit since {point[:10]} changed the inputs of {pool}: "
                "nothing to revert",
                fix="to pin the earlier image anyway, pass --hold",
            )
        new = local.revert(head, [c.sha for c in commits], author)
        result = RollbackResult(pool, "revert", entry, point, commits, new)
    result.branch = local.place(result.commit, head, branch)
    result.predictions = predict_pass(reader, result.commit, planner, registry)
    return result


def _hold(
    local: LocalRepository,
    head: str,
    pool: str,
    entries: list[HistoryEntry],
    entry: HistoryEntry | None,
    sha: str,
    author: tuple[str, str] | None,
) -> RollbackResult:
    reader = local.view
    if entry is None or entry.pin is None:
        # A config commit: the newest pin made from the same inputs.
        want = holds.fingerprint(load_at(reader, sha), pool)
        same = [
            e for e in entries
            if e.pin and e.source and holds.fingerprint(load_at(reader, e.source.sha), pool) == want
        ]  # fmt: skip
        if want is None or not same:
            raise ConfigError.simple(
                f"no pin of {pool} was made from the config at {sha[:10]}",
                fix="pass a digest or pin commit from `reconciler history --pool "
                f"{pool}`, or roll back without --hold (reverts, and builds if needed)",
            )
        entry = same[-1]
    path = pins.pin_path(pool)
    data = reader.read_file(entry.commit.sha, path)
    if data is None or entry.pin is None:
        raise ConfigError.simple(f"{path} is missing at {entry.commit.sha[:10]}")
    if reader.read_file(head, path) == data:
        raise ConfigError.simple(
            f"{pool} is already pinned to {entry.pin.spec.digest} at HEAD", fix="nothing to do"
        )
    spec = entry.pin.spec
    message = (
        f"Hold {pool} at {spec.digest[7:19]} (rollback)\n\n"
        f"Pins {pool} back to {spec.image},\n"
        f"the image pinned in {entry.commit.sha[:10]} ({entry.commit.subject}).\n\n"
        "The reconciler holds the pool at this pin until its inputs change; revert this\n"
        "commit to release the hold.\n"
    )
    new = local.commit_files(head, {path: data}, message, author)
    return RollbackResult(pool, "hold", entry, entry.commit.sha, [], new)
