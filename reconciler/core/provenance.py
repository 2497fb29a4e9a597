"""Source verification: whether a head may be reconciled, and whether a pin commit may be
applied, decided from facts about commits (their signatures, what they touch).

Stage: before planning (the loop), before applying (the agent), and for `plan --base`
and `history --verify`. Inputs: commit facts gathered by the Git adapter (the SSH
signature's key, already checked to be sound by ssh-keygen) and the policy
(`ReconcilerConfig.spec.sourceVerification`) in effect at each commit's parent.
Output: a verdict naming the first refused commit and why. Pure.

The rule (repo-layout/README.md "Signed changes" says the same to admins):

1. The *anchor* is the newest commit in the head's first-parent history that is a
   reconciler pin commit signed by the running reconciler's own key. Everything the
   anchor can reach was accepted before.
2. Every commit on the head's first-parent line since the anchor (`git log
   --first-parent anchor..head`) that changes the configuration (a `.yaml`/`.yml` file
   the loader reads) or a pin (`pins/`), compared with its first parent, must carry a
   sound SSH signature by a key listed in `allowedSigners` of the policy in effect at
   its first parent. The reconciler's own pin commits (pin trailers, signed by its
   key) are the only exception. A merge commit's diff against its first parent is
   everything it brings in, so a signed merge vouches for the branch it merges (the
   commits of a pull request need no signatures of their own; git's
   `merge.verifySignatures` checks the merged tip the same way).
3. The policy in effect at a commit is the `sourceVerification` of the ReconcilerConfig
   in its tree; where that cannot be read (a file that does not parse), the policy
   of its own first parent carries on, so breaking the file does not turn checks off.
   So a change of signers is itself checked against the signers before it, and takes
   effect for the commits after it.
4. A commit whose parent has no policy is not checked (verification is off there).
5. No anchor (the first pass, or a new reconciler key): trust on first use, as Flux's
   `spec.verify` mode HEAD does: the head commit alone must be signed by an allowed
   signer of the policy at the head.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

_KEY_TYPES = (
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "ssh-rsa", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)  # fmt: skip
_OPTION_RE = re.compile(r'^[a-z-]+(="[^"]*")?(,[a-z-]+(="[^"]*")?)*$')


@dataclass(frozen=True)
class AllowedSigner:
    """One allowed-signers entry (ssh-keygen(1) ALLOWED SIGNERS), parsed."""

    principals: tuple[str, ...]
    key: str
    """`<type> <base64>`: compared with the key inside a signature."""
    line: str

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key)


def key_fingerprint(key: str) -> str:
    """`SHA256:<base64>`, as ssh-keygen -l prints it."""
    blob = base64.b64decode(key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_allowed_signer(line: str) -> AllowedSigner:
    """`principals [options] keytype base64 [comment]`; ValueError says what is wrong.
    Options other than `namespaces` (which must allow `git`) are refused: this checker
    does not implement `valid-after`, `valid-before` or `cert-authority`, and would
    otherwise accept more than ssh-keygen."""
    fields = line.split()
    if len(fields) < 3:
        raise ValueError(
            f"{line!r} is not an allowed-signers entry; write 'principal key-type base64', "
            "e.g. 'alice@example.com ssh-ed25519 AAAA...' (the .pub file with a principal)"
        )
    principals = tuple(p for p in fields[0].split(",") if p)
    rest = fields[1:]
    if rest[0] not in _KEY_TYPES:
        options = rest.pop(0)
        if not _OPTION_RE.match(options):
            raise ValueError(f"{line!r}: {options!r} is neither a key type nor options")
        for option in options.split(","):
            name, _, value = option.partition("=")
            if name != "namespaces":
                raise ValueError(
                    f'{line!r}: option {name!r} is not supported; only namespaces="git"'
                )
            if "git" not in value.strip('"').split(","):
                raise ValueError(f"{line!r}: namespaces={value} does not include git")
    if len(rest) < 2 or rest[0] not in _KEY_TYPES:
        raise ValueError(f"{line!r}: expected a key type ({', '.join(_KEY_TYPES[:3])}, ...)")
    key_type, b64 = rest[0], rest[1]
    try:
        blob = base64.b64decode(b64, validate=True)
        (n,) = struct.unpack(">I", blob[:4])
        inner = blob[4 : 4 + n].decode("ascii")
    except (binascii.Error, ValueError, struct.error, UnicodeDecodeError):
        inner = ""
    if inner != key_type:
        raise ValueError(f"{line!r}: the base64 is not a {key_type} public key")
    return AllowedSigner(principals, f"{key_type} {b64}", line)


@dataclass(frozen=True)
class Policy:
    """Who may change the configuration (and hand-edit pins), and whose pin commits
    agents apply."""

    allowed: tuple[AllowedSigner, ...]
    pin_signers: tuple[AllowedSigner, ...] = ()

    def signer_of(self, key: str | None, pins: bool = False) -> AllowedSigner | None:
        pool = (*self.pin_signers, *self.allowed) if pins else self.allowed
        for entry in pool:
            if key is not None and entry.key == key:
                return entry
        return None


SignatureState = Literal["good", "none", "bad", "unsupported"]


@dataclass(frozen=True)
class CommitFacts:
    """What the Git adapter found out about one commit."""

    sha: str
    parent: str | None
    """The first parent (None for a root commit)."""
    touches: bool
    """It changes a configuration file or a pin, compared with its first parent."""
    pin_commit: bool
    """It carries the reconciler's pin trailers."""
    signature: SignatureState
    key: str | None = None
    """The signing key (`<type> <base64>`) of a good signature."""


@dataclass(frozen=True)
class CommitCheck:
    sha: str
    accepted: bool
    signer: str | None
    """Principals of the allowed signer, `reconciler` for our pin commits."""
    reason: str = ""


@dataclass(frozen=True)
class SourceVerdict:
    accepted: bool
    reason: str = ""
    commit: str | None = None
    """The first commit refused."""
    anchor: str | None = None
    checks: tuple[CommitCheck, ...] = field(default_factory=tuple)

    def message(self) -> str:
        if self.accepted:
            return self.reason
        return f"source verification refused commit {self.commit}: {self.reason}"


_UNKNOWN = object()


def judge_source(
    head: CommitFacts,
    commits: Sequence[CommitFacts],
    policies: Mapping[str, Policy | None],
    anchor: str | None,
    own_keys: Collection[str],
) -> SourceVerdict:
    """The rule of the module docstring. `commits`: the first-parent line anchor..head,
    oldest first (unused without an anchor: the head is judged alone then); `policies`: the
    policy in effect (None: none) at the head and at the first parent of each commit
    that touches the configuration, "" standing for a root commit's parent; a parent
    missing from it is one whose policy could not be read, and its child is refused.
    `own_keys`: the reconciler's signing keys (its own, or `pinSigners` for a plan)."""
    if anchor is None:
        policy = policies.get(head.sha)
        if policy is None:
            return SourceVerdict(True, "no sourceVerification policy at the head")
        check = _judge_one(head, policy, own_keys)
        if not check.accepted:
            return SourceVerdict(False, check.reason + " (first use: the head commit is "
                                 "checked alone)", head.sha, None, (check,))  # fmt: skip
        return SourceVerdict(True, f"first use: head signed by {check.signer}", None, None,
                             (check,))  # fmt: skip
    checks: list[CommitCheck] = []
    for commit in commits:
        if not commit.touches:
            continue
        found = policies.get(commit.parent or "", _UNKNOWN)
        if found is _UNKNOWN:
            return SourceVerdict(False, "the policy at its parent cannot be read (a config "
                                 "file there does not load)", commit.sha, anchor,
                                 tuple(checks))  # fmt: skip
        policy = found if isinstance(found, Policy) else None
        if policy is None:
            checks.append(CommitCheck(commit.sha, True, None, "no policy at its parent"))
            continue
        check = _judge_one(commit, policy, own_keys)
        checks.append(check)
        if not check.accepted:
            return SourceVerdict(False, check.reason, commit.sha, anchor, tuple(checks))
    return SourceVerdict(True, f"{len(checks)} commit(s) since {anchor[:10]} verified", None,
                         anchor, tuple(checks))  # fmt: skip


def _judge_one(commit: CommitFacts, policy: Policy, own_keys: Collection[str]) -> CommitCheck:
    if commit.pin_commit and commit.signature == "good" and commit.key in own_keys:
        return CommitCheck(commit.sha, True, "reconciler")
    if commit.signature == "none":
        return CommitCheck(commit.sha, False, None,
                           "it is not signed; sign config commits with an SSH key listed "
                           "in sourceVerification.allowedSigners (git commit -S, "
                           "gpg.format=ssh)")  # fmt: skip
    if commit.signature != "good":
        return CommitCheck(commit.sha, False, None, f"its signature is {commit.signature}: "
                           "only a sound SSH signature is accepted")  # fmt: skip
    signer = policy.signer_of(commit.key)
    if signer is None:
        who = key_fingerprint(commit.key) if commit.key else "an unknown key"
        return CommitCheck(commit.sha, False, None,
                           f"it is signed by {who}, which sourceVerification.allowedSigners "
                           "does not list")  # fmt: skip
    return CommitCheck(commit.sha, True, ",".join(signer.principals))


def judge_pin_commit(commit: CommitFacts, policy: Policy) -> CommitCheck:
    """The agent's rule: the commit that last changed a pool's pin must carry a sound SSH
    signature by a pin signer (the reconciler) or an allowed signer (an admin's hold)."""
    if commit.signature == "none":
        return CommitCheck(commit.sha, False, None, "the pin commit is not signed")
    if commit.signature != "good":
        return CommitCheck(commit.sha, False, None,
                           f"the pin commit's signature is {commit.signature}")  # fmt: skip
    signer = policy.signer_of(commit.key, pins=True)
    if signer is None:
        who = key_fingerprint(commit.key) if commit.key else "an unknown key"
        return CommitCheck(
            commit.sha, False, None, f"the pin commit is signed by {who}, not by an allowed signer"
        )
    return CommitCheck(commit.sha, True, ",".join(signer.principals))
