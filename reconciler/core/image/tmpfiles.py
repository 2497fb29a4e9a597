"""tmpfiles.d: the lines that create a pool's /var paths at boot, and their escaping.

Stage: part of the image plan. Input: a path, mode, owner and content. Output: one
tmpfiles.d(5) line. Reasons (`f+~`, base64, the size limit): `docs/design/image.md`.
"""

from __future__ import annotations

import base64

TMPFILES_PATH = "/usr/lib/tmpfiles.d/10-gitops-bootc.conf"
# systemd reads config lines up to LONG_LINE_MAX (1 MiB); base64 grows data by 4/3.
MAX_INLINE_BYTES = 512 * 1024


def tmpfiles_path(path: str) -> str:
    """A path as a tmpfiles.d field: `%` doubled (specifiers); quoted when it holds
    whitespace, quotes or backslashes (inside quotes only `\\"` and `\\\\` are escapes)."""
    escaped = path.replace("%", "%%")
    if any(c.isspace() or c in "\"'\\" for c in escaped):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def tmpfiles_argument(text: str) -> str:
    """An argument field (C escapes and specifiers apply): `%` doubled, backslashes
    and every whitespace or control character written as `\\xNN`."""
    out = []
    for c in text.replace("%", "%%"):
        if c == "\\":
            out.append("\\\\")
        elif c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out)


def file_line(kind: str, path: str, mode: int, owner: tuple[str, str], data: bytes) -> str:
    head = f"{kind}{'~' if data else ''} {tmpfiles_path(path)} {mode:04o} {owner[0]} {owner[1]} -"
    return f"{head} {base64.b64encode(data).decode()}" if data else head
