"""Image signatures in the registry: signing with a key file, storing and reading
cosign-format signature manifests (the format: core/cosign.py)."""

from __future__ import annotations

import base64
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler.adapters.registry.client import RegistryClient
from reconciler.adapters.registry.media import OCI_MANIFEST
from reconciler.core import cosign
from reconciler.core.reference import ImageRef
from reconciler.errors import ConfigError, RegistryError

log = logging.getLogger("reconciler.signatures")


class KeySigner:
    """A `cosign.Signer` holding an ECDSA P-256 private key (PEM, PKCS#8 or SEC1, not
    encrypted; `openssl ecparam -name prime256v1 -genkey -noout` makes one). The key
    stays in this object: its repr, its errors and the logs name only the file and the
    public key's fingerprint."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, source: str) -> None:
        self._key = key
        self.source = source
        self.public_key = key.public_key()
        self.identity = cosign.key_fingerprint(self.public_key)

    def __repr__(self) -> str:
        return f"KeySigner({self.source}, {self.identity})"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeySigner:
        where = Path(path).absolute()
        fix = "pass an unencrypted ECDSA P-256 private key in PEM (cosign's .key is encrypted: " \
              "convert it with `openssl ec`)"  # fmt: skip
        try:
            if where.stat().st_mode & 0o077 and stat.S_ISREG(where.stat().st_mode):
                log.warning("--image-signing-key %s is readable by other users; chmod 600 it",
                            where)  # fmt: skip
            data = where.read_bytes()
        except OSError as exc:
            raise ConfigError.simple(
                f"--image-signing-key {where}: cannot read it ({exc.strerror})", fix=fix
            ) from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ConfigError.simple(
                f"--image-signing-key {where}: not an unencrypted PEM private key", fix=fix
            ) from None
        finally:
            del data
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ConfigError.simple(
                f"--image-signing-key {where}: not an ECDSA P-256 key", fix=fix
            )
        return cls(key, str(where))

    def public_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def made(self, payload: bytes, b64: str) -> bool:
        # the payload names repository and digest itself: any sound signature counts
        try:
            self.public_key.verify(base64.b64decode(b64, validate=True), payload,
                                   ec.ECDSA(hashes.SHA256()))  # fmt: skip
        except (ValueError, InvalidSignature):
            return False
        return True

    def sign(self, payload: bytes) -> cosign.Signature:
        der = self._key.sign(payload, ec.ECDSA(hashes.SHA256()))
        return cosign.Signature(base64.b64encode(der).decode())


@dataclass(frozen=True)
class StoredSignature:
    payload: bytes
    b64: str


def read_signatures(
    registry: RegistryClient, image: ImageRef, digest: str
) -> list[StoredSignature]:
    """The simple-signing signatures stored for `digest` in `image`'s repository, as
    containers/image fetches them (`appendSignaturesFromSigstoreAttachments`)."""
    repo = f"{image.registry}/{image.repository}"
    tag = cosign.signature_tag(digest)
    if registry.manifest_digest(repo, tag) is None:
        return []
    stored = registry.get_manifest(repo, tag, accept=(OCI_MANIFEST,))
    out = []
    for entry in cosign.signature_layers(stored.data):
        b64 = entry.get("annotations", {}).get(cosign.SIGNATURE_ANNOTATION)
        if isinstance(b64, str) and isinstance(entry.get("digest"), str):
            out.append(StoredSignature(registry.get_blob(repo, entry["digest"]), b64))
    return out


def sign_image(
    registry: RegistryClient, image: ImageRef, digest: str, signer: cosign.Signer
) -> bool:
    """Make sure `repository@digest` carries a signature by `signer`; True if one was
    added. Idempotent: an existing signature of the same payload that verifies with
    the signer's key is kept and nothing is written. Other signatures stay (cosign adds
    a layer per signature)."""
    repo = f"{image.registry}/{image.repository}"
    tag = cosign.signature_tag(digest)
    data = cosign.payload(repo, digest)
    payload_digest = cosign.layer(data, cosign.Signature(""))["digest"]
    layers = []
    if registry.manifest_digest(repo, tag) is not None:
        stored = registry.get_manifest(repo, tag, accept=(OCI_MANIFEST,))
        layers = cosign.signature_layers(stored.data)
        for entry in layers:
            b64 = entry.get("annotations", {}).get(cosign.SIGNATURE_ANNOTATION)
            if entry.get("digest") != payload_digest or not isinstance(b64, str):
                continue
            if signer.made(data, b64):
                return False
    layers = [*layers, cosign.layer(data, signer.sign(data))]
    config = cosign.config_blob(layers)
    try:
        registry.push_blob(repo, data)
        registry.push_blob(repo, config)
        registry.put_manifest(repo, tag, cosign.manifest(layers, config), OCI_MANIFEST)
    except RegistryError as exc:
        raise RegistryError(f"signing {repo}@{digest}: {exc}", transient=exc.transient) from None
    log.info("signed %s@%s with %s", repo, digest[:19], signer.identity)
    return True
