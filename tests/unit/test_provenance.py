"""The source-verification rule (core/provenance.py) on hand-made facts, and the policy's
bad input: what an admin sees for a malformed allowed-signers entry or image key."""

from __future__ import annotations

import base64
import struct

import pytest

from reconciler.core import load, provenance


def ssh_key(seed: int, kind: str = "ssh-ed25519") -> str:
    blob = struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", 32) + bytes([seed]) * 32
    return f"{kind} {base64.b64encode(blob).decode()}"


ADMIN, BOT, EVE = ssh_key(1), ssh_key(2), ssh_key(3)
POLICY = provenance.Policy(
    (provenance.parse_allowed_signer(f"admin@x {ADMIN}"),),
    (provenance.parse_allowed_signer(f"bot@x {BOT}"),),
)


def facts(sha: str, parent: str | None, *, key: str | None, touches: bool = True,
          pin: bool = False) -> provenance.CommitFacts:  # fmt: skip
    return provenance.CommitFacts(sha, parent, touches, pin, "good" if key else "none", key)


def test_every_config_commit_since_the_anchor_needs_an_allowed_signer() -> None:
    a, b, c, d = "a" * 40, "b" * 40, "c" * 40, "d" * 40
    line = [facts(b, a, key=ADMIN), facts(c, b, key=None, touches=False), facts(d, c, key=EVE)]
    verdict = provenance.judge_source(line[-1], line, {a: POLICY, b: POLICY, c: POLICY}, a, {BOT})
    assert not verdict.accepted
    assert verdict.commit == d
    assert "does not list" in verdict.reason
    assert [c.signer for c in verdict.checks] == ["admin@x", None]
    # our own pin commit is the exception; an admin's signed change passes
    line[-1] = facts(d, c, key=BOT, pin=True)
    ok = provenance.judge_source(line[-1], line, {a: POLICY, b: POLICY, c: POLICY}, a, {BOT})
    assert ok.accepted, ok.reason
    # a pin commit signed by a pinSigners key that is not the reconciler's own: refused
    assert not provenance.judge_source(line[-1], line, {a: POLICY, b: POLICY, c: POLICY}, a,
                                       set()).accepted  # fmt: skip


def test_a_parent_whose_policy_cannot_be_read_refuses_its_child() -> None:
    a, b = "a" * 40, "b" * 40
    verdict = provenance.judge_source(facts(b, a, key=ADMIN), [facts(b, a, key=ADMIN)], {}, a, ())
    assert not verdict.accepted
    assert "cannot be read" in verdict.reason


def test_the_agent_accepts_pin_signers_and_allowed_signers_only() -> None:
    assert provenance.judge_pin_commit(facts("a" * 40, None, key=BOT), POLICY).accepted
    assert provenance.judge_pin_commit(facts("a" * 40, None, key=ADMIN), POLICY).accepted
    refused = provenance.judge_pin_commit(facts("a" * 40, None, key=EVE), POLICY)
    assert not refused.accepted
    assert provenance.key_fingerprint(EVE) in refused.reason
    assert "not signed" in provenance.judge_pin_commit(facts("a" * 40, None, key=None),
                                                       POLICY).reason  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("alice@x", "is not an allowed-signers entry"),
        (f'alice@x valid-after="20260101" {ADMIN}', "option 'valid-after' is not supported"),
        (f'alice@x namespaces="file" {ADMIN}', "does not include git"),
        ("alice@x ssh-ed25519 AAAAB3NzaC1yc2E", "is not a ssh-ed25519 public key"),
    ],
)
def test_a_bad_allowed_signer_is_an_error_naming_file_field_and_fix(entry: str, says: str) -> None:
    text = (
        "apiVersion: gitops.bootc.dev/v1alpha1\nkind: ReconcilerConfig\nmetadata: {name: r}\n"
        f"spec:\n  sourceVerification:\n    allowedSigners: ['{entry}']\n"
    )
    repo = load.load_repository({"reconciler.yaml": text})
    [problem] = repo.problems
    shown = str(problem)
    assert shown.startswith("reconciler.yaml:")
    assert "ReconcilerConfig r" in shown
    assert "spec.sourceVerification.allowedSigners" in shown
    assert says in shown


def test_an_image_key_that_is_not_p256_is_refused() -> None:
    text = (
        "apiVersion: gitops.bootc.dev/v1alpha1\nkind: ReconcilerConfig\nmetadata: {name: r}\n"
        "spec:\n  imageSigning:\n    publicKey: not a key\n"
    )
    [problem] = load.load_repository({"reconciler.yaml": text}).problems
    assert "spec.imageSigning.publicKey" in str(problem)
    assert "not a PEM public key" in str(problem)
