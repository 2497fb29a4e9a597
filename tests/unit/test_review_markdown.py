"""The pull-request comment as a reviewer reads it: golden markdown per case (regenerate
with `UPDATE_GOLDEN=1`), the structure a reviewer relies on (markdown-it-py, the parser
family GitHub's renderer follows: verdict first, then the table, then the details), and
what the comment must never hold (a secret, or any digest of it)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from reconciler.review import output as review_output
from tests.unit import review_cases

GOLDEN = Path(__file__).parent / "golden_markdown"


def markdown(case: str) -> str:
    env = review_cases.GITHUB_ENV if case == "broken-and-valid" else {}
    return review_output.review_markdown(review_cases.build(case), environ=env)


@pytest.mark.parametrize("case", sorted(review_cases.CASES))
def test_the_comment_matches_its_golden_file(case: str) -> None:
    text = markdown(case)
    path = GOLDEN / f"{case}.md"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"run UPDATE_GOLDEN=1 and review the diff of {path}"


def inline(token: Token) -> str:
    return "".join(c.content for c in token.children or [])


def parse(text: str) -> list[Token]:
    return MarkdownIt("commonmark").enable("table").parse(text)


def test_the_verdict_comes_first_then_the_table_then_the_details() -> None:
    tokens = parse(markdown("two-pools-one-role"))
    blocks = [t.type for t in tokens if t.level == 0 and t.nesting >= 0]
    assert blocks[0] == "paragraph_open"
    verdict = inline(tokens[1])
    assert verdict.startswith("✅ Safe to merge: reboots infra (25% of nodes at a time), "
                              "worker (2 nodes at a time)")  # fmt: skip
    assert blocks.index("table_open") < blocks.index("heading_open")
    start = next(i for i, t in enumerate(tokens) if t.type == "table_open")
    end = next(i for i, t in enumerate(tokens) if t.type == "table_close")
    table = tokens[start:end]
    header = [inline(table[i + 1]) for i, t in enumerate(table) if t.type == "th_open"]
    assert header == ["Pool", "Nodes", "Change", "Brought by", "Build", "Image after merge"]
    assert sum(t.type == "tr_open" for t in table) == 1 + 3
    cells = [inline(table[i + 1]) for i, t in enumerate(table) if t.type == "td_open"]
    assert cells[:4] == ["infra", "reboot, 25% of nodes at a time", "1 dropin (1 changed)",
                         "machineconfigs/60-worker-node-exporter.yaml (modified, via role worker)"]  # fmt: skip
    assert cells[12:14] == ["master", "no change"]
    headings = [inline(tokens[i + 1]) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == ["Pool infra: changed", "Pool worker: changed", "Unchanged pools"]
    # the same diff is printed once and referenced from the second pool
    fences = [t for t in tokens if t.type == "fence"]
    assert len(fences) == 1
    assert "Same diff as pool infra above." in [inline(t) for t in tokens if t.type == "inline"]


def test_a_broken_file_says_do_not_merge_cause_first_with_links() -> None:
    text = markdown("broken-and-valid")
    first = text.splitlines()[0]
    assert first.startswith(
        "**⛔ Do not merge:** 2 pools cannot be planned and keep their pins: "
        "infra, worker (1 problem in machineconfigs/70-worker-sysctl.yaml)"
    )
    assert "keep their pins" in first
    assert "no reboot: `master` (SSH keys, applied live)" in first
    problems = text.index("### Problems")
    # the cause (the broken file, linked to its line at the head), then the consequences
    link = ("https://github.com/acme/fleet/blob/" + review_cases.HEAD_SHA
            + "/machineconfigs/70-worker-sysctl.yaml#L12")  # fmt: skip
    assert text.index(link) > problems
    assert text.index(link) < text.index("**Consequences:** 2 pools keep their pins")


def test_without_registry_access_the_diff_and_disruption_stay_and_the_image_is_not_planned() -> (
    None
):
    result = review_cases.build("no-registry")
    assert result.changed == ["master"]
    text = review_output.review_markdown(result, environ={})
    assert text.startswith("**⛔ Do not merge:** images of master not planned")
    assert "| **reboot, 1 node at a time** |" in text
    assert "not planned: registry.example.com: connection refused" in text
    assert "+Authorised use only." in text
    assert "### Problems" not in text  # a registry is not a problem of the repository
    doc = review_output.review_json(result)
    assert doc["verdict"]["safeToMerge"] is False
    assert doc["pools"]["master"]["notPlanned"].startswith("registry.example.com")
    assert result.exit_code(detailed=True) == 1  # unchanged: errors exit 1


def test_a_hidden_secret_shows_no_digest_of_it() -> None:
    text = markdown("hidden-secret")
    secret = review_cases.SECRET
    assert secret.decode().strip() not in text
    assert "hunter2" not in text
    digests = [hashlib.new(name, secret).hexdigest() for name in ("sha256", "sha1", "md5",
                                                                   "sha512", "blake2b")]  # fmt: skip
    for digest in digests:
        for n in (7, 12, len(digest)):
            assert digest[:n] not in text
    # shown as metadata, never as a `+` line that looks like content
    fence = next(t for t in parse(text) if t.type == "fence").content
    assert not [line for line in fence.splitlines() if line.startswith("+")]
    assert "content: set, not shown (mode 0600: not readable by others, 35 bytes)" in fence
    assert "**Not shown (secret):** /etc/app/db.conf added" in text
    # and no other 64-hex run than the digests of non-secret things
    full = set(re.findall(r"[0-9a-f]{64}", text))
    assert hashlib.sha256(secret).hexdigest() not in full


def test_a_config_with_an_unused_key_shows_the_warning_apart_from_problems() -> None:
    result = review_cases.build("unused-key")
    assert result.problems == ()
    text = review_output.review_markdown(result, environ={})
    assert text.startswith("**✅ Safe to merge:**")
    assert "### Problems" not in text
    warnings = text.index("### Warnings")
    assert text.index("unused key 'colour'", warnings) < text.index("### Pool `master`")
    assert "unused key 'colour'" in review_output.review_text(result, color=False)
    doc = review_output.review_json(result)
    assert [w["file"] for w in doc["warnings"]] == ["machineconfigs/52-master-issue.yaml"]
    assert doc["problems"] == []


def test_text_output_is_coloured_only_when_asked() -> None:
    result = review_cases.build("plain-change")
    plain = review_output.review_text(result, color=False)
    assert "\x1b[" not in plain
    assert plain.splitlines()[0] == "safe to merge: reboots master (1 node at a time); 2 unchanged"
    coloured = review_output.review_text(result, color=True)
    assert "\x1b[32msafe to merge\x1b[0m" in coloured
    assert "\x1b[32m+Authorised use only.\x1b[0m" in coloured


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_colour_needs_a_terminal_and_no_NO_COLOR() -> None:
    assert review_output.use_color(_Stream(True), {}) is True  # type: ignore[arg-type]
    assert review_output.use_color(_Stream(False), {}) is False  # type: ignore[arg-type]
    assert review_output.use_color(_Stream(True), {"NO_COLOR": "1"}) is False  # type: ignore[arg-type]


def test_problems_link_to_gitlab_too() -> None:
    forge = review_output.forge_from_env({"CI_PROJECT_URL": "https://gitlab.example/ops/fleet"})
    assert forge is not None
    assert forge.link("abc", "machineconfigs/a.yaml", 3) == (
        "https://gitlab.example/ops/fleet/-/blob/abc/machineconfigs/a.yaml#L3"
    )
    assert review_output.forge_from_env({}) is None
