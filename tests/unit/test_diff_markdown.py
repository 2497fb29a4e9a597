"""The plan's markdown stays within what a PR comment takes: long diffs are collapsed,
then shortened with a note, never silently cut in the middle of a fence."""

from __future__ import annotations

from datetime import UTC, datetime

from markdown_it import MarkdownIt

from reconciler.adapters.git import CommitInfo
from reconciler.core import diff
from reconciler.review import output as review_output
from reconciler.review import revisions as review


def commit(sha: str, subject: str) -> CommitInfo:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return CommitInfo(sha * 40, (), "Admin", "a@example.test", when, "Admin",
                      "a@example.test", when, subject, "", {})  # fmt: skip


def big_review(lines: int) -> review.Review:
    old = {
        "f": diff.Item("file", "/etc/big", "".join(f"a{i}\n" for i in range(lines)), (), "/etc/big")
    }
    new = {
        "f": diff.Item("file", "/etc/big", "".join(f"b{i}\n" for i in range(lines)), (), "/etc/big")
    }
    diffs = tuple(diff.diff_items(old, new))
    pool = review.PoolReview("worker", "changed", None, None, diffs, diff.classify(diffs))
    return review.Review(commit("a", "base"), commit("b", "head"), {"worker": pool}, ())


def test_a_huge_diff_is_shortened_to_fit_a_comment_and_still_parses() -> None:
    text = review_output.review_markdown(big_review(5000), max_chars=20_000, environ={})
    assert len(text) <= 20_000
    assert "more lines not shown: run `reconciler plan --base aaaaaaaaaa --head bbbbbbbbbb`" in text
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    fences = [t for t in tokens if t.type == "fence"]
    assert [f.info for f in fences] == ["diff"]
    assert fences[0].content.startswith("diff --rendered /etc/big\n")


def test_a_short_diff_is_shown_in_full_and_not_collapsed() -> None:
    text = review_output.review_markdown(big_review(3), environ={})
    assert "<summary>Rendered config diff" not in text
    assert "-a2\n" in text
    assert "+b2\n" in text
    assert "more lines not shown" not in text
    # what changed is said outside any fold
    assert "- **Changes:** `/etc/big` changed" in text
