"""Render the pull-request comment of the four main cases as a forge shows them: markdown
→ HTML (markdown-it-py, CommonMark plus tables, as GitHub's renderer parses it) with a
small GitHub-like stylesheet, then a screenshot with headless Chromium.

    .venv/bin/python docs/pr-comment/render.py    # PNGs (and their HTML, not committed) here

The cases are the golden markdown cases of `tests/unit/test_review_markdown.py`
(`tests/unit/review_cases.py`), so the pictures show exactly what the tests pin down.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from reconciler.review import output as review_output  # noqa: E402
from tests.unit import review_cases  # noqa: E402

OUT = Path(__file__).resolve().parent
CASES = {
    "plain-change": "A plain change: one pool reboots",
    "two-pools-one-role": "One MachineConfig reaching two pools through the worker role",
    "broken-and-valid": "A broken file next to a valid change: do not merge",
    "no-registry": "A fork's job without registry access: diff kept, image not planned",
}
CSS = """
body { font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica,
       Arial, sans-serif; font-size: 14px; line-height: 1.5; color: #1f2328; background: #fff;
       margin: 0; padding: 24px; }
.comment { border: 1px solid #d1d9e0; border-radius: 6px; max-width: 920px; }
.header { background: #f6f8fa; border-bottom: 1px solid #d1d9e0; padding: 8px 16px;
          border-radius: 6px 6px 0 0; color: #59636e; }
.header b { color: #1f2328; }
.body { padding: 16px; }
h3 { font-size: 1.25em; font-weight: 600; border-bottom: 1px solid #d1d9e0;
     padding-bottom: .3em; margin: 24px 0 16px; }
p, ul, table, pre, details { margin: 0 0 16px; }
ul { padding-left: 2em; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 85%;
       background: rgba(129,139,152,.12); padding: .2em .4em; border-radius: 6px; }
pre { background: #f6f8fa; padding: 16px; border-radius: 6px; overflow: auto; font-size: 85%;
      line-height: 1.45; }
pre code { background: none; padding: 0; font-size: 100%; }
.add { color: #116329; background: #dafbe1; display: block; }
.del { color: #82071e; background: #ffebe9; display: block; }
.hunk { color: #0550ae; display: block; }
.meta { color: #59636e; display: block; }
table { border-collapse: collapse; display: block; overflow: auto; }
th, td { border: 1px solid #d1d9e0; padding: 6px 13px; }
th { font-weight: 600; background: #f6f8fa; }
tr:nth-child(2n) td { background: #f6f8fa; }
a { color: #0969da; text-decoration: none; }
sub { color: #59636e; }
summary { cursor: pointer; }
"""


def _highlight(md: MarkdownIt) -> None:
    """`diff` fences coloured line by line, as GitHub colours them."""

    def fence(renderer, tokens, idx, options, env):  # type: ignore[no-untyped-def]
        token = tokens[idx]
        if token.info.strip() != "diff":
            return f"<pre><code>{html.escape(token.content)}</code></pre>\n"
        out = []
        for line in token.content.splitlines():
            kind = ("meta" if line.startswith(("+++", "---", "diff ")) else "add"
                    if line.startswith("+") else "del" if line.startswith("-") else "hunk"
                    if line.startswith("@@") else "")  # fmt: skip
            text = html.escape(line) or " "
            out.append(f'<span class="{kind}">{text}</span>' if kind else text + "\n")
        return "<pre><code>" + "".join(out) + "</code></pre>\n"

    md.add_render_rule("fence", fence)


def page(case: str, title: str) -> str:
    env = review_cases.GITHUB_ENV if case == "broken-and-valid" else {}
    text = review_output.review_markdown(review_cases.build(case), environ=env)
    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    _highlight(md)
    body = md.render(text)
    head = f"<b>reconciler-bot</b> commented · {html.escape(title)}"
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><div class=comment><div class=header>{head}</div>"
            f"<div class=body>{body}</div></div>")  # fmt: skip


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    for case, title in CASES.items():
        html_path = OUT / f"{case}.html"
        html_path.write_text(page(case, title))
        if chromium is None:
            continue
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--hide-scrollbars", f"--screenshot={OUT / (case + '.png')}",
                 "--window-size=1000,1400", str(html_path)],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
    if chromium is None:
        print("chromium not found: wrote the HTML only", file=sys.stderr)


if __name__ == "__main__":
    main()
