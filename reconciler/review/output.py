"""How `plan --base/--head`, `history` and `rollback` print: text, markdown, JSON.

Stage: presentation, after `review`. Inputs: `review.Review`, history entries, a
`RollbackResult`. Outputs: strings and JSON-able dicts (plain dicts a caller may wrap in
an envelope); no I/O beyond reading the environment for the forge and colour.

The markdown is written for a pull/merge request comment, in the order a reviewer
decides: the verdict line first (what reboots, in batches of how many nodes, what does
not, and whether the change is safe to merge: anything that cannot be planned is "do not
merge"), then a table (one row per pool), the problems cause first (linked to their lines
when the forge is known) with their consequences counted apart, the warnings, one
section per changed pool (which files brought the change, MCO's policy as the reason,
the diff: an identical diff of another pool is referenced, not repeated), the unchanged
pools, and an audit block with the full digests. Diffs longer than `COLLAPSE_LINES` go
into a `<details>` block with a summary outside it. GitHub refuses comments above 65,536
characters, so diffs are shortened (and say so) until the comment fits `max_chars`.
"""

from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from reconciler.core import diff, poolplan, provenance, reference
from reconciler.errors import ConfigProblem
from reconciler.loop import planning
from reconciler.review.history import HistoryEntry, Verification
from reconciler.review.revisions import AGENT_NOTE, PoolReview, Review
from reconciler.review.rollback import RollbackResult

COLLAPSE_LINES = 30
MAX_COMMENT_CHARS = 60_000
SHORT_DIGEST = 19  # "sha256:" and 12 hex digits
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")
_CONSEQUENCE = "; the pool keeps its pin"


# --- where links go, and colour ----------------------------------------------------------------


@dataclass(frozen=True)
class Forge:
    """Where the repository's files can be linked: `<web>/<blob>/<sha>/<path>#L<line>`."""

    web: str
    blob: str = "blob"

    def link(self, sha: str, path: str, line: int | None = None) -> str:
        anchor = f"#L{line}" if line else ""
        return f"{self.web.rstrip('/')}/{self.blob}/{sha}/{path}{anchor}"


def forge_from_env(environ: Mapping[str, str]) -> Forge | None:
    """The forge a CI job runs on, from its standard variables (GitHub Actions, GitLab
    CI, Gitea/Forgejo Actions, which set GitHub's)."""
    if environ.get("GITHUB_SERVER_URL") and environ.get("GITHUB_REPOSITORY"):
        return Forge(f"{environ['GITHUB_SERVER_URL']}/{environ['GITHUB_REPOSITORY']}")
    if environ.get("CI_PROJECT_URL"):
        return Forge(environ["CI_PROJECT_URL"], "-/blob")
    return None


def use_color(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


_STYLES = {"red": "31", "green": "32", "yellow": "33", "cyan": "36", "bold": "1", "dim": "2"}


def paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_STYLES[style]}m{text}\x1b[0m" if color and text else text


# --- the verdict -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The first line: whether to merge, what reboots, what does not."""

    safe: bool
    reasons: tuple[str, ...]
    """Why not (empty when safe)."""
    reboots: tuple[str, ...]
    """`pool (batch)` for each pool whose nodes reboot."""
    live: tuple[str, ...]
    """`pool (what)` for each pool that changes without a reboot."""
    unchanged: int
    removed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"safeToMerge": self.safe, "reasons": list(self.reasons),
                "reboot": list(self.reboots), "noReboot": list(self.live),
                "removed": list(self.removed), "unchanged": self.unchanged}  # fmt: skip


def _batch(r: PoolReview) -> str:
    if r.rollout is None:
        return ""
    if r.rollout.paused:
        return "paused: nodes wait until it is unpaused"
    n = r.rollout.max_unavailable
    if n.endswith("%"):
        return f"{n} of nodes at a time"
    return f"{n} node at a time" if n == "1" else f"{n} nodes at a time"


def review_verdict(review: Review) -> Verdict:
    reasons = []
    blocked = review.blocked
    if blocked:
        files = sorted({f for p in blocked for f in review.pools[p].blocked_by})
        n = len(review.problems)
        where = f" in {', '.join(files)}" if files else ""
        reasons.append(
            f"{_count(len(blocked), 'pool')} cannot be planned and keep their pins: "
            f"{', '.join(blocked)} ({_count(n, 'problem')}{where})"
        )
    elif review.problems:
        reasons.append(f"{_count(len(review.problems), 'problem')} at the head")
    if review.not_planned:
        why = review.pools[review.not_planned[0]].not_planned or ""
        reasons.append(
            f"images of {', '.join(review.not_planned)} not planned ({_first(why)}); re-run "
            "the plan with registry access"
        )
    if review.source is not None and not review.source.accepted:
        reasons.append(f"the reconciler would not reconcile the head: {review.source.message()}")
    others = [e for e in review.errors if e.split(":", 1)[0] not in review.not_planned]
    if others:
        reasons.append(f"{_count(len(others), 'error')} while planning")
    reboots, live = [], []
    for name in review.changed:
        r = review.pools[name]
        action = r.node_action
        if action is None:
            continue
        batch = _batch(r)
        if action.reboot:
            reboots.append(f"{name} ({batch})" if batch else name)
        else:
            live.append(f"{name} ({' and '.join(action.live) or 'nothing'}, applied live)")
    unchanged = sum(r.status == "unchanged" for r in review.pools.values())
    removed = tuple(p for p in review.changed if review.pools[p].status == "removed")
    return Verdict(not reasons, tuple(reasons), tuple(reboots), tuple(live), unchanged, removed)


def _verdict_parts(v: Verdict, code: Any) -> list[str]:
    parts = []
    if v.reboots:
        parts.append("reboots " + ", ".join(code(x) for x in v.reboots))
    if v.live:
        parts.append("no reboot: " + ", ".join(code(x) for x in v.live))
    if v.removed:
        parts.append("pool removed: " + ", ".join(code(x) for x in v.removed))
    if not v.reboots and not v.live and not v.removed:
        parts.append("no pool changes")
    if v.unchanged:
        parts.append(f"{v.unchanged} unchanged")
    return parts


def _code_pool(text: str) -> str:
    """`worker (1 node at a time)` → `` `worker` (1 node at a time) ``."""
    name, sep, rest = text.partition(" (")
    return f"`{name}`" + (f" ({_md(rest[:-1])})" if sep else "")


# --- plan: summaries ---------------------------------------------------------------------------

_KIND_WORDS = {
    "kernelArguments": "kernel arguments", "sshKeys": "SSH keys", "passwordHash": "password hash",
    "extensions": "extensions", "kernelType": "kernel type", "fips": "FIPS",
    "baseImage": "base image", "extensionsImage": "extensions image",
    "containerFile": "Containerfile", "pushSpec": "push spec",
    "ignition": "other Ignition sections", "user": "user",
}  # fmt: skip
_NOUNS = {
    "file": ("file", "files"), "directory": ("directory", "directories"),
    "link": ("link", "links"), "unit": ("unit", "units"), "dropin": ("dropin", "dropins"),
}  # fmt: skip
_VERBS = {"added": "added", "modified": "changed", "removed": "removed"}


def _changes_summary(r: PoolReview) -> str:
    if r.status == "unchanged":
        return "unchanged"
    if r.status == "error":
        return "cannot render or plan"
    if r.status == "removed":
        return "pool removed"
    by_kind: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for d in r.diffs:
        by_kind[d.item.kind][d.status] += 1
    parts = []
    for kind, statuses in by_kind.items():
        if kind in _NOUNS:
            n = sum(statuses.values())
            noun = _NOUNS[kind][n != 1]
            how = ", ".join(f"{c} {_VERBS[s]}" for s, c in statuses.items())
            parts.append(f"{n} {noun} ({how})")
        else:
            parts.append(_KIND_WORDS[kind])
    prefix = "new pool: " if r.status == "added" else ""
    return prefix + (", ".join(parts) or "no rendered difference")


def _build_summary(r: PoolReview) -> str:
    outcome = r.outcome
    if r.status in ("unchanged", "removed"):
        return ""
    if isinstance(outcome, planning.Unmanaged) or (r.head and r.head.os_config is None):
        return "unmanaged (no MachineOSConfig)"
    if isinstance(outcome, poolplan.PoolPlan):
        return outcome.builder
    if r.not_planned:
        return "not planned"
    return "cannot plan" if outcome is not None else ""


def _image_after(r: PoolReview, short: bool) -> str:
    if r.not_planned:
        return f"not planned: {_first(r.not_planned)}"
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
        return f"`{digest[:SHORT_DIGEST]}` ({'exists' if r.existing_digest else 'predicted'})"
    return f"`{repo}@{digest[:SHORT_DIGEST]}` ({how})"


def _nodes_cell(r: PoolReview) -> str:
    if r.status == "error":
        return "keeps its pin"
    action = r.node_action
    if action is None:
        return {"removed": "pool removed", "unchanged": "no change"}.get(r.status, "")
    if action.reboot:
        batch = _batch(r)
        return f"reboot, {batch}" if batch else "reboot"
    return f"no reboot ({' and '.join(action.live)} live)"


def _sources_text(r: PoolReview, md: bool) -> str:
    out = []
    for s in r.sources:
        name = f"`{s.file}`" if md else s.file
        via = f", via role {s.via}" if s.via else ""
        out.append(f"{name} ({s.change}{via})")
    return ", ".join(out)


def _short_rendered(name: str) -> str:
    """`rendered-worker-<32 hex>` → `rendered-worker-<10 hex>` for review text."""
    head, _, digest = name.rpartition("-")
    return f"{head}-{digest[:10]}" if head and len(digest) > 12 else name


def _first(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= 120 else line[:117] + "..."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _split_problems(
    problems: Sequence[ConfigProblem],
) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """Causes (what is wrong in a file) and consequences (a pool that keeps its pin)."""
    causes = [p for p in problems if not p.problem.endswith(_CONSEQUENCE)]
    return causes, [p for p in problems if p.problem.endswith(_CONSEQUENCE)]


def _hidden(r: PoolReview) -> list[str]:
    """The items whose content is not shown (secrets), with what happened to them."""
    out = []
    for d in r.diffs:
        if (d.old and d.old.hidden) or (d.new and d.new.hidden):
            out.append(f"{d.name} {_VERBS[d.status]}")
    return out


# --- plan: JSON ----------------------------------------------------------------------------------


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
            entry["sources"] = [
                {"kind": s.kind, "name": s.name, "file": s.file, "change": s.change,
                 **({"via": s.via} if s.via else {})} for s in r.sources
            ]  # fmt: skip
        if r.node_action is not None:
            entry["nodeAction"] = r.node_action.to_json()
        if r.rollout is not None:
            entry["rollout"] = {"maxUnavailable": r.rollout.max_unavailable,
                                "paused": r.rollout.paused}  # fmt: skip
        if r.blocked_by:
            entry["blockedBy"] = list(r.blocked_by)
        if r.not_planned:
            entry["notPlanned"] = r.not_planned
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
        "verdict": review_verdict(review).to_json(),
        "changed": review.changed,
        "pools": pools,
        "problems": [_problem_json(p) for p in review.problems],
        "warnings": [_problem_json(p) for p in review.warnings],
        "errors": list(review.errors),
        "source": source_json(review.source),
        "note": AGENT_NOTE,
    }


def source_json(v: provenance.SourceVerdict | None) -> dict[str, Any] | None:
    """A source verdict for -o json (None: no sourceVerification policy)."""
    if v is None:
        return None
    return {
        "accepted": v.accepted,
        "reason": v.reason,
        "refusedCommit": v.commit,
        "anchor": v.anchor,
        "commits": [{"sha": c.sha, "accepted": c.accepted, "signer": c.signer,
                     "reason": c.reason} for c in v.checks],
    }  # fmt: skip


def source_line(v: provenance.SourceVerdict | None) -> str | None:
    if v is None:
        return None
    if v.accepted:
        signers = sorted({c.signer for c in v.checks if c.signer})
        by = f"; signed by {', '.join(signers)}" if signers else ""
        return f"source verification: accepted ({v.reason}{by})"
    return f"source verification: REFUSED: {v.message()}"


def _problem_json(p: ConfigProblem) -> dict[str, Any]:
    return {"file": p.file, "line": p.line, "message": str(p)}


# --- plan: text ----------------------------------------------------------------------------------


def review_text(review: Review, color: bool | None = None) -> str:
    """The plan for a terminal; colour only on a TTY without NO_COLOR (None: detect)."""
    c = use_color(sys.stdout) if color is None else color
    v = review_verdict(review)
    head = paint("safe to merge", "green", c) if v.safe else paint("do not merge", "red", c)
    parts = "; ".join(_verdict_parts(v, str))
    first = (
        f"{head}: {'; '.join(v.reasons)}; otherwise: {parts}" if v.reasons else f"{head}: {parts}"
    )
    lines = [
        first,
        f"plan {review.base.sha[:10]}..{review.head.sha[:10]} "
        f"({len(review.changed)} of {len(review.pools)} pools change)",
    ]
    if (line := source_line(review.source)) is not None:
        lines.append(line)
    causes, consequences = _split_problems(review.problems)
    if causes:
        lines.append(paint("problems at the head:", "red", c))
        lines += [f"  {p}" for p in causes]
    for name in review.blocked:
        files = ", ".join(review.pools[name].blocked_by) or "the problems above"
        lines.append(f"  => {name} keeps its pin (blocked by {files})")
    lines += [f"  {p}" for p in consequences if p.name not in review.blocked]
    if review.warnings:
        lines.append(paint("warnings at the head:", "yellow", c))
        lines += [f"  {p}" for p in review.warnings]
    lines += [f"{paint('error:', 'red', c)} {e}" for e in review.errors]
    shown: dict[str, str] = {}
    for name, r in sorted(
        review.pools.items(), key=lambda kv: (kv[1].status == "unchanged", kv[0])
    ):
        if r.status in ("unchanged", "error"):
            lines.append(f"{name}: {r.status if r.status == 'unchanged' else 'keeps its pin'}")
            continue
        title = f"{name}: {r.status}"
        if r.node_action is not None:
            title += f", nodes: {_nodes_cell(r)}"
        if r.disruption is not None:
            title += f", MCO policy: {r.disruption.summary}"
        build = _build_summary(r)
        if build:
            title += f", build: {build}"
        lines.append(paint(title, "bold", c))
        rows = []
        if (r.base and r.base.rendered) or (r.head and r.head.rendered):
            old = r.base.rendered.name if r.base and r.base.rendered else "-"
            new = r.head.rendered.name if r.head and r.head.rendered else "-"
            rows.append(("rendered config", f"{old} -> {new}"))
        rows.append(("changes", _changes_summary(r)))
        if r.sources:
            rows.append(("brought by", _sources_text(r, md=False)))
        if r.base is not None and r.base.error is not None:
            rows.append(("base", "did not render (shown against nothing)"))
        if r.disruption is not None and r.disruption.causes:
            rows.append(("MCO policy", r.disruption.one_line()))
        if r.plan is not None:
            rows.append(("inputs digest", r.plan.inputs_digest))
        if r.plan is not None or r.not_planned:
            rows.append(("image after merge", _image_after(r, short=False).replace("`", "")))
        if r.lookup_error:
            rows.append(("registry", r.lookup_error))
        lines += [f"  {k:19}{v}" for k, v in rows]
        text = diff.render(r.diffs)
        if text and text in shown:
            lines.append(f"  (same diff as {shown[text]})")
        elif text:
            shown[text] = name
            lines += ["", _color_diff(text.rstrip("\n"), c), ""]
    if review.changed:
        lines.append(f"note: {AGENT_NOTE}")
    return "\n".join(lines)


def _color_diff(text: str, color: bool) -> str:
    if not color:
        return text
    out = []
    for line in text.splitlines():
        if line.startswith(("+++", "---", "diff ")):
            out.append(paint(line, "bold", True))
        elif line.startswith("+"):
            out.append(paint(line, "green", True))
        elif line.startswith("-"):
            out.append(paint(line, "red", True))
        elif line.startswith("@@"):
            out.append(paint(line, "cyan", True))
        else:
            out.append(line)
    return "\n".join(out)


# --- plan: markdown ------------------------------------------------------------------------------


def review_markdown(
    review: Review,
    max_chars: int = MAX_COMMENT_CHARS,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The plan as a PR comment that fits `max_chars` (diffs shortened if needed).
    Problems link to their lines when the forge is known from `environ` (default: the
    process environment of the CI job)."""
    forge = forge_from_env(os.environ if environ is None else environ)
    for cap in (None, 200, 50, 10, 0):
        text = _markdown(review, cap, forge)
        if len(text) <= max_chars:
            return text
    return text[: max_chars - 40] + "\n\n…(cut to fit a comment)\n"


def _markdown(review: Review, cap: int | None, forge: Forge | None) -> str:
    v = review_verdict(review)
    parts = "; ".join(_verdict_parts(v, _code_pool))
    if v.safe:
        out = [f"**✅ Safe to merge:** {parts}.", ""]
    else:
        out = [f"**⛔ Do not merge:** {_md('; '.join(v.reasons))}. Otherwise: {parts}.", ""]
    base, head = review.base.sha[:10], review.head.sha[:10]
    out += [f"Reconciler plan `{base}` → `{head}` ({_md(_first(review.head.subject))})", ""]
    if (line := source_line(review.source)) is not None:
        out += [_md(line), ""]
    out += [
        "| Pool | Nodes | Change | Brought by | Build | Image after merge |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    order = sorted(review.pools.items(), key=lambda kv: (kv[1].status == "unchanged", kv[0]))
    for name, r in order:
        nodes = _nodes_cell(r)
        if r.node_action is not None and r.node_action.reboot:
            nodes = f"**{_md(nodes)}**"
        else:
            nodes = _cell(nodes)
        brought = _sources_text(r, md=True)
        if r.status == "error":
            brought = ", ".join(f"`{f}`" for f in r.blocked_by)
        cells = [f"`{name}`", nodes, _cell(_changes_summary(r)), brought,
                 _cell(_build_summary(r)), _image_after(r, short=True)]  # fmt: skip
        if r.not_planned:
            cells[-1] = _cell(cells[-1])
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out += _problems_section(review, forge)
    if review.warnings:
        out += ["### Warnings", "",
                "Accepted, nothing is blocked; worth a look before merging.", ""]  # fmt: skip
        out += _by_file(review.warnings, review, forge)
    shown: dict[str, str] = {}
    for name, r in order:
        if r.status in ("unchanged", "error"):
            continue
        out += _pool_section(review, name, r, cap, shown)
    unchanged = [f"`{n}`" for n, r in order if r.status == "unchanged"]
    if unchanged:
        out += ["### Unchanged pools", "", ", ".join(unchanged), ""]
    out += _audit(review, order)
    if review.changed:
        out += [f"<sub>{AGENT_NOTE}</sub>", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _problems_section(review: Review, forge: Forge | None) -> list[str]:
    causes, _ = _split_problems(review.problems)
    blocked = review.blocked
    others = [e for e in review.errors if e.split(":", 1)[0] not in review.not_planned]
    if not (causes or others or blocked):
        return []
    out = ["### Problems", ""]
    if causes:
        out += _by_file(causes, review, forge)
    for e in others:
        out.append(f"- {_md(e)}")
    if others:
        out.append("")
    if blocked:
        out.append(f"**Consequences:** {_count(len(blocked), 'pool')} keep their pins "
                   "until this is fixed:")  # fmt: skip
        out.append("")
        for name in blocked:
            files = ", ".join(f"`{f}`" for f in review.pools[name].blocked_by)
            out.append(f"- `{name}`" + (f" (takes {files})" if files else ""))
        out.append("")
    return out


def _by_file(problems: Sequence[ConfigProblem], review: Review, forge: Forge | None) -> list[str]:
    out: list[str] = []
    by_file: dict[str, list[ConfigProblem]] = defaultdict(list)
    for p in problems:
        by_file[p.file or "(repository)"].append(p)
    for file, found in sorted(by_file.items()):
        if forge is not None and file != "(repository)":
            out += [f"**[`{file}`]({forge.link(review.head.sha, file)})**", ""]
        else:
            out += [f"**`{file}`**", ""]
        for p in found:
            where = ""
            if p.line:
                where = f"line {p.line}"
                if forge is not None and p.file:
                    where = f"[{where}]({forge.link(review.head.sha, p.file, p.line)})"
                where += ": "
            text = str(p).removeprefix(f"{p.file}:{p.line}: " if p.line else f"{p.file}: ")
            out.append(f"- {where}{_md(text)}")
        out.append("")
    return out


def _pool_section(
    review: Review, name: str, r: PoolReview, cap: int | None, shown: dict[str, str]
) -> list[str]:
    out = [f"### Pool `{name}`: {r.status}", ""]
    action = r.node_action
    if action is not None:
        batch = _batch(r)
        out.append(f"- **Nodes:** {_md(action.detail)}" + (f", {_md(batch)}" if action.reboot
                                                             and batch else ""))  # fmt: skip
    if r.disruption is not None and r.disruption.causes:
        out.append(f"- **MCO policy:** {_md(r.disruption.one_line())}")
    if r.sources:
        out.append(f"- **Brought by:** {_sources_text(r, md=True)}")
    if (r.base and r.base.rendered) or (r.head and r.head.rendered):
        old = f"`{_short_rendered(r.base.rendered.name)}`" if r.base and r.base.rendered else "none"
        new = f"`{_short_rendered(r.head.rendered.name)}`" if r.head and r.head.rendered else "none"
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
    if r.plan is not None or r.not_planned:
        out.append(f"- **Image after merge:** {_image_after(r, short=False)}")
    if r.lookup_error:
        out.append(f"- **Registry:** {_md(r.lookup_error)}")
    hidden = _hidden(r)
    if hidden:
        out.append(f"- **Not shown (secret):** {_md(', '.join(hidden))}; content compared, "
                   "never printed")  # fmt: skip
    changes = [f"`{d.name}` {_VERBS[d.status]}" for d in r.diffs]
    if changes:
        out.append(f"- **Changes:** {', '.join(changes)}")
    out.append("")
    text = diff.render(r.diffs)
    lines = text.splitlines()
    if not lines:
        return out
    if text in shown:
        out += [f"Same diff as pool `{shown[text]}` above.", ""]
        return out
    shown[text] = name
    block_lines = lines if cap is None else lines[:cap]
    fence = "`" * max(3, _longest_backtick_run(block_lines) + 1)
    block = [f"{fence}diff", *block_lines, fence]
    if len(block_lines) < len(lines):
        block.append(
            f"*{len(lines) - len(block_lines)} more lines not shown: run `reconciler plan "
            f"--base {review.base.sha[:10]} --head {review.head.sha[:10]}` to see them all.*"
        )
    if len(lines) > COLLAPSE_LINES:
        # A blank line after <summary> lets the fence inside render (CommonMark HTML blocks).
        out += ["<details>",
                f"<summary>Rendered config diff of {name} ({len(lines)} lines)</summary>", "",
                *block, "", "</details>", ""]  # fmt: skip
    else:
        out += [*block, ""]
    return out


def _audit(review: Review, order: Sequence[tuple[str, PoolReview]]) -> list[str]:
    """Full names and digests, folded: for the auditor, not the reviewer."""
    rows = []
    for name, r in order:
        if r.status in ("unchanged", "error"):
            continue
        rendered = r.head.rendered.name if r.head and r.head.rendered else ""
        inputs = r.plan.inputs_digest if r.plan else ""
        image = ""
        if r.plan is not None and r.digest_after_merge:
            image = f"{reference.repository(r.plan.target)}@{r.digest_after_merge}"
        rows.append(f"| `{name}` | {_code(rendered)} | {_code(inputs)} | {_code(image)} |")
    if not rows:
        return []
    return ["<details>", "<summary>Audit: full names and digests</summary>", "",
            f"Base `{review.base.sha}`, head `{review.head.sha}`.", "",
            "| Pool | Rendered config | Inputs digest | Image after merge |",
            "| --- | --- | --- | --- |", *rows, "", "</details>", ""]  # fmt: skip


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


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
        if e.verification is not None:
            lines += _verification_lines(e.verification)
    return "\n".join(lines)


def _verification_lines(v: Verification) -> list[str]:
    def mark(ok: bool) -> str:
        return "ok" if ok else "REFUSED"

    lines = []
    for c in v.config_commits:
        who = f"signed by {c.signer}" if c.signer else "not by an allowed signer"
        why = f": {c.reason}" if c.reason and not c.accepted else ""
        lines.append(f"      config {c.sha[:10]} {who} [{mark(c.accepted)}{why}]")
    p = v.pin_commit
    who = f"signed by {p.signer}" if p.signer else (f"key {v.pin_key}" if v.pin_key else "unsigned")
    why = f": {p.reason}" if p.reason and not p.accepted else ""
    lines.append(f"      pin commit {who} [{mark(p.accepted)}{why}]")
    if not v.policy:
        lines.append("      (no sourceVerification policy at the pin commit)")
    lines.append(f"      image signature: {v.image} ({v.image_detail})")
    return lines


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
