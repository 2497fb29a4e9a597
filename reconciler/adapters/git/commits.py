"""Commits as git log shows them: `CommitInfo`, its trailers, and parsing `git log -z`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class CommitInfo:
    """One commit as `git log` shows it. Times are timezone-aware."""

    sha: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    author_time: datetime
    committer_name: str
    committer_email: str
    committer_time: datetime
    subject: str
    body: str
    trailers: dict[str, list[str]]
    """`Key: value` trailers as git parses them (`git interpret-trailers`), unfolded;
    a key given twice keeps both values in order."""


# Fields of `git log --format`, one per NUL-separated slot (commit messages cannot hold
# NUL: git refuses them, commit.c `commit_tree_extended`).
_LOG_FORMAT = "%x00".join(
    ["%H", "%P", "%an", "%ae", "%aI", "%cn", "%ce", "%cI", "%s", "%b", "%(trailers:only,unfold)"]
)
_LOG_FIELDS = 11


def _parse_trailers(text: str) -> dict[str, list[str]]:
    trailers: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            trailers.setdefault(key.strip(), []).append(value.strip())
    return trailers


def _parse_log(raw: bytes) -> list[CommitInfo]:
    fields = raw.decode("utf-8", "replace").split("\x00")
    if fields and fields[-1] == "":
        fields.pop()
    commits = []
    for i in range(0, len(fields) - _LOG_FIELDS + 1, _LOG_FIELDS):
        sha, parents, an, ae, at, cn, ce, ct, subject, body, trailers = fields[i : i + _LOG_FIELDS]
        commits.append(
            CommitInfo(
                sha=sha,
                parents=tuple(parents.split()),
                author_name=an,
                author_email=ae,
                author_time=datetime.fromisoformat(at),
                committer_name=cn,
                committer_email=ce,
                committer_time=datetime.fromisoformat(ct),
                subject=subject,
                body=body.rstrip("\n"),
                trailers=_parse_trailers(trailers),
            )
        )
    return commits
