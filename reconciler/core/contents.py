"""Decoding Ignition file contents: `data:` URLs, gzip, and verification hashes.

Stage: used by loading (to refuse undecodable contents early, with the field path) and
by the image plan (to write the bytes). Input: a `Resource` dict. Output: bytes.

Hand-written rather than a library: the standard library's only `data:` decoder is
`urllib.request.DataHandler`, which lives behind a network opener (and the core may not
import `urllib.request`), and it accepts malformed URLs that Ignition's decoder
(vincent-petithory/dataurl, RFC 2397) refuses. The parser is twenty lines.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import zlib
from typing import Any
from urllib.parse import unquote_to_bytes


class ContentsError(ValueError):
    """The contents cannot be decoded; the message says why, `fix` what to do."""

    def __init__(self, problem: str, fix: str, field: str = "source") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.field = field


def decode_data_url(url: str) -> bytes:
    """Bytes of an RFC 2397 `data:[<mediatype>][;base64],<data>` URL."""
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0] if ":" in url else ""
        what = f"{scheme}: URLs are" if scheme else "a source that is not a URL is"
        raise ContentsError(
            f"{what} not supported (MCO only decodes data: URLs; it never fetches)",
            "inline the file as 'data:;base64,<base64 of the content>'",
        )
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise ContentsError(
            "data: URL has no ',' between the media type and the data",
            "write 'data:,<percent-encoded text>' or 'data:;base64,<base64>'",
        )
    if header.endswith(";base64"):
        try:
            return base64.b64decode(unquote_to_bytes(payload), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ContentsError(
                f"data: URL is not valid base64 ({exc})",
                "re-encode the content with `base64 -w0`",
            ) from exc
    return unquote_to_bytes(payload)


def decode_resource(resource: dict[str, Any]) -> bytes:
    """The file's bytes: source decoded, decompressed, and checked against its hash."""
    source = resource.get("source")
    if source is None:
        return b""
    raw = decode_data_url(source)
    compression = resource.get("compression") or ""
    if compression == "gzip":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ContentsError(
                f"compression is gzip but the data does not gunzip ({exc})",
                "compress with `gzip -c FILE | base64 -w0`, or drop compression",
            ) from exc
    elif compression:
        raise ContentsError(
            f"compression {compression!r} is not supported",
            "use 'gzip' or leave it empty",
            field="compression",
        )
    else:
        data = raw
    expected = (resource.get("verification") or {}).get("hash")
    if expected:
        algo, _, digest = expected.partition("-")
        if algo not in ("sha256", "sha512") or not digest:
            raise ContentsError(
                f"verification hash {expected!r} is not '<sha256|sha512>-<hex>'",
                "write e.g. 'sha512-' followed by `sha512sum` of the content",
                field="verification.hash",
            )
        actual = hashlib.new(algo, data).hexdigest()
        if actual != digest.lower():
            raise ContentsError(
                f"verification hash does not match the contents ({algo} is {actual})",
                "update the hash or the contents",
                field="verification.hash",
            )
    return data
