"""The pin history of pools: every commit that changed `pins/<pool>.yaml`.

Stage: review, for `reconciler history` and `rollback`. Input: a reader of Git objects
and a head commit. Output: `HistoryEntry`s, oldest first, classified as the loop
classifies them (`core.history.classify`) plus `removed` and `invalid`, each with the
config commit it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from reconciler.adapters.git import CommitInfo, Mirror
from reconciler.core import history, pins
from reconciler.errors import GitError
from reconciler.loop import holds

HISTORY_DEPTH = holds.HISTORY_DEPTH

# --- history ---------------------------------------------------------------------------------

HistoryKind = history.CommitKind | Literal["removed", "invalid"]
"""What a pin change did: the loop's `CommitKind`, or the pin file was removed or unreadable."""


@dataclass(frozen=True)
class HistoryEntry:
    """One commit that changed a pool's pin."""

    pool: str
    kind: HistoryKind
    commit: CommitInfo
    pin: pins.Pin | None
    """None when the pin was removed or cannot be read (`problem` says why)."""
    source: CommitInfo | None = None
    """The config commit the pin names (None if it is not in this clone)."""
    problem: str | None = None

    @property
    def digest(self) -> str | None:
        return self.pin.spec.digest if self.pin else None

    def to_json(self) -> dict[str, Any]:
        c, s = self.commit, self.source
        spec = self.pin.spec if self.pin else None
        return {
            "pool": self.pool,
            "kind": self.kind,
            "time": c.committer_time.isoformat(),
            "commit": {
                "sha": c.sha,
                "author": f"{c.author_name} <{c.author_email}>",
                "subject": c.subject,
            },
            "image": spec.image if spec else None,
            "digest": spec.digest if spec else None,
            "inputsDigest": spec.inputs_digest if spec else None,
            "renderedConfig": spec.rendered_config if spec else None,
            "builder": spec.build.builder if spec else None,
            "source": {
                "sha": spec.source_commit if spec else None,
                "author": f"{s.author_name} <{s.author_email}>" if s else None,
                "subject": s.subject if s else None,
            },
            **({"problem": self.problem} if self.problem else {}),
        }


def pool_history(reader: Mirror, head: str, pool: str | None = None) -> list[HistoryEntry]:
    """Every pin change reachable from `head`, oldest first (of one pool, or all)."""
    commits = reader.log(head, paths=["pins"], max_count=HISTORY_DEPTH)
    entries: list[HistoryEntry] = []
    earlier: dict[str, set[str]] = {}
    sources: dict[str, CommitInfo | None] = {}
    for commit in reversed(commits):
        for name in sorted(holds.touched_pools(reader, commit)):
            if pool is not None and name != pool:
                continue
            seen = earlier.setdefault(name, set())
            data = reader.read_file(commit.sha, pins.pin_path(name))
            if data is None:
                entries.append(HistoryEntry(name, "removed", commit, None))
                continue
            try:
                pin = pins.parse_pin(data, where=f"{pins.pin_path(name)} at {commit.sha[:10]}")
            except pins.PinError as exc:
                entries.append(HistoryEntry(name, "invalid", commit, None, problem=str(exc)))
                continue
            kind = history.classify(commit, name, seen, pin.spec.digest)
            source_sha = pin.spec.source_commit
            if source_sha not in sources:
                sources[source_sha] = _maybe_commit(reader, source_sha)
            entries.append(HistoryEntry(name, kind, commit, pin, sources[source_sha]))
            seen.add(pin.spec.digest)
    return entries


def _maybe_commit(reader: Mirror, sha: str) -> CommitInfo | None:
    try:
        found = reader.log(sha, max_count=1)
    except GitError:
        return None  # not in this clone (shallow, or a commit that was rewritten away)
    return found[0] if found else None
