"""Decoding Ignition file contents: `data:` URLs, gzip, and verification hashes.

Stage: used by loading (to refuse undecodable contents early, with the field path) and
by the image plan (to write the bytes). Input: a `Resource` dict. Output: bytes.

Hand-written rather than a library: the standard library's only `data:` decoder is
`urllib.request.DataHandler`, which lives behind a network opener (and the core may not
import `urllib.request`), and it accepts malformed URLs that Ignition's decoder
(vincent-petithory/dataurl, RFC 2397) refuses. The parser is twenty lines.

Bounded: no file may decode to more than `MAX_CONTENTS_BYTES`, checked on the encoded
length before decoding and while inflating, so a gzip bomb costs at most that much.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from typing import Any
from urllib.parse import unquote_to_bytes

from reconciler.errors import ReconcilerError

MAX_CONTENTS_BYTES = 1_572_864
"""The most one file's contents may decode to: 1.5 MiB, the largest object the
Kubernetes API stores (etcd's default `--max-request-bytes`; MCO's MaxMachineConfigSize).
A MachineConfig holding a larger file could never be created in a cluster, so refusing
it loses nothing, and it bounds what a gzip bomb can make us hold in memory."""

_GZIP_SLACK = MAX_CONTENTS_BYTES // 1024 + 1024
"""How much larger than its content a gzip stream can be: incompressible data is
stored in blocks with 5 bytes of framing per 64 KiB, plus header and trailer (RFC 1951
§3.2.4, RFC 1952 §2.3)."""

_GZIP_MAGIC = b"\x1f\x8b"


class ContentsError(ReconcilerError, ValueError):
    """The contents cannot be decoded; the message says why, `fix` what to do."""

    def __init__(self, problem: str, fix: str, field: str = "source") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.field = field


def decode_data_url(url: str, limit: int = MAX_CONTENTS_BYTES) -> bytes:
    """Bytes of an RFC 2397 `data:[<mediatype>][;base64],<data>` URL, at most `limit`."""
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
    is_base64 = header.endswith(";base64")
    # Before decoding anything: percent-encoding takes at most 3 characters per byte,
    # base64 4 per 3 bytes (and percent-encoded base64 both).
    longest = 3 * (4 * -(-limit // 3) if is_base64 else limit)
    if len(payload) > longest:
        raise _too_large(f"contents are {len(payload):,} characters of data: URL")
    raw = unquote_to_bytes(payload)
    if is_base64:
        if len(raw) > 4 * -(-limit // 3):
            raise _too_large(f"contents are {len(raw):,} characters of base64")
        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ContentsError(
                f"data: URL is not valid base64 ({exc})",
                "re-encode the content with `base64 -w0`",
            ) from exc
    if len(raw) > limit:
        raise _too_large(f"contents are {len(raw):,} bytes")
    return raw


def _too_large(what: str) -> ContentsError:
    return ContentsError(
        f"{what}; a file may have at most {MAX_CONTENTS_BYTES:,} bytes (no MachineConfig "
        "holding more fits in the Kubernetes API)",
        "ship large files in the image (MachineOSConfig containerfile) instead of inline contents",
    )


def gunzip(data: bytes, limit: int = MAX_CONTENTS_BYTES) -> bytes:
    """`gzip.decompress(data)`, refused as soon as the output would pass `limit`.

    Inflates in pieces of at most what is left of `limit`, so a bomb (1 GiB of zeros is
    1 MB of gzip) costs `limit` bytes of memory. Like `gzip.decompress`: concatenated
    members are joined, zero padding after a member is skipped, and anything else after
    it is an error.
    """
    out: list[bytes] = []
    size = 0
    rest = data
    while rest:
        if not rest.startswith(_GZIP_MAGIC):
            raise zlib.error("data after the gzip stream is not gzip" if out else "not gzip")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # +16: gzip header and trailer
        pending = rest
        while not inflater.eof:
            chunk = inflater.decompress(pending, limit + 1 - size)
            size += len(chunk)
            if size > limit:
                raise _too_large(f"contents gunzip to more than {limit:,} bytes")
            out.append(chunk)
            pending = inflater.unconsumed_tail
            if not pending and not chunk:
                raise EOFError("the gzip stream ends before its end marker")
        rest = inflater.unused_data.lstrip(b"\x00")
    return b"".join(out)


def decode_resource(resource: dict[str, Any]) -> bytes:
    """The file's bytes: source decoded, decompressed, and checked against its hash."""
    source = resource.get("source")
    if source is None:
        return b""
    compression = resource.get("compression") or ""
    if compression == "gzip":
        raw = decode_data_url(source, MAX_CONTENTS_BYTES + _GZIP_SLACK)
        try:
            data = gunzip(raw)
        except (EOFError, zlib.error) as exc:
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
        data = decode_data_url(source)
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
