"""How `plan --base/--head`, `history` and `rollback` print: text, markdown, JSON.

Stage: presentation, after `review`. Inputs: `review.Review`, history entries, a
`RollbackResult`. Outputs: strings and JSON-able dicts; no I/O.

The markdown is written for a pull/merge request comment: a heading, a summary table
(one row per pool), the problems grouped by file, then one section per changed pool
with its facts and the rendered-config diff in a ```diff fence; diffs longer than
`COLLAPSE_LINES` go into a `<details>` block. GitHub refuses comments above 65,536
characters, so diffs are shortened (and say so) until the comment fits `max_chars`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from reconciler import planning
from reconciler.core import diff, reference
from reconciler.errors import ConfigProblem
from reconciler.review import (
    AGENT_NOTE,
    HistoryEntry,
    PoolReview,
    Review,
    RollbackResult,
)

COLLAPSE_LINES = 30
MAX_COMMENT_CHARS = 60_000
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


# --- plan ------------------------------------------------------------------------------------


def _changes_summary(r: PoolReview) -> str:
    if r.status == "unchanged":
        return "unchanged"
    if r.status == "error":
        return "cannot render or plan"
    if r.status == "removed":
        return "pool removed"
    counts: dict[str, int] = defaultdict(int)
    for d in r.diffs:
        counts[d.item.kind] += 1
    words = {
        "file": "file", "directory": "directory", "link": "link", "unit": "unit",
        "dropin": "dropin", "user": "user",
    }  # fmt: skip
    parts = []
    for kind, n in counts.items():
        if kind in words:
            noun = words[kind] + ("s" if n > 1 and kind != "directory" else "")
            noun = "directories" if kind == "directory" and n > 1 else noun
            parts.append(f"{n} {noun}")
        else:
            parts.append(
                {
                    "kernelArguments": "kernel arguments",
                    "sshKeys": "SSH keys",
                    "extensions": "extensions",
                    "kernelType": "kernel type",
                    "fips": "FIPS",
                    "baseImage": "base image",
                    "extensionsImage": "extensions image",
                    "containerFile": "Containerfile",
                    "pushSpec": "push spec",
                    "ignition": "other Ignition sections",
                }[kind]
            )
    prefix = "new pool: " if r.status == "added" else ""
    return prefix + (", ".join(parts) or "no rendered difference")


def _build_summary(r: PoolReview) -> str:
    outcome = r.outcome
    if r.status in ("unchanged", "removed"):
        return ""
    if isinstance(outcome, planning.Unmanaged) or (r.head and r.head.os_config is None):
        return "unmanaged (no MachineOSConfig)"
    if isinstance(outcome, planning.PoolPlan):
        return outcome.builder
    return "cannot plan" if outcome is not None else ""


def _image_after(r: PoolReview, short: bool) -> str:
    plan = r.plan
    if plan is None:
        return ""
    repo = reference.repository(plan.target)
    if r.existing_digest:
        digest = r.existing_digest
        how = "already in the registry: pinned without a build"
    elif plan.predicted_digest:
        digest = plan.predicted_digest
        how = "predicted; built natively on merge"
    else:
        return f"known after the {plan.builder} build"
    if short:
        return f"`{digest[:19]}…` ({'exists' if r.existing_digest else 'predicted'})"
    return f"`{repo}@{digest}` ({how})"


def review_json(review: Review) -> dict[str, Any]:
    pools: dict[str, Any] = {}
    for name, r in sorted(review.pools.items()):
        entry: dict[str, Any] = {"status": r.status, "changes": _changes_summary(r)}
        if r.base is not None and r.base.error is not None:
            entry["baseError"] = str(r.base.error)
        if r.base and r.base.rendered:
            entry["baseRenderedConfig"] = r.base.rendered.name
        if r.head and r.head.rendered:
            entry["renderedConfig"] = r.head.rendered.name
        if r.status in ("changed", "added", "removed"):
            entry["items"] = [
                {"name": d.name, "kind": d.item.kind, "status": d.status} for d in r.diffs
            ]
            entry["diff"] = diff.render(r.diffs)
            if r.disruption is not None:
                entry["disruption"] = r.disruption.to_json()
        if r.outcome is not None:
            entry["plan"] = r.outcome.summary()
        if r.plan is not None:
            entry["existingDigest"] = r.existing_digest
            entry["digestAfterMerge"] = r.digest_after_merge
        if r.lookup_error:
            entry["lookupError"] = r.lookup_error
        pools[name] = entry
    return {
        "base": {"sha": review.base.sha, "subject": review.base.subject},
        "head": {"sha": review.head.sha, "subject": review.head.subject},
        "changed": review.changed,
        "pools": pools,
        "problems": [{"file": p.file, "line": p.line, "message": str(p)} for p in review.problems],
        "errors": list(review.errors),
        "note": AGENT_NOTE,
    }


def review_text(review: Review) -> str:
    lines = [
        f"plan {review.base.sha[:10]}..{review.head.sha[:10]} "
        f"({len(review.changed)} of {len(review.pools)} pools change)"
    ]
    for name, r in sorted(
        review.pools.items(), key=lambda kv: (kv[1].status == "unchanged", kv[0])
    ):
        if r.status == "unchanged":
            lines.append(f"{name}: unchanged")
            continue
        head = f"{name}: {r.status}"
        if r.disruption is not None:
            head += f", disruption: {r.disruption.summary}"
        build = _build_summary(r)
        if build:
            head += f", build: {build}"
        lines.append(head)
        rows = []
        if (r.base and r.base.rendered) or (r.head and r.head.rendered):
            old = r.base.rendered.name if r.base and r.base.rendered else "-"
            new = r.head.rendered.name if r.head and r.head.rendered else "-"
            rows.append(("rendered config", f"{old} -> {new}"))
        rows.append(("changes", _changes_summary(r)))
        if r.base is not None and r.base.error is not None:
            rows.append(("base", "did not render (shown against nothing)"))
        if r.plan is not None:
            rows.append(("inputs digest", r.plan.inputs_digest))
            rows.append(("image after merge", _image_after(r, short=False).replace("`", "")))
        if r.lookup_error:
            rows.append(("registry", r.lookup_error))
        lines += [f"  {k:19}{v}" for k, v in rows]
        if r.disruption is not None:
            lines += [f"  - {reason}" for reason in r.disruption.reasons]
        text = diff.render(r.diffs)
        if text:
            lines += ["", text.rstrip("\n"), ""]
    if review.problems:
        lines.append("problems at the head:")
        lines += [f"  {p}" for p in review.problems]
    lines += [f"error: {e}" for e in review.errors]
    if review.changed:
        lines.append(f"note: {AGENT_NOTE}")
    return "\n".join(lines)


def review_markdown(review: Review, max_chars: int = MAX_COMMENT_CHARS) -> str:
    """The plan as a PR comment that fits `max_chars` (diffs shortened if needed)."""
    for cap in (None, 200, 50, 10, 0):
        text = _markdown(review, cap)
        if len(text) <= max_chars:
            return text
    return text[: max_chars - 40] + "\n\n…(cut to fit a comment)\n"


def _markdown(review: Review, cap: int | None) -> str:
    base, head = review.base.sha[:10], review.head.sha[:10]
    out = [f"## Reconciler plan: `{base}` → `{head}`", ""]
    n = len(review.changed)
    verdict = "no pool changes" if not n else f"{n} of {len(review.pools)} pools change"
    if review.failed:
        verdict += "; **problems must be fixed before merge**"
    out += [f"{verdict}.", ""]
    out += [
        "| Pool | Change | Disruption (MCO policy) | Build | Image after merge |",
        "| --- | --- | --- | --- | --- |",
    ]
    order = sorted(review.pools.items(), key=lambda kv: (kv[1].status == "unchanged", kv[0]))
    for name, r in order:
        disruption = ""
        if r.disruption is not None:
            s = r.disruption.summary
            disruption = "**reboot**" if r.disruption.reboot else _cell(s)
        cells = [f"`{name}`", _cell(_changes_summary(r)), disruption,
                 _cell(_build_summary(r)), _image_after(r, short=True)]  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    if review.changed:
        out += [f"> {AGENT_NOTE}", ""]
    if review.problems or review.errors:
        out += ["### Problems", ""]
        by_file: dict[str, list[ConfigProblem]] = defaultdict(list)
        for p in review.problems:
            by_file[p.file or "(repository)"].append(p)
        for file, problems in sorted(by_file.items()):
            out.append(f"**`{file}`**")
            out.append("")
            for p in problems:
                where = f"line {p.line}: " if p.line else ""
                text = str(p).removeprefix(f"{p.file}:{p.line}: " if p.line else f"{p.file}: ")
                out.append(f"- {where}{_md(text)}")
            out.append("")
        for e in review.errors:
            out.append(f"- {_md(e)}")
        if review.errors:
            out.append("")
    for name, r in order:
        if r.status in ("unchanged", "error"):
            continue
        out += _pool_section(review, name, r, cap)
    unchanged = [f"`{n}`" for n, r in order if r.status == "unchanged"]
    if unchanged:
        out += ["### Unchanged pools", "", ", ".join(unchanged), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _pool_section(review: Review, name: str, r: PoolReview, cap: int | None) -> list[str]:
    out = [f"### Pool `{name}`: {r.status}", ""]
    if r.disruption is not None:
        out.append(f"- **Disruption:** {_md(r.disruption.summary)}")
        out += [f"  - {_md(reason)}" for reason in r.disruption.reasons]
    if (r.base and r.base.rendered) or (r.head and r.head.rendered):
        old = f"`{r.base.rendered.name}`" if r.base and r.base.rendered else "none"
        new = f"`{r.head.rendered.name}`" if r.head and r.head.rendered else "none"
        out.append(f"- **Rendered config:** {old} → {new}")
    if r.base is not None and r.base.error is not None:
        out.append("- **Base:** did not render; the diff is against nothing")
    build = _build_summary(r)
    if build:
        why = ""
        if r.plan is not None and r.plan.image.reasons:
            why = f" ({_md('; '.join(r.plan.image.reasons))})"
        elif r.plan is not None:
            why = " (config-only layer: digest known before the build)"
        out.append(f"- **Build:** {_md(build)}{why}")
    if r.plan is not None:
        out.append(f"- **Inputs digest:** `{r.plan.inputs_digest}`")
        out.append(f"- **Image after merge:** {_image_after(r, short=False)}")
    if r.lookup_error:
        out.append(f"- **Registry:** {_md(r.lookup_error)}")
    out.append("")
    lines = diff.render(r.diffs).splitlines()
    if not lines:
        return out
    shown = lines if cap is None else lines[:cap]
    fence = "`" * max(3, _longest_backtick_run(shown) + 1)
    block = [f"{fence}diff", *shown, fence]
    if len(shown) < len(lines):
        block.append(
            f"*{len(lines) - len(shown)} more lines not shown: run `reconciler plan --base "
            f"{review.base.sha[:10]} --head {review.head.sha[:10]}` to see them all.*"
        )
    if len(lines) > COLLAPSE_LINES:
        # A blank line after <summary> lets the fence inside render (CommonMark HTML blocks).
        out += ["<details>",
                f"<summary>Rendered config diff of {name} ({len(lines)} lines)</summary>", "",
                *block, "", "</details>", ""]  # fmt: skip
    else:
        out += [*block, ""]
    return out


def _longest_backtick_run(lines: Sequence[str]) -> int:
    return max((len(m) for line in lines for m in re.findall(r"`+", line)), default=0)


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text.replace("\n", " "))


def _cell(text: str) -> str:
    return _md(text) if text else ""


# --- history ---------------------------------------------------------------------------------


def history_json(entries: Sequence[HistoryEntry]) -> list[dict[str, Any]]:
    return [e.to_json() for e in entries]


def history_text(entries: Sequence[HistoryEntry]) -> str:
    if not entries:
        return "no pin commits in this history"
    lines = []
    pool = None
    # One block per pool, oldest pin first (the entries come in commit order).
    for e in sorted(entries, key=lambda e: e.pool):
        if e.pool != pool:
            pool = e.pool
            lines.append(f"{pool}:")
        c = e.commit
        when = c.committer_time.isoformat(timespec="seconds")
        digest = e.digest[:19] if e.digest else "-" * 19
        lines.append(f"  {when}  {e.kind:7} {digest}  {c.sha[:10]}  {c.subject}")
        if e.kind == "hold":
            lines.append(f"      pin set by {c.author_name} <{c.author_email}>")
        if e.pin is not None:
            spec = e.pin.spec
            lines.append(f"      inputs {spec.inputs_digest[:19]}  {spec.rendered_config}")
            s = e.source
            if s is not None:
                lines.append(
                    f"      from config {s.sha[:10]} by {s.author_name} <{s.author_email}>: "
                    f"{s.subject}"
                )
            else:
                lines.append(f"      from config {spec.source_commit[:10]} (not in this clone)")
        if e.problem:
            lines.append(f"      {e.problem}")
    return "\n".join(lines)


# --- rollback --------------------------------------------------------------------------------


def rollback_text(result: RollbackResult) -> str:
    lines = []
    target = result.target
    if result.mode == "hold" and target is not None and target.pin is not None:
        lines.append(
            f"committed a hold of {result.pool} at {target.pin.spec.digest} "
            f"(the pin of {target.commit.sha[:10]}) on {result.branch}: {result.commit[:10]}"
        )
    else:
        n = len(result.reverted)
        lines.append(
            f"reverted {n} config commit{'s' if n != 1 else ''} since {result.point[:10]} on "
            f"{result.branch}: new head {result.commit[:10]}"
        )
        lines += [f"  {c.sha[:10]} {c.subject} ({c.author_name})" for c in result.reverted]
    lines.append(f"push {result.branch} (or open a pull request from it); the next pass then:")
    for pool, p in sorted(result.predictions.items()):
        lines.append(f"  {pool}: {p.message}")
    if target is not None and target.pin is not None:
        predicted = result.predictions.get(result.pool)
        want = target.pin.spec.digest
        if predicted is not None and predicted.digest not in (None, want):
            lines.append(
                f"note: {result.pool} goes to {predicted.digest}, not {want}: something "
                "else in its inputs changed since (a base image tag that moved?)"
            )
    return "\n".join(lines)
