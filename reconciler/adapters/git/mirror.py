"""The mirror: a bare cache of one remote branch, read without a work tree, committed to
in a throw-away index and pushed compare-and-swap; moved aside and fetched afresh when
git finds it corrupt. (`remote_head`, the one operation without a mirror, is in
remote.py.)"""

from __future__ import annotations

import glob
import logging
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from reconciler.adapters.git.auth import (
    GitAuth,
    _git_env,
    _normalise_remote,
    redact,
    split_userinfo,
)
from reconciler.adapters.git.commits import _LOG_FORMAT, CommitInfo, _parse_log
from reconciler.adapters.git.remote import _ls_remote
from reconciler.adapters.git.runner import (
    DEFAULT_TIMEOUT,
    _check_branch,
    _check_path,
    _check_rev,
    _explain,
    _MirrorCorrupt,
    _Runner,
)
from reconciler.adapters.git.signing import SshSigningKey
from reconciler.core import load
from reconciler.errors import GitError, PushRejected

_NULL_SHA = "0" * 40
KEPT_CORRUPT_COPIES = 1
"""Corrupt mirrors kept beside the cache for a post-mortem: the newest one only, since
each is a whole mirror's worth of disk."""

_MAX_LINK_BYTES = 4096
"""A symbolic link's target is a path: at most PATH_MAX bytes (limits.h)."""

# The name it had as one module: the log format prints it and operators filter on it.
log = logging.getLogger("reconciler.adapters.git")
_T = TypeVar("_T")


def _git_date(when: datetime) -> str:
    """git's internal date format `<unix seconds> <+hhmm>` (git-commit-tree(1), DATE FORMATS)."""
    offset = when.utcoffset()
    if offset is None:
        raise ValueError("commit date must be timezone-aware")
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{int(when.timestamp())} {sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def _check_person(who: tuple[str, str]) -> None:
    name, email = who
    if not name.strip() or not email.strip() or any(c in name + email for c in "<>\n\r\x00"):
        raise ValueError(f"not a commit identity (name, email): {who!r}")


# --- the mirror ------------------------------------------------------------------------


class Mirror:
    """A local bare cache of one remote repository, read without a checkout.

    `url` is an HTTPS/HTTP, SSH (`ssh://` or `host:path`), `git://` or `file://` URL
    or a local path; `cache_dir` the mirror's directory (created, bare, on first use;
    kept between runs so a restart fetches only what is new). Remote branches land in
    `refs/remotes/origin/<branch>`.
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str],
        auth: GitAuth | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        signing_key: SshSigningKey | None = None,
    ) -> None:
        target, url_auth = split_userinfo(_normalise_remote(url))
        self.url = target
        """The remote as git is given it: no credentials in it."""
        self.display_url = redact(os.fspath(url))
        """The remote as errors and logs show it."""
        self.path = Path(cache_dir)
        self._auth = auth or url_auth
        secrets = self._auth.secrets() if self._auth else []
        env = _git_env(target, self._auth)
        self._git = _Runner(env, self.display_url, secrets, timeout)
        self.signing_key = signing_key
        """Set: every commit this mirror makes is SSH-signed with it (see signing.py)."""
        self._ready = False
        self._partial = False
        # branch -> the remote head this mirror holds (saves a spawn per no-op fetch)
        self._heads: dict[str, str] = {}
        # branch -> (depth, filter) of its last fetch: what a healed mirror fetches again
        self._fetched: dict[str, tuple[int | None, str | None]] = {}
        # (commit, parent) of the last commit this mirror made
        self._made: tuple[str, str | None] | None = None

    # -- set-up --

    def _g(self, *args: str) -> list[str]:
        return [f"--git-dir={self.path}", *args]

    def _ensure_repo(self) -> None:
        if self._ready:
            return
        if not (self.path / "HEAD").is_file():
            if any((self.path / name).exists() for name in ("objects", "refs", "packed-refs")):
                raise _MirrorCorrupt(f"{self.path}: HEAD is missing", "HEAD is missing")
            if self.path.exists() and any(self.path.iterdir()):
                raise GitError(
                    f"{self.path}: cache directory is not empty and not a git mirror; "
                    "point the cache at an empty or earlier mirror directory",
                    transient=False,
                )
            self.path.mkdir(parents=True, exist_ok=True)
            self._git.run(
                ["-c", "init.defaultBranch=main", "init", "--bare", "-q", str(self.path)], "init"
            )
            self._git.run(self._g("config", "remote.origin.url", self.url), "config")
        else:
            # --local: git then checks that this is a repository (HEAD, objects/, refs/)
            # and fails if not, which plain `config` would not; the check costs nothing.
            out = self._git.run(
                self._g("config", "--local", "--get-regexp", r"^remote\.origin\.(url|promisor)$"),
                "config",
                ok_codes=(0, 1),
            ).stdout.decode()
            conf = {}
            for line in out.splitlines():
                key, _, value = line.partition(" ")
                conf[key] = value
            self._partial = conf.get("remote.origin.promisor") == "true"
            if conf.get("remote.origin.url") != self.url:
                # Objects are content-addressed, so a mirror of another URL (or the same
                # repository under a new URL) is still a valid cache.
                self._git.run(self._g("config", "remote.origin.url", self.url), "config")
        self._ready = True

    # -- healing --

    def _healing(self, attempt: Callable[[], _T], check: Callable[[], None] | None = None) -> _T:
        """`attempt()`; if git finds the mirror corrupt, heal it and attempt once more.

        `check` runs between the two, to refuse a retry that cannot succeed.
        """
        try:
            return attempt()
        except _MirrorCorrupt as exc:
            self._heal(exc.symptom)
        if check is not None:
            check()
        return attempt()

    def _heal(self, symptom: str) -> None:
        """Move the corrupt mirror aside, make a new one and fetch what it held."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for n in range(1, 100):
            if not aside.exists():
                break
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            self.path.rename(aside)
            where = f"moved it to {aside}"
        except OSError:  # a mount point (an emptyDir volume) cannot be moved: empty it
            for child in self.path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
            where = "emptied it (it cannot be moved)"
        copies = sorted(self.path.parent.glob(f"{glob.escape(self.path.name)}.corrupt-*"))
        for old in copies[:-KEPT_CORRUPT_COPIES] if KEPT_CORRUPT_COPIES else copies:
            shutil.rmtree(old, ignore_errors=True)
        log.warning(
            "git mirror %s is corrupt (%s): %s; fetching from %s again",
            self.path,
            symptom,
            where,
            self.display_url,
        )
        was_partial = self._partial
        self._ready = self._partial = False
        self._heads.clear()
        self._ensure_repo()
        refilter = "blob:none" if was_partial else None
        if self._fetched:
            for branch, (depth, filter) in sorted(self._fetched.items()):
                self._fetch_branch(branch, depth, filter or refilter)
        else:  # no fetch in this process yet: bring every branch
            self._run_fetch("*", None, refilter)

    def _resolve(self, expr: str) -> str | None:
        proc = self._git.run(
            self._g("rev-parse", "-q", "--verify", expr), "rev-parse", ok_codes=(0, 1)
        )
        return proc.stdout.decode().strip() or None

    def _local_head(self, branch: str) -> str | None:
        return self._resolve(f"refs/remotes/origin/{branch}^{{commit}}")

    # -- remote --

    def remote_head(self, branch: str) -> str | None:
        """The remote's head of `branch` (one `git ls-remote`), None if absent."""
        _check_branch(branch, self.display_url)
        return _ls_remote(self._git, self.url, branch)

    def fetch(self, branch: str, depth: int | None = None, filter: str | None = None) -> str:
        """Bring `branch` into the mirror and return its head commit.

        When the remote head is the one the mirror already holds this costs one
        `git ls-remote` and nothing else. `depth` makes the mirror shallow (later
        fetches without `depth` deepen it to full history); `filter="blob:none"`
        makes it a partial clone whose file contents are fetched when read.
        """
        _check_branch(branch, self.display_url)
        if depth is not None and depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        return self._healing(lambda: self._fetch(branch, depth, filter))

    def _fetch(self, branch: str, depth: int | None, filter: str | None) -> str:
        head = _ls_remote(self._git, self.url, branch)
        if head is None:
            raise GitError(
                f"git fetch {self.display_url}: branch {branch!r} does not exist there; "
                "check the branch name",
                transient=False,
            )
        self._fetched[branch] = (depth, filter)
        wants_full = depth is None and (self.path / "shallow").exists()
        if self._heads.get(branch) == head and not wants_full:
            return head
        self._ensure_repo()
        # (a branch fetched by this process is where `_heads` says: no need to look)
        if not wants_full and branch not in self._heads and self._local_head(branch) == head:
            self._heads[branch] = head
            return head
        return self._fetch_branch(branch, depth, filter)

    def _fetch_branch(self, branch: str, depth: int | None, filter: str | None) -> str:
        (self.path / "FETCH_HEAD").unlink(missing_ok=True)  # (never an old one's)
        self._run_fetch(branch, depth, filter)
        # The remote may have moved again since ls-remote; report what we now hold
        # (what the fetch wrote to FETCH_HEAD, git-fetch(1), else the ref itself).
        fetched = self._fetch_head(branch) or self._local_head(branch)
        if fetched is None:  # pragma: no cover - git fetch succeeded, so the ref exists
            raise GitError(f"git fetch {self.display_url}: {branch!r} missing after fetch")
        self._heads[branch] = fetched
        return fetched

    def _fetch_head(self, branch: str) -> str | None:
        """The commit the last fetch of `branch` brought, from FETCH_HEAD (one line per
        ref: `<sha> TAB [not-for-merge] TAB branch '<name>' of <url>`)."""
        try:
            text = (self.path / "FETCH_HEAD").read_text("utf-8", "replace")
        except OSError:
            return None
        found = None
        for line in text.splitlines():
            sha, _, rest = line.partition("\t")
            if rest.partition("\t")[2].startswith(f"branch '{branch}' of "):
                found = found or sha  # two lines for one branch: ask the ref itself
                if found != sha:
                    return None
        if found is None or len(found) not in (40, 64):
            return None
        return found

    def _run_fetch(self, branch: str, depth: int | None, filter: str | None) -> None:
        """`git fetch` of `branch` (a name or `*`) into `refs/remotes/origin/`."""
        args = ["fetch", "--no-tags", "--quiet"]
        if depth is not None:
            args.append(f"--depth={depth}")
        elif (self.path / "shallow").exists():
            args.append("--unshallow")
        if filter is not None:
            args.append(f"--filter={filter}")
        args += ["origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}"]
        self._git.run(self._g(*args), "fetch")
        if filter is not None:
            self._partial = True

    def fetch_commit(self, sha: str, branch: str, filter: str | None = None) -> None:
        """Make commit `sha` (40 hex, of `branch`) readable, fetching as little as it can.

        Present already: nothing is fetched. Otherwise the commit alone, by its id
        (`--depth=1` in a shallow mirror): protocol v2 servers allow any such want
        (every git since 2.18, and the forges). A server that refuses a want it did not
        advertise ("Server does not allow request for unadvertised object": protocol
        v0 without `uploadpack.allowReachableSHA1InWant`) gets the branch fetched to
        its full history instead. `GitError` when the commit is still not there.
        """
        if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"not a commit id: {sha!r}")
        _check_branch(branch, self.display_url)
        self._healing(lambda: self._fetch_commit(sha, branch, filter))

    def _has_commit(self, sha: str) -> bool:
        # --missing=print: says what is absent instead of fetching it from the promisor
        # (a plain cat-file would fetch a missing commit lazily, with all its history)
        proc = self._git.run(
            self._g("rev-list", "--no-walk", "--missing=print", f"{sha}^{{commit}}"),
            "rev-list",
            ok_codes=(0, 128),
        )
        return proc.returncode == 0

    def _fetch_commit(self, sha: str, branch: str, filter: str | None) -> None:
        self._ensure_repo()
        if self._has_commit(sha):
            return
        args = ["fetch", "--no-tags", "--quiet", "--no-write-fetch-head"]
        if (self.path / "shallow").exists():
            args.append("--depth=1")
        if filter is not None:
            args.append(f"--filter={filter}")
        try:
            self._git.run(self._g(*args, "origin", sha), "fetch")
        except GitError as exc:
            log.info("git fetch %s of commit %s alone failed (%s); fetching the history of %s",
                     self.display_url, sha[:12], exc, branch)  # fmt: skip
            self._run_fetch(branch, None, filter)
        if filter is not None:
            self._partial = True
        if not self._has_commit(sha):
            raise GitError(
                f"git fetch {self.display_url}: commit {sha[:12]} is not on branch {branch!r} "
                "(rewritten history?)",
                transient=False,
            )

    # -- reading --

    def read_files(
        self,
        rev: str,
        predicate: Callable[[str], bool],
        blobs: dict[str, bytes] | None = None,
    ) -> dict[str, bytes | load.Unreadable]:
        """Every file at `rev` whose repository path satisfies `predicate`.

        Without a checkout: one `ls-tree -r -z -l` and one `cat-file --batch` (a partial
        mirror: `ls-tree` without sizes, the missing blobs fetched, a `--batch-check`
        for their sizes). Symbolic links are followed to the file they name;
        submodules are skipped. A link that leads out of the tree or nowhere, and a
        file above `load.MAX_FILE_BYTES` (never read), are `load.Unreadable`.

        `blobs`: contents by blob id from the caller's last read; a blob found there is
        not read again (blobs are content-addressed), and `blobs` is left holding the
        blobs of this read only.
        """
        _check_rev(rev)
        return self._healing(lambda: self._read_files(rev, predicate, blobs))

    def _read_files(
        self, rev: str, predicate: Callable[[str], bool], blobs: dict[str, bytes] | None = None
    ) -> dict[str, bytes | load.Unreadable]:
        self._ensure_repo()
        # -l: each blob's size, so that big ones are never read. Not in a partial
        # mirror, where ls-tree would fetch every absent blob one by one to size it.
        long = () if self._partial else ("-l",)
        out = self._git.run(
            self._g("ls-tree", "-r", "-z", *long, "--full-tree", rev), "ls-tree"
        ).stdout.decode("utf-8", "surrogateescape")
        tree: dict[str, str] = {}
        links: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for entry in out.split("\x00"):
            if not entry:
                continue
            meta, _, path = entry.partition("\t")
            mode, kind, sha, *size = meta.split()
            if kind != "blob":
                continue  # a submodule (commit) has no content here
            (links if mode == "120000" else tree)[path] = sha
            if size:
                sizes[sha] = int(size[0])
        wanted = {p: sha for p, sha in tree.items() if predicate(p)}
        wanted_links = [p for p in links if predicate(p)]
        shas = {*wanted.values(), *(links[p] for p in wanted_links)}
        known = blobs if blobs is not None else {}
        contents: dict[str, bytes | int] = {s: known[s] for s in shas if s in known}
        contents.update(self._cat_blobs(rev, shas - contents.keys(), sizes))
        files: dict[str, bytes | load.Unreadable] = {
            p: _bounded(contents[sha], "") for p, sha in wanted.items()
        }
        for path in wanted_links:
            files[path] = self._follow_link(path, links, tree, contents, sizes)
        if blobs is not None:
            blobs.clear()
            blobs.update((s, c) for s, c in contents.items() if isinstance(c, bytes))
        return files

    def _follow_link(
        self,
        path: str,
        links: dict[str, str],
        blobs: dict[str, str],
        contents: dict[str, bytes | int],
        sizes: dict[str, int],
    ) -> bytes | load.Unreadable:
        """The content of the file the link at `path` leads to, as a checkout would read."""
        seen: set[str] = set()
        while path in links and path not in seen:
            seen.add(path)
            sha = links[path]
            if sha not in contents:
                contents.update(self._cat_blobs(None, {sha}, sizes, _MAX_LINK_BYTES))
            target = contents[sha]
            if isinstance(target, int) or len(target) > _MAX_LINK_BYTES:
                return load.Unreadable(
                    "symbolic link whose target is not a path (it is longer than PATH_MAX)",
                    "commit the file itself, or point the link at a file in the repository",
                )
            path = posixpath.normpath(
                posixpath.join(posixpath.dirname(path), target.decode("utf-8", "surrogateescape"))
            )
        if path not in blobs:
            return load.Unreadable(
                f"symbolic link to {path!r}, which is not a file in the repository",
                "commit the file itself, or point the link at a file in the repository",
            )
        sha = blobs[path]
        if sha not in contents:
            contents.update(self._cat_blobs(None, {sha}, sizes))
        return _bounded(contents[sha], f" (the link's target {path!r})")

    def _cat_blobs(
        self,
        rev: str | None,
        shas: set[str],
        sizes: dict[str, int],
        limit: int = load.MAX_FILE_BYTES,
    ) -> dict[str, bytes | int]:
        """Each blob's content, or its size (an int) if that is above `limit`."""
        if not shas:
            return {}
        if self._partial and rev is not None:
            self._prefetch_missing(rev, shas)
        unsized = sorted(shas - sizes.keys())
        if unsized:
            raw = self._git.run(
                self._g("cat-file", "--batch-check"),
                "cat-file",
                input="".join(f"{s}\n" for s in unsized).encode(),
            ).stdout
            for line in raw.decode().splitlines():
                sha, _, rest = line.partition(" ")
                if rest == "missing" or not rest:
                    raise self._missing(sha)
                sizes[sha] = int(rest.split()[-1])
        small = sorted(s for s in shas if sizes[s] <= limit)
        found: dict[str, bytes | int] = {s: sizes[s] for s in shas if sizes[s] > limit}
        if small:
            raw = self._git.run(
                self._g("cat-file", "--batch"),
                "cat-file",
                input="".join(f"{s}\n" for s in small).encode(),
            ).stdout
            for sha, content in zip(small, _parse_batch(raw, len(small)), strict=True):
                if content is None:
                    raise self._missing(sha)
                found[sha] = content
        return found

    def _missing(self, sha: str) -> _MirrorCorrupt:
        # ls-tree listed it (and a partial mirror has just fetched it): the mirror lost it.
        return _MirrorCorrupt(
            f"cat-file {self.display_url}: object {sha} is missing from the mirror",
            f"object {sha} is missing",
        )

    def _prefetch_missing(self, rev: str, shas: set[str]) -> None:
        """In a partial clone, fetch the blobs we are about to read in one request.

        Reading them one by one would make git fetch each separately (one round trip
        per file). `rev-list --missing=print` lists what is absent without fetching;
        the fetch below is the one git itself runs for a lazy fetch
        (promisor-remote.c `fetch_objects`), given all the ids at once.
        """
        out = self._git.run(
            self._g("rev-list", "--objects", "--no-walk", "--missing=print", rev), "rev-list"
        ).stdout.decode()
        missing = {ln[1:41] for ln in out.splitlines() if ln.startswith("?")} & shas
        if not missing:
            return
        self._git.run(
            [
                "-c",
                "fetch.negotiationAlgorithm=noop",
                *self._g("fetch", "origin", "--no-tags", "--no-write-fetch-head"),
                "--recurse-submodules=no",
                "--filter=blob:none",
                "--stdin",
            ],
            "fetch",
            input="".join(f"{s}\n" for s in sorted(missing)).encode(),
        )

    def read_file(self, rev: str, path: str) -> bytes | None:
        """The content of `path` at `rev`, or None if there is no such file.

        Two `cat-file --batch-command` calls: the size first, so a blob above
        `load.MAX_FILE_BYTES` is refused unread. An unknown `rev` is an error, not None.
        """
        _check_rev(rev)
        _check_path(path)
        return self._healing(lambda: self._read_file(rev, path))

    def _read_file(self, rev: str, path: str) -> bytes | None:
        self._ensure_repo()
        raw = self._git.run(
            self._g("cat-file", "--batch-command"),
            "cat-file",
            input=f"info {rev}^{{commit}}\ninfo {rev}:{path}\n".encode(),
        ).stdout
        first, _, header = raw.partition(b"\n")
        if first.endswith(b" missing") or first.endswith(b" ambiguous"):
            raise GitError(
                f"{self.display_url}: no commit {rev!r} in the mirror; fetch it first",
                transient=False,
            )
        header = header.rstrip(b"\n")
        if header.endswith(b" missing"):
            return None
        sha, kind, size = header.split()
        if kind != b"blob":
            raise GitError(
                f"{self.display_url}: {path!r} at {rev} is a {kind.decode()}, not a file",
                transient=False,
            )
        if int(size) > load.MAX_FILE_BYTES:
            raise GitError(
                f"{self.display_url}: {path!r} at {rev} is {int(size)} bytes, more than "
                f"the {load.MAX_FILE_BYTES} a file of the repository may have",
                transient=False,
            )
        body = self._git.run(self._g("cat-file", "blob", sha.decode()), "cat-file").stdout
        return body

    def log(
        self,
        rev: str,
        paths: Sequence[str] = (),
        max_count: int | None = None,
        first_parent: bool = False,
    ) -> list[CommitInfo]:
        """Commits reachable from `rev` (newest first), touching `paths` if given; with
        `first_parent`, along first parents only (the branch's own line).

        `rev` may be a range (`a..b`). In a shallow mirror history stops at the
        shallow boundary (that commit shows no parents).
        """
        _check_rev(rev)
        for p in paths:
            _check_path(p.rstrip("/"))
        args = ["log", "-z", f"--format=tformat:{_LOG_FORMAT}"]
        if max_count is not None:
            args.append(f"--max-count={max_count}")
        if first_parent:
            args.append("--first-parent")
        args += [rev, "--", *paths]

        def attempt() -> list[CommitInfo]:
            self._ensure_repo()
            return _parse_log(self._git.run(self._g(*args), "log").stdout)

        return self._healing(attempt)

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether `ancestor` is reachable from `descendant` (a commit is its own ancestor)."""
        _check_rev(ancestor)
        _check_rev(descendant)
        return self._healing(lambda: self._is_ancestor(ancestor, descendant))

    def _is_ancestor(self, ancestor: str, descendant: str) -> bool:
        self._ensure_repo()
        proc = self._git.run(
            self._g("merge-base", "--is-ancestor", ancestor, descendant),
            "merge-base",
            ok_codes=(0, 1),
        )
        return proc.returncode == 0

    def diff_paths(self, a: str, b: str) -> list[str]:
        """Paths whose content differs between commits `a` and `b` (sorted, no renames)."""
        _check_rev(a)
        _check_rev(b)

        def attempt() -> list[str]:
            self._ensure_repo()
            out = self._git.run(
                self._g("diff-tree", "-r", "-z", "--name-only", "--no-renames", a, b), "diff-tree"
            ).stdout.decode("utf-8", "surrogateescape")
            return sorted(p for p in out.split("\x00") if p)

        return self._healing(attempt)

    def raw_commit(self, sha: str) -> bytes:
        """The commit object as stored (`git cat-file commit`): headers, signature and
        message, what signing.check_signature reads."""
        _check_rev(sha)

        def attempt() -> bytes:
            self._ensure_repo()
            return self._git.run(self._g("cat-file", "commit", sha), "cat-file").stdout

        return self._healing(attempt)

    def changed_paths(self, sha: str) -> list[str]:
        """Paths commit `sha` changes compared with its first parent (every path of a
        root commit)."""
        _check_rev(sha)

        def attempt() -> list[str]:
            self._ensure_repo()
            out = self._git.run(
                self._g("diff-tree", "-r", "-z", "--name-only", "--no-renames", "--root",
                        "--no-commit-id", "-m", "--first-parent", sha),
                "diff-tree",
            ).stdout.decode("utf-8", "surrogateescape")  # fmt: skip
            return sorted({p for p in out.split("\x00") if p})

        return self._healing(attempt)

    # -- writing --

    def commit(
        self,
        parent: str | None,
        changes: Mapping[str, bytes | None],
        message: str,
        *,
        author: tuple[str, str],
        committer: tuple[str, str] | None = None,
        date: datetime | None = None,
    ) -> str:
        """Make a commit on top of `parent` with `changes` applied; return its id.

        `changes` maps a file path to its new content, or None to delete it. Nothing is
        checked out: the tree is built in a temporary index that is removed afterwards.
        When the changes leave the tree as it was, no commit is made and `parent` is
        returned. Given `date` (author and committer date), the same inputs always give
        the same commit id (unsigned; an SSH signature is made afresh each time). With a
        `signing_key` the commit carries git's own SSH signature. The commit is not
        pushed (see `push`).
        """
        for path in changes:
            _check_path(path)
        _check_person(author)
        committer = committer or author
        _check_person(committer)
        text = message.strip("\n").rstrip()
        if not text.strip():
            raise ValueError("commit message is empty")
        if parent is not None:
            _check_rev(parent)
        return self._healing(
            lambda: self._commit(parent, changes, text, author, committer or author, date)
        )

    def _commit(
        self,
        parent: str | None,
        changes: Mapping[str, bytes | None],
        text: str,
        author: tuple[str, str],
        committer: tuple[str, str],
        date: datetime | None,
    ) -> str:
        self._ensure_repo()
        scratch = Path(tempfile.mkdtemp(prefix="reconciler-commit-"))
        try:
            env = dict(self._git.env, GIT_INDEX_FILE=str(scratch / "index"))
            base_tree = None
            if parent is not None:
                base_tree = self._resolve(f"{parent}^{{tree}}")
                if base_tree is None:
                    raise GitError(
                        f"{self.display_url}: no commit {parent!r} in the mirror; fetch it first",
                        transient=False,
                    )
                self._git.run(self._g("read-tree", base_tree), "read-tree", env=env)
            index_lines = self._index_lines(changes, scratch, env)
            if index_lines:
                self._git.run(
                    self._g("update-index", "--add", "--replace", "--index-info"),
                    "update-index",
                    input="".join(index_lines).encode("utf-8", "surrogateescape"),
                    env=env,
                )
            # --missing-ok: in a partial mirror the parent's blobs are absent (they are on
            # the remote); checking for them would download every file in the tree.
            written = self._git.run(self._g("write-tree", "--missing-ok"), "write-tree", env=env)
            tree = written.stdout.decode().strip()
            if parent is not None and tree == base_tree:
                return parent
            env.update(
                GIT_AUTHOR_NAME=author[0],
                GIT_AUTHOR_EMAIL=author[1],
                GIT_COMMITTER_NAME=committer[0],
                GIT_COMMITTER_EMAIL=committer[1],
            )
            if date is not None:
                env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = _git_date(date)
            args = ["commit-tree", "--no-gpg-sign", tree, "-F", "-"]
            if parent is not None:
                args[2:2] = ["-p", parent]
            if self.signing_key is not None:
                # git runs `ssh-keygen -Y sign -n git -f <key>` (signing.py says why)
                args = [*self.signing_key.git_config(), *args]
                args[args.index("--no-gpg-sign")] = "-S"
            out = self._git.run(
                self._g(*args), "commit-tree", input=(text + "\n").encode(), env=env
            )
            made = out.stdout.decode().strip()
            self._made = (made, parent)
            return made
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _index_lines(
        self, changes: Mapping[str, bytes | None], scratch: Path, env: Mapping[str, str]
    ) -> list[str]:
        """`update-index --index-info` lines: new blobs written, deletions as mode 0."""
        writes = sorted((p, c) for p, c in changes.items() if c is not None)
        lines = [f"0 {_NULL_SHA}\t{p}\n" for p, c in sorted(changes.items()) if c is None]
        if writes:
            blob_dir = scratch / "blobs"
            blob_dir.mkdir()
            files = []
            for i, (_, content) in enumerate(writes):
                f = blob_dir / str(i)
                f.write_bytes(content)
                files.append(str(f))
            out = self._git.run(
                self._g("hash-object", "-w", "--no-filters", "--stdin-paths"),
                "hash-object",
                input="".join(f"{f}\n" for f in files).encode(),
                env=env,
            ).stdout.decode()
            shas = out.split()
            lines += [f"100644 {sha}\t{p}\n" for (p, _), sha in zip(writes, shas, strict=True)]
        return lines

    def push(self, sha: str, branch: str, expected_old: str | None) -> None:
        """Make the remote `branch` point at `sha` if it still points at `expected_old`.

        `sha` must be built on `expected_old` (None: the branch is new). A plain push:
        the remote takes it only as a fast-forward of its current head, so if anyone
        pushed since we read `expected_old`, this raises `PushRejected` (fetch, re-plan,
        retry) and their commit stays. Pushing a commit the remote already has is a
        success (another replica pushed the same commit).
        """
        _check_rev(sha)
        _check_branch(branch, self.display_url)
        if expected_old is not None:
            _check_rev(expected_old)

        def still_there() -> None:
            if self._resolve(f"{sha}^{{commit}}") is None:
                raise GitError(
                    f"git push {self.display_url}: commit {sha} went with the corrupt mirror; "
                    "the next pass makes it again",
                    transient=True,
                )

        self._healing(lambda: self._push(sha, branch, expected_old), still_there)

    def _push(self, sha: str, branch: str, expected_old: str | None) -> None:
        self._ensure_repo()
        built_here = self._made == (sha, expected_old)  # (then it is: no merge-base)
        if expected_old is not None and not built_here and not self._is_ancestor(expected_old, sha):
            raise ValueError(f"{sha} is not built on {expected_old}; commit on the head you read")
        ref = f"refs/heads/{branch}"
        # With a fetch refspec for origin, an accepted push moves the remote-tracking ref
        # too (git-push(1): "remote-tracking branches ... are updated"), so the next
        # fetch is a no-op instead of fetching our own commit back.
        tracking = f"remote.origin.fetch=+{ref}:refs/remotes/origin/{branch}"
        proc = self._git.run(
            [
                "-c",
                tracking,
                *self._g("push", "--porcelain", "--no-verify", "origin", f"{sha}:{ref}"),
            ],
            "push",
            ok_codes=(0, 1),
        )
        status = _push_status(proc.stdout.decode("utf-8", "replace"), ref)
        if status is None:
            detail, transient = _explain(proc.stderr.decode("utf-8", "replace"), self._git.secrets)
            if proc.returncode == 0:  # pragma: no cover - git always prints the ref status
                return
            raise GitError(f"git push {self.display_url}: {detail}", transient=transient)
        flag, summary = status
        if flag == "!":
            raise _rejection(self.display_url, branch, summary)
        # Accepted (" " fast-forward, "*" new branch, "=" already there): remember it.
        self._heads[branch] = sha


def _parse_batch(raw: bytes, count: int) -> list[bytes | None]:
    """Split `cat-file --batch` output: `<sha> <type> <size>\\n<content>\\n` per object
    (None for one reported missing)."""
    out: list[bytes | None] = []
    pos = 0
    for _ in range(count):
        end = raw.index(b"\n", pos)
        header = raw[pos:end].split()
        if len(header) != 3:
            out.append(None)
            pos = end + 1
            continue
        size = int(header[2])
        out.append(raw[end + 1 : end + 1 + size])
        pos = end + 1 + size + 1
    return out


def _bounded(content: bytes | int, where: str) -> bytes | load.Unreadable:
    """A blob's content, or why it was not read: `_cat_blobs` gives big ones as a size."""
    return content if isinstance(content, bytes) else load.too_large(content, where)


def _push_status(stdout: str, ref: str) -> tuple[str, str] | None:
    """`(flag, summary)` for `ref` from `git push --porcelain` (git-push(1), OUTPUT)."""
    for line in stdout.splitlines():
        if len(line) > 2 and line[1] == "\t":
            refs, _, summary = line[2:].partition("\t")
            if refs.endswith(f":{ref}"):
                return line[0], summary
    return None


def _rejection(display_url: str, branch: str, summary: str) -> GitError:
    where = f"git push {display_url} {branch}"
    low = summary.lower()
    if "checked out" in low:
        return GitError(
            f"{where}: {summary}: that repository is not bare and has {branch!r} checked "
            "out, and git refuses to move a checked-out branch; point the reconciler at a "
            "bare repository (git clone --bare), or at another branch",
            transient=False,
        )
    raced = (
        "fetch first",
        "non-fast-forward",
        "stale info",
        "cannot lock ref",
        "incorrect old value",
        # receive-pack lost the ref-transaction race to a concurrent push (the ref moved
        # between its advertisement and its update); hooks say "declined" instead.
        "failed to update ref",
        "failed to lock",
    )
    if summary.startswith("[rejected]") or any(r in low for r in raced):
        return PushRejected(f"{where}: the remote moved on ({summary}); fetch and re-plan")
    if summary.startswith("[remote rejected]"):
        return GitError(
            f"{where}: {summary}; the server refused the push (a protected branch or a "
            "hook?): give the reconciler's credentials push rights to this branch",
            transient=False,
        )
    return GitError(f"{where}: {summary}", transient=True)
