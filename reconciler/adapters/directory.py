"""Reading the watched repository's configuration files from a directory.

Stage: edge, for `validate`, `render` and `plan --repo DIR`. Input: a directory (a
checkout, usually). Output: every config file by repository path, its bytes or, for a
file it refuses, a `load.Unreadable` saying why, so that loading reports it as a problem
of that file.

It reads what `git.Mirror.read_files` would read from the same tree in Git, and nothing
outside the directory (DESIGN.md §2, promise 9):
- a symbolic link is followed only while its target stays in the tree, written as Git
  stores it (a relative path; an absolute target names another file on every other
  machine, so it is refused like one that climbs out with `..`);
- a symbolic link to a directory is not descended: Git records the link, not the files
  beneath it, so `run` would not see them either. Named like a config file, it is
  refused;
- only regular files are read: a FIFO, a device or a socket is refused without blocking,
  and a file above `load.MAX_FILE_BYTES` without being read.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from pathlib import Path

from reconciler.core import load
from reconciler.errors import ConfigError, ConfigProblem

_MAX_LINKS = 40
"""Links followed in a chain before giving up (Linux's own limit, path_resolution(7))."""

# O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: the last component
# was checked to be no link, and must still be none when opened.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY


def read_config_files(root: str | os.PathLike[str]) -> dict[str, bytes | load.Unreadable]:
    """Every config file under `root` (see `load.is_config_path`), by relative path."""
    base = Path(root)
    if not base.is_dir():
        raise ConfigError(ConfigProblem(f"{base} is not a directory", fix="pass --repo DIR"))
    real_root = os.path.realpath(base)
    files: dict[str, bytes | load.Unreadable] = {}
    for dirpath, dirnames, filenames in os.walk(real_root):
        rel_dir = os.path.relpath(dirpath, real_root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for name in dirnames:  # os.walk lists links to directories here, not descended
            rel = rel_dir + name
            if load.is_config_path(rel) and os.path.islink(os.path.join(dirpath, name)):
                files[rel] = _read(real_root, rel)
        # prune dot-directories and pins/ early (they can be large: .git), and other
        # repositories inside this one (a submodule, a nested clone: a `.git` of their
        # own), whose files a commit of this repository does not hold either
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and f"{rel_dir}{d}" != load.PINS_DIR
            and not os.path.islink(os.path.join(dirpath, d))
            and not os.path.lexists(os.path.join(dirpath, d, ".git"))
        )
        for name in filenames:
            rel = rel_dir + name
            if load.is_config_path(rel):
                files[rel] = _read(real_root, rel)
    return files


def _read(root: str, rel: str) -> bytes | load.Unreadable:
    """The bytes of the regular file at `rel` (following links in the tree), or why not."""
    target = _resolve(root, rel)
    if isinstance(target, load.Unreadable):
        return target
    where = f" (the link's target {target!r})" if target != rel else ""
    try:
        fd = os.open(os.path.join(root, target), _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket: it cannot be opened at all
            return _not_a_file("a socket", where)
        if exc.errno == errno.ENOENT and where:
            return load.Unreadable(
                f"symbolic link to {target!r}, which is not a file in the repository",
                "commit the file itself, or point the link at a file in the repository",
            )
        return load.Unreadable(
            f"cannot be read{where}: {exc.strerror}",
            "make it a readable regular file",
        )
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            if stat.S_ISDIR(info.st_mode):
                return load.Unreadable(
                    f"symbolic link to the directory {target!r}, not to a file",
                    "point the link at a file (Git stores a link to a directory, not the "
                    "files beneath it)",
                )
            kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device or special file"
            return _not_a_file(kind, where)
        if info.st_size > load.MAX_FILE_BYTES:
            return load.too_large(info.st_size, where)
        chunks, left = [], load.MAX_FILE_BYTES + 1  # one byte more: it may grow as we read
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > load.MAX_FILE_BYTES:
        return load.too_large(len(data), where)
    return data


def _resolve(root: str, rel: str) -> str | load.Unreadable:
    """`rel` with its symbolic links followed as Git's tree would: lexically, in the tree.

    The result has no link in any of its components (os.walk does not follow links, and
    a link's target is checked against `realpath`), so opening it reads that very file.
    """
    path, hops = rel, 0
    while os.path.islink(os.path.join(root, path)):
        hops += 1
        if hops > _MAX_LINKS:
            return load.Unreadable(
                "symbolic links lead in a loop (or a chain of more than 40)",
                "point the link at a file in the repository",
            )
        link = os.readlink(os.path.join(root, path))
        if link.startswith("/"):
            return load.Unreadable(
                f"symbolic link to the absolute path {link!r}, outside the repository",
                "point the link at a file in the repository with a relative path",
            )
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), link))
        parts = path.split("/")
        if parts[0] == ".." or any(p.lower() == ".git" for p in parts):
            return load.Unreadable(
                f"symbolic link to {link!r}, which leads out of the repository",
                "commit the file itself, or point the link at a file in the repository",
            )
    full = os.path.normpath(os.path.join(root, path))
    if hops and os.path.realpath(full) != full:
        return load.Unreadable(
            f"symbolic link to {path!r}, which leads through a link to a directory",
            "point the link at the file itself, not through a linked directory",
        )
    return path


def _not_a_file(kind: str, where: str) -> load.Unreadable:
    return load.Unreadable(
        f"is {kind}{where}, not a regular file",
        "replace it with a regular file",
    )
