"""Image signatures in cosign's format, as containers-policy `sigstoreSigned` reads them.

Stage: provenance of images. Inputs: a repository and a manifest digest (and, to
verify, the stored payload, its signature and a public key). Outputs: the bytes to
sign and store, and verdicts. Pure: the registry and the private key are the edge's.

The format (cosign pkg/oci/static and pkg/oci/remote; containers/image
docker/docker_client.go `sigstoreAttachmentTag`, signature/internal/sigstore_payload.go,
signature/policy_eval_sigstore.go):

- the *simple-signing payload*, JSON with exactly `critical` and `optional`;
  `critical` has exactly `type` ("cosign container image signature"),
  `image.docker-manifest-digest` and `identity.docker-reference` (the repository,
  which `matchRepoDigestOrExact` compares with the pulled `repo@digest`);
- stored as a layer (media type `application/vnd.dev.cosign.simplesigning.v1+json`)
  of an OCI image manifest tagged `sha256-<hex>.sig` in the image's own repository;
- the layer's annotation `dev.cosignproject.cosign/signature` holds the base64 of the
  ASN.1 DER ECDSA signature over the payload's SHA-256 (so `openssl dgst -sha256
  -verify pub.pem -signature sig.der payload` checks it);
- more signatures of the same image are more layers of that manifest.

Keyless signing (Fulcio certificate, Rekor bundle) would add the annotations
`dev.sigstore.cosign/certificate`, `dev.sigstore.cosign/chain` and
`dev.sigstore.cosign/bundle` to the same layer: `Signature.annotations` carries them,
so a keyless `Signer` fits without changing the storage or the push.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler.core import reference

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


@dataclass(frozen=True)
class Signature:
    """One signature of a payload, as a signer returns it."""

    b64: str
    """Base64 of the DER signature: the `dev.cosignproject.cosign/signature` value."""
    annotations: dict[str, str] = field(default_factory=dict)
    """More layer annotations (a keyless signer's certificate, chain and bundle)."""


class Signer(Protocol):
    """Signs simple-signing payloads. A key signer today; a keyless one (Fulcio, Rekor)
    can be another implementation: what it returns is stored the same way."""

    @property
    def identity(self) -> str:
        """What the verifier must be told: a public key's fingerprint, or a certificate
        identity for keyless. Safe to log."""
        ...

    def sign(self, payload: bytes) -> Signature: ...

    def made(self, payload: bytes, b64: str) -> bool:
        """Whether `b64` is already this signer's signature of `payload` (so signing
        again would only add a duplicate)."""
        ...


def signature_tag(digest: str) -> str:
    """`sha256:<hex>` → `sha256-<hex>.sig` (cosign `SignatureTag`, containers/image
    `sigstoreAttachmentTag`)."""
    if not reference.is_digest(digest):
        raise ValueError(f"not a digest: {digest!r}")
    return digest.replace(":", "-", 1) + ".sig"


def payload(repository: str, digest: str) -> bytes:
    """The simple-signing payload for `repository@digest`, as cosign writes it
    (sigstore/sigstore pkg/signature/payload: `optional` null when there are no
    annotations). Compact, keys in cosign's order."""
    doc = {
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(data: bytes, signature: Signature) -> dict[str, Any]:
    return {
        "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
        "size": len(data),
        "digest": _digest(data),
        "annotations": {SIGNATURE_ANNOTATION: signature.b64, **signature.annotations},
    }


def config_blob(layers: list[dict[str, Any]]) -> bytes:
    """The image config of a signature manifest, as go-containerregistry writes it for
    cosign (`mutate.AppendLayers(empty.Image, ...)`): the layers' digests as diff ids."""
    doc = {
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [entry["digest"] for entry in layers]},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def manifest(layers: list[dict[str, Any]], config: bytes) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": _digest(config)},
        "layers": layers,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def signature_layers(manifest_bytes: bytes) -> list[dict[str, Any]]:
    """The simple-signing layers of a stored signature manifest (others are skipped,
    as containers/image skips them)."""
    try:
        doc = json.loads(manifest_bytes)
    except ValueError:
        return []
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        return []
    return [
        entry for entry in layers
        if isinstance(entry, dict) and entry.get("mediaType") == SIMPLE_SIGNING_MEDIA_TYPE
    ]  # fmt: skip


# --- verifying ---------------------------------------------------------------------------


def load_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    """An ECDSA P-256 public key from PEM; ValueError names what is wrong."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError:
        raise ValueError("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("not an ECDSA P-256 public key (cosign generate-key-pair makes one)")
    return key


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """`SHA256:<base64>` of the key's DER SubjectPublicKeyInfo: a short name to log."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def verify(
    key: ec.EllipticCurvePublicKey, payload_bytes: bytes, b64: str, repository: str, digest: str
) -> str | None:
    """None if `b64` is `key`'s signature of `payload_bytes` and the payload names
    `repository@digest` as containers-policy requires; else why not."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError:
        return "the signature annotation is not base64"
    try:
        key.verify(raw, payload_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "the signature does not verify with the key"
    try:
        doc = json.loads(payload_bytes)
        critical = doc["critical"]
        signed_digest = critical["image"]["docker-manifest-digest"]
        signed_repo = critical["identity"]["docker-reference"]
        signed_type = critical["type"]
    except (ValueError, KeyError, TypeError):
        return "the signed payload is not a simple-signing payload"
    if signed_type != SIGNATURE_TYPE:
        return f"the signed payload's type is {signed_type!r}"
    if signed_digest != digest:
        return f"the signature is for {signed_digest}, not {digest}"
    if signed_repo != repository:
        return f"the signature is for repository {signed_repo}, not {repository}"
    return None
