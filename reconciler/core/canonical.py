"""Canonical serialisation and digests: the one place bytes for hashing are made.

Canonical JSON here is `json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)` encoded as UTF-8: stable across Python versions and dict order,
which is all the rendered-name and inputs digests need (RFC 8785 would differ only for
floats, which none of our documents contain).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

SHA256_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
"""An OCI digest as `sha256_digest` makes it (inputs digests, pinned manifests)."""


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_digest(data: bytes) -> str:
    """An OCI digest string: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
