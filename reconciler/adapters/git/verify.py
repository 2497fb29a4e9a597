"""Facts for source verification, read from a mirror: each commit's signature and what it
touches, the anchor, and the policy in effect at a commit. The decision is
core/provenance.py's (`judge_source`, `judge_pin_commit`); this module only gathers."""

from __future__ import annotations

from collections.abc import Collection

from reconciler.adapters.git.commits import CommitInfo
from reconciler.adapters.git.mirror import Mirror
from reconciler.adapters.git.signing import check_signature
from reconciler.core import history, load, provenance
from reconciler.core.model import ReconcilerConfigSpec

ANCHOR_SEARCH_DEPTH = 500
"""How far back (commits, newest first) the anchor is looked for; past it the pass
falls back to first use (the head alone is checked)."""


def touches(path: str) -> bool:
    """A path whose change needs an allowed signer: config the loader reads, or a pin."""
    return load.is_config_path(path) or path.startswith(f"{load.PINS_DIR}/")


class Unreadable:
    """The policy at a commit whose config does not load: the one before carries on."""


UNREADABLE = Unreadable()
PolicyAt = provenance.Policy | None | Unreadable


def policy_of(settings: ReconcilerConfigSpec) -> provenance.Policy | None:
    sv = settings.source_verification
    if sv is None:
        return None
    return provenance.Policy(
        tuple(provenance.parse_allowed_signer(e) for e in sv.allowed_signers),
        tuple(provenance.parse_allowed_signer(e) for e in sv.pin_signers),
    )


def repository_policy(repo: load.Repository) -> PolicyAt:
    """The policy of a loaded repository; `UNREADABLE` when a file that might hold the
    ReconcilerConfig does not load (so the policy before it carries on)."""
    if any(b.reach.everywhere for b in repo.blockers):
        return UNREADABLE
    return policy_of(repo.settings)


class SourceFacts:
    """Reads the facts `provenance.judge_source` needs, with per-commit caches."""

    def __init__(self, mirror: Mirror, own_keys: Collection[str] = ()) -> None:
        self.mirror = mirror
        self.own_keys = frozenset(own_keys)
        self._facts: dict[str, provenance.CommitFacts] = {}
        self._policies: dict[str, PolicyAt] = {}

    def facts(self, sha: str, info: CommitInfo | None = None) -> provenance.CommitFacts:
        if sha not in self._facts:
            if info is None:
                [info] = self.mirror.log(sha, max_count=1)
            signature = check_signature(self.mirror.raw_commit(sha))
            self._facts[sha] = provenance.CommitFacts(
                sha=sha,
                parent=info.parents[0] if info.parents else None,
                touches=any(touches(p) for p in self.mirror.changed_paths(sha)),
                pin_commit=history.is_reconciler_commit(info),
                signature=signature.state,
                key=signature.key,
            )
        return self._facts[sha]

    def anchor(self, head: str) -> str | None:
        """The newest reconciler pin commit signed by our own key (provenance rule 1)."""
        if not self.own_keys:
            return None
        for info in self.mirror.log(head, max_count=ANCHOR_SEARCH_DEPTH, first_parent=True):
            if not history.is_reconciler_commit(info):
                continue
            if check_signature(self.mirror.raw_commit(info.sha)).key in self.own_keys:
                return info.sha
        return None

    def policy_at(self, rev: str) -> PolicyAt:
        if rev not in self._policies:
            repo = load.load_repository(self.mirror.read_files(rev, load.is_config_path))
            self._policies[rev] = repository_policy(repo)
        return self._policies[rev]

    def seed(self, rev: str, policy: PolicyAt) -> None:
        """The policy at `rev` when the caller has loaded it already (the head)."""
        self._policies.setdefault(rev, policy)


def verify_source(
    facts: SourceFacts, head: str, head_policy: PolicyAt
) -> provenance.SourceVerdict | None:
    """The verdict on `head`, or None when verification is off (no policy at the head
    and no anchor whose history had one)."""
    facts.seed(head, head_policy)
    anchor = facts.anchor(head)
    return _verify(facts, head, head_policy, anchor)


def verify_change(facts: SourceFacts, base: str, head: str) -> provenance.SourceVerdict | None:
    """`plan --base`: whether the reconciler would accept `head` once it lands on `base`
    as a fast-forward (`base` taken as accepted; the reconciler's keys from `pinSigners`
    at `base`). A merge commit made later is judged by its own signature."""
    head_policy = facts.policy_at(head)
    if facts.policy_at(base) is None and head_policy is None:
        return None
    if base == head:
        return provenance.SourceVerdict(True, "no commits to verify", None, base)
    return _verify(facts, head, head_policy, base)


def _verify(
    facts: SourceFacts, head: str, head_policy: PolicyAt, anchor: str | None
) -> provenance.SourceVerdict | None:
    if anchor is None:
        # Unreadable: a config file that does not load can change any pool, so the loader
        # blocks every pool with its own message; nothing is pinned either way.
        if head_policy is None or head_policy is UNREADABLE:
            return None
        if not facts.own_keys:
            return provenance.SourceVerdict(
                False,
                "sourceVerification is set but this reconciler does not sign its pin "
                "commits, so it cannot tell which commits it accepted before; run it with "
                "--commit-signing-key",
                head,
            )
    if anchor is not None and anchor == head:
        return provenance.SourceVerdict(True, "the head is our own signed pin commit", None,
                                        anchor)  # fmt: skip
    commits = []
    policies: dict[str, provenance.Policy | None] = {"": None}
    head_known = head_policy if isinstance(head_policy, provenance.Policy) else None
    if anchor is None:
        policies[head] = head_known
        return provenance.judge_source(facts.facts(head), [], policies, None, facts.own_keys)
    for info in reversed(facts.mirror.log(f"{anchor}..{head}", first_parent=True)):
        commits.append(facts.facts(info.sha, info))
    in_range = {c.sha: c for c in commits}

    def resolve(rev: str) -> PolicyAt:
        """Policy in effect at `rev`: read where it may have changed, else carried from
        the first parent (provenance rule 3); outside the range, read as it is."""
        while True:
            commit = in_range.get(rev)
            if commit is not None and commit.parent and not commit.touches:
                rev = commit.parent
                continue
            found = facts.policy_at(rev)
            if found is UNREADABLE and commit is not None and commit.parent:
                rev = commit.parent
                continue
            return found

    for commit in commits:
        if commit.touches and commit.parent:
            found = resolve(commit.parent)
            if found is not UNREADABLE:
                policies[commit.parent] = found if isinstance(found, provenance.Policy) else None
    return provenance.judge_source(facts.facts(head), commits, policies, anchor, facts.own_keys)
