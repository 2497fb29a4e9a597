"""Parsing `bootc status --format=json --format-version=1` (BootcHost v1, reference
bootc-contract.md §2) with the driver's models: pure, no process."""

from __future__ import annotations

import json

import pytest

from reconciler.adapters.bootc import BootcError, parse_status

D1 = "sha256:" + "f0" * 32
D2 = "sha256:" + "65" * 32


def entry(digest: str, **extra: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "image": {
            "image": {"image": f"registry.example/fleet/pool@{digest}", "transport": "registry"},
            "version": None,
            "timestamp": "2026-09-14T08:12:55.123456789Z",
            "imageDigest": digest,
            "architecture": "amd64",
        },
        "cachedUpdate": None,
        "incompatible": False,
        "pinned": False,
        "store": "ostreeContainer",
        "ostree": {"checksum": "23" * 32, "deploySerial": 0, "stateroot": "default"},
    }
    doc.update(extra)
    return doc


def host(**status: object) -> str:
    doc = {
        "apiVersion": "org.containers.bootc/v1",
        "kind": "BootcHost",
        "metadata": {"name": "host"},
        "spec": {"bootOrder": "default", "image": None},
        "status": {
            "staged": None,
            "booted": None,
            "rollback": None,
            "rollbackQueued": False,
            "type": "bootcHost",
            **status,
        },
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def test_staged_booted_rollback_digests() -> None:
    parsed = parse_status(host(staged=entry(D1), booted=entry(D2), rollback=entry(D2)))
    assert parsed.is_bootc
    assert (parsed.staged_digest, parsed.booted_digest, parsed.rollback_digest) == (D1, D2, D2)


@pytest.mark.parametrize(
    "signature", ["containerPolicy", "insecure", {"ostreeRemote": "fedora"}, None]
)
def test_signature_is_a_string_or_an_object_or_absent(signature: object) -> None:
    booted = entry(D1)
    if signature is not None:
        booted["image"]["image"]["signature"] = signature  # type: ignore[index]
    parsed = parse_status(host(booted=booted))
    assert parsed.status.booted is not None
    assert parsed.status.booted.image is not None
    assert parsed.status.booted.image.image.signature == signature


def test_optional_and_newer_fields_absent_or_unknown() -> None:
    # no softRebootCapable/downloadOnly/composefs (older bootc), no otherDeployments
    # (omitted when empty), plus fields this agent does not know yet
    booted = entry(D1, somethingNew={"x": 1})
    parsed = parse_status(host(booted=booted, usrOverlay=None, futureField=True))
    assert parsed.booted_digest == D1
    assert parsed.status.other_deployments == []


def test_a_non_container_booted_entry_and_an_unbooted_host() -> None:
    parsed = parse_status(host(booted=entry(D1, image=None)))
    assert parsed.is_bootc
    assert parsed.booted_digest is None
    assert not parse_status(host()).is_bootc  # a default Host: not booted via bootc


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json at all", "not JSON"),
        ('{"kind": "Pod"}', "not a BootcHost"),
        (
            host().replace("org.containers.bootc/v1", "org.containers.bootc/v2"),
            "understands org.containers.bootc/v1 only",
        ),
        (
            host(booted=entry(D1)).replace('"imageDigest":"' + D1 + '"', '"imageDigest":42'),
            "status.booted.image.imageDigest",
        ),
    ],
    ids=["garbage", "other-kind", "other-version", "bad-field"],
)
def test_bad_status_output_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(BootcError, match="bootc status") as info:
        parse_status(text)
    assert message in str(info.value)
