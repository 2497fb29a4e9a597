"""The config layer: plan entries → one deterministic tar+gzip layer blob.

Stage: after the image plan, inside the native builder (and the Containerfile context,
which carries the same tar). Input: `Entry` values (path, type, mode, numeric owner,
bytes or link target). Output: a `Layer` with the uncompressed tar, its digest (the
`diff_id` that goes into the image config), the gzip blob, its digest and size.

Deterministic by construction, so the same entries give the same bytes on every run:
- entries are sorted by path (hard links after everything else, so their targets are
  already extracted), and every parent directory is written explicitly (0755, root,
  unless the plan gives it);
- PAX format; mtime 0, numeric uid/gid only (`uname`/`gname` empty, so the owner
  never depends on the build host's passwd), no atime/ctime records;
- the gzip member is assembled here: a fixed 10-byte header (no name, mtime 0, XFL 0,
  OS 255), a raw deflate stream at a fixed level, CRC-32 and size. Not
  `gzip.compress`: its header changed between Python versions (3.11 delegates
  `mtime=0` to zlib, which writes OS=3 instead of 255).

What this does not fix: the deflate bytes come from the zlib the interpreter is linked
against. The same zlib gives the same bytes; another implementation or version
(zlib-ng, as Fedora ships, or a zlib release that changes its match finder) may
compress the same tar differently, giving another layer digest and so another
predicted manifest digest. The uncompressed tar and its `diff_id` never change, and
the image *tag* is derived from the inputs (`identity.py`), not from this digest, so an
image built on one machine is still found and reused by every other: "same inputs,
same digest" is promised per zlib, "same inputs, same tag" everywhere.

Hand-written on `tarfile` rather than a library: nothing in the standard library or
our pins writes reproducible tars, and the rules above are twenty lines.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from reconciler.core import canonical
from reconciler.errors import ReconcilerError

EntryKind = Literal["file", "dir", "symlink", "hardlink"]

COMPRESS_LEVEL = 6
# RFC 1952 §2.3: ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=255 (unknown).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
}


class LayerError(ReconcilerError, ValueError):
    """Entries that cannot form a layer (duplicate path, a file used as a directory)."""


@dataclass(frozen=True)
class Entry:
    """One filesystem object of the config layer.

    `path` is absolute (`/etc/chrony.conf`). `data` is the content of a file; `target`
    the link target of a symlink (as written, relative or absolute) or the absolute
    path of the file a hard link points to (which must be in the same layer).
    """

    path: str
    kind: EntryKind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    target: str = ""


@dataclass(frozen=True)
class Layer:
    tar: bytes
    diff_id: str
    """`sha256:` of the uncompressed tar: what the image config's `rootfs.diff_ids` holds."""
    blob: bytes
    """The gzip-compressed tar, as uploaded."""
    digest: str
    """`sha256:` of `blob`: the layer descriptor's digest."""
    size: int


def parent_dirs(path: str) -> list[str]:
    """`/a/b/c` → `['/a', '/a/b']`."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def complete(entries: Iterable[Entry]) -> list[Entry]:
    """The entries plus every missing parent directory, in tar order; raises
    `LayerError` for a path given twice or a parent that is not a directory."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        if not entry.path.startswith("/") or entry.path == "/":
            raise LayerError(f"{entry.path!r} is not an absolute path below /")
        if entry.path in by_path and by_path[entry.path] != entry:
            raise LayerError(f"{entry.path} is given twice with different content")
        by_path[entry.path] = entry
    for path in list(by_path):
        for parent in parent_dirs(path):
            existing = by_path.get(parent)
            if existing is None:
                by_path[parent] = Entry(parent, "dir", 0o755)
            elif existing.kind != "dir":
                raise LayerError(f"{parent} is a {existing.kind} but {path} is inside it")
    for path, entry in list(by_path.items()):
        if entry.kind == "hardlink":
            target = by_path.get(entry.target)
            if target is None or target.kind != "file":
                raise LayerError(
                    f"hard link {entry.path} points to {entry.target!r}, which is not a "
                    "file in this layer"
                )
            # One inode: the link's header carries the target's metadata, because some
            # extractors (buildah's ADD) apply a link header's mode and owner to it.
            by_path[path] = Entry(
                path, "hardlink", target.mode, target.uid, target.gid, target=target.path
            )
    # Hard links last: an extractor links to a target it has already written.
    return sorted(by_path.values(), key=lambda e: (e.kind == "hardlink", e.path))


def write_tar(entries: Iterable[Entry]) -> bytes:
    """The uncompressed, deterministic tar of the entries (parents added)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in complete(entries):
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            info.type = _TYPES[entry.kind]
            info.mode = 0o777 if entry.kind == "symlink" else entry.mode & 0o7777
            info.uid, info.gid = entry.uid, entry.gid
            info.uname = info.gname = ""
            info.mtime = 0
            if entry.kind == "symlink":
                info.linkname = entry.target
            elif entry.kind == "hardlink":
                info.linkname = entry.target.lstrip("/")
            if entry.kind == "file":
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def gzip_member(data: bytes, level: int = COMPRESS_LEVEL) -> bytes:
    """One gzip member with a fixed header (RFC 1952) around a raw deflate stream."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(data) + compressor.flush()
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return _GZIP_HEADER + body + trailer


def build_layer(entries: Iterable[Entry]) -> Layer:
    """Tar and gzip the entries; same entries (in any order) → same bytes."""
    tar = write_tar(entries)
    blob = gzip_member(tar)
    return Layer(
        tar=tar,
        diff_id=canonical.sha256_digest(tar),
        blob=blob,
        digest=canonical.sha256_digest(blob),
        size=len(blob),
    )
