"""Signed changes only: the loop's source-verification step (before planning).

The rule and the decision are core/provenance.py's; the facts come from the mirror
(adapters/git/verify.py). A refused head stalls every pool at its pin with the refused
commit and the reason; nothing is built or committed for it.
"""

from __future__ import annotations

from reconciler.adapters.git import Mirror, verify
from reconciler.core import load, provenance


def verdict(mirror: Mirror, head: str, repo: load.Repository) -> provenance.SourceVerdict | None:
    """The verdict on `head` (None: no policy, nothing to verify). Fresh caches each
    pass: a long-running loop keeps nothing per commit."""
    own = [mirror.signing_key.public_key] if mirror.signing_key is not None else []
    facts = verify.SourceFacts(mirror, own)
    return verify.verify_source(facts, head, verify.repository_policy(repo))


def refusal(mirror: Mirror, head: str, repo: load.Repository) -> str | None:
    """Why `head` may not be reconciled, or None if it may."""
    found = verdict(mirror, head, repo)
    if found is None or found.accepted:
        return None
    return found.message()
