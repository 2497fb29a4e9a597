"""The pin history of pools: every commit that changed `pins/<pool>.yaml`.

Stage: review, for `reconciler history` and `rollback`. Input: a reader of Git objects
and a head commit. Output: `HistoryEntry`s, oldest first, classified as the loop
classifies them (`core.history.classify`) plus `removed` and `invalid`, each with the
config commit it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from reconciler.adapters.git import CommitInfo, Mirror
from reconciler.adapters.git import verify as gitverify
from reconciler.adapters.registry import RegistryClient, signatures
from reconciler.core import cosign, history, load, pins, provenance, reference
from reconciler.errors import GitError, ReconcilerError
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
    verification: Verification | None = None
    """With `history --verify`: who signed what (see `verify_history`)."""

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
            **({"verification": self.verification.to_json()} if self.verification else {}),
        }


@dataclass(frozen=True)
class Verification:
    """Per pin: the config commits that led to it and who signed them, who signed the pin
    commit, and whether the image's cosign signature verifies."""

    config_commits: tuple[provenance.CommitCheck, ...]
    pin_commit: provenance.CommitCheck
    pin_key: str | None
    """Fingerprint of the pin commit's signing key (None: unsigned)."""
    image: str
    """`verified`, `unsigned`, `invalid`, `unchecked` (no imageSigning key, or no registry)."""
    image_detail: str = ""
    policy: bool = True
    """False: no sourceVerification policy was in effect; signers are reported, not judged."""

    def to_json(self) -> dict[str, Any]:
        def check(c: provenance.CommitCheck) -> dict[str, Any]:
            return {"sha": c.sha, "accepted": c.accepted, "signer": c.signer, "reason": c.reason}

        return {
            "policy": self.policy,
            "configCommits": [check(c) for c in self.config_commits],
            "pinCommit": {**check(self.pin_commit), "key": self.pin_key},
            "image": {"signature": self.image, "detail": self.image_detail},
        }


def verify_history(
    reader: Mirror, entries: list[HistoryEntry], registry: RegistryClient | None
) -> list[HistoryEntry]:
    """`entries` with their `verification`: each pin commit judged as the agent judges it
    (a pin signer or an allowed signer of the policy at its parent), the config commits
    on the first-parent line since the previous pin commit judged as the loop judges
    them (provenance rule 2), and the image's signature read from the registry and
    checked with `imageSigning.publicKey` at the pin commit."""
    facts = gitverify.SourceFacts(reader)
    out: list[HistoryEntry] = []
    previous: str | None = None  # the pin commit before this entry's (any pool)
    current: str | None = None
    for entry in entries:  # oldest first, as pool_history returns them
        if entry.commit.sha != current:
            previous, current = current, entry.commit.sha
        commit = facts.facts(entry.commit.sha, entry.commit)
        at_parent = facts.policy_at(commit.parent) if commit.parent else None
        policy = at_parent if isinstance(at_parent, provenance.Policy) else None
        if policy is not None:
            pin_check = provenance.judge_pin_commit(commit, policy)
            facts.own_keys = frozenset(e.key for e in policy.pin_signers)
        else:
            pin_check = provenance.CommitCheck(
                commit.sha, commit.signature == "good", None,
                f"signature {commit.signature}; no policy",
            )  # fmt: skip
        config = _config_checks(facts, previous, commit.sha, entry)
        image, detail = _image_signature(reader, entry, registry)
        key = provenance.key_fingerprint(commit.key) if commit.key else None
        out.append(replace(entry, verification=Verification(
            config, pin_check, key, image, detail, policy is not None,
        )))  # fmt: skip
    return out


def _config_checks(
    facts: gitverify.SourceFacts, previous: str | None, pin_sha: str, entry: HistoryEntry
) -> tuple[provenance.CommitCheck, ...]:
    if previous is not None and previous != pin_sha:
        verdict = gitverify.verify_change(facts, previous, pin_sha)
        if verdict is not None:
            return tuple(c for c in verdict.checks if c.signer != "reconciler")
    # the first pin (or no policy): the config commit it names, judged alone
    if entry.source is None:
        return ()
    source = facts.facts(entry.source.sha, entry.source)
    at = facts.policy_at(source.parent) if source.parent else None
    policy = at if isinstance(at, provenance.Policy) else None
    if policy is None:
        signer = provenance.key_fingerprint(source.key) if source.key else None
        return (provenance.CommitCheck(source.sha, source.signature == "good", signer,
                                       f"signature {source.signature}; no policy"),)  # fmt: skip
    verdict = provenance.judge_source(source, [], {source.sha: policy}, None, ())
    return verdict.checks


def _image_signature(
    reader: Mirror, entry: HistoryEntry, registry: RegistryClient | None
) -> tuple[str, str]:
    if entry.pin is None:
        return "unchecked", "no pin"
    files = reader.read_files(entry.commit.sha, load.is_config_path)
    signing = load.load_repository(files).settings.image_signing
    if signing is None:
        return "unchecked", "no imageSigning key at the pin commit"
    if registry is None:
        return "unchecked", "no registry access"
    ref = reference.parse(entry.pin.spec.image)
    repo = reference.repository(ref)
    try:
        stored = signatures.read_signatures(registry, ref, entry.pin.spec.digest)
    except ReconcilerError as exc:
        return "unchecked", str(exc).splitlines()[0]
    if not stored:
        return "unsigned", f"no signature at {repo}:{cosign.signature_tag(entry.pin.spec.digest)}"
    key = cosign.load_public_key(signing.public_key)
    reasons = []
    for sig in stored:
        why = cosign.verify(key, sig.payload, sig.b64, repo, entry.pin.spec.digest)
        if why is None:
            return "verified", f"signed by {cosign.key_fingerprint(key)}"
        reasons.append(why)
    return "invalid", "; ".join(dict.fromkeys(reasons))


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
