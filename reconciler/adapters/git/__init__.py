"""Git: the watched repository's remote, a local bare mirror of it, and pin commits.

Stage: edge. Inputs: a remote (URL, local path or file:// URL), a branch, optional
credentials. Outputs: the remote head (`remote_head`), files at a revision
(`Mirror.read_files`, `Mirror.read_file`), history (`Mirror.log`), new commits made
without a work tree (`Mirror.commit`) and compare-and-swap pushes (`Mirror.push`).
The reconcile loop and the node agent are built on these; nothing here knows about
pools or pins.

Why the git CLI and not GitPython: every operation is one plumbing command whose
output we parse (`ls-remote`, `fetch`, `ls-tree -z`, `cat-file --batch`, `log -z`,
`commit-tree`, `push --porcelain`). GitPython would spawn the same commands plus its
own (`git version` on first use, long-lived `cat-file` workers to manage), and the
loop's "nothing moved" pass must cost one `git ls-remote` and nothing else. Its
persistent `cat-file` would save one process per pass at most (`read_files` batches a
pass's reads into one `cat-file --batch`), so GitPython is not a dependency (issue 15).

How the promises are kept:
- *Cheap no-op*: `Mirror.fetch` asks `ls-remote` first and fetches only when the
  remote head differs from the one it last saw (kept in memory, checked against the
  mirror's ref once per process). Flux does the same remote-HEAD check before it
  clones (fluxcd/pkg `git/gogit/clone.go`).
- *Shallow and partial*: `fetch(depth=1, filter="blob:none")` makes the mirror
  shallow and a partial clone (the remote becomes a promisor, `git help
  partial-clone`); later reads fetch missing blobs on demand, in one batch for
  `read_files`.
- *No work tree*: commits are built in a throw-away index (`GIT_INDEX_FILE`:
  `read-tree`, `hash-object`, `update-index --index-info`, `write-tree`,
  `commit-tree`), so nothing is checked out and nothing is left behind. With a fixed
  date the same inputs give the same commit id, so two replicas that compute the same
  pins make the same commit and the second push is "up to date".
- *Compare-and-swap push*: a plain push, never `--force` and never
  `--force-with-lease` (which is a force when the lease holds). The remote accepts
  only a fast-forward, and receive-pack updates the ref only if it still holds the
  value it advertised, so a writer that lost the race gets `PushRejected` and nobody's
  commit is lost. `--atomic` would add nothing for one ref and fails on servers that
  do not advertise it, so it is not used.
- *Secrets*: HTTP credentials travel as an `http.<origin>.extraHeader` set through
  `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` (environment, never argv
  or a URL; `git help config`, "GIT_CONFIG_COUNT"); user:password in a URL is taken
  out of the URL into the same header. SSH keys are given by path in
  `GIT_SSH_COMMAND`. `GIT_TERMINAL_PROMPT=0` always, so a missing credential fails
  instead of waiting for a terminal. Every error names the operation, the URL with
  its userinfo redacted, and git's most telling stderr line, scrubbed of any secret.

Local repositories: a path or file:// URL works like any remote (the mirror fetches
from it). Pushing to a non-bare repository's checked-out branch is refused by git
(`receive.denyCurrentBranch`); that surfaces as a `GitError` that says to use a bare
repository or another branch.

Hostile or broken input is bounded (DESIGN.md §2, promise 9): a link out of the tree
and a blob above `load.MAX_FILE_BYTES` come back as `load.Unreadable` in place of the
file (a problem of that file, not an error ending the pass), and big blobs are never
read. A mirror that git finds corrupt (a truncated object or pack, a missing HEAD or
refs directory) is moved aside to `<cache>.corrupt-<time>` (only the newest such copy
is kept), fetched afresh, and the operation tried once more, with one warning.

A `Mirror` is not thread-safe; use one per cache directory per process.
"""

from __future__ import annotations

import base64
import glob
import logging
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, TypeVar

from reconciler.core import load
from reconciler.errors import GitError, PushRejected

__all__ = [
    "CommitInfo",
    "GitAuth",
    "Mirror",
    "redact",
    "remote_head",
    "split_userinfo",
]

_NULL_SHA = "0" * 40
# What `git check-ref-format --branch` refuses, checked here so a bad --branch is a
# clear error without a process spawn (git-check-ref-format(1), rules 1-10).
_BAD_BRANCH_RE = re.compile(
    r"(^[-/.])|(\.\.)|(//)|([\x00-\x20\x7f~^:?*\[\\])|(@\{)|(\.lock$)|([/.]$)"
)
_URL_USERINFO_RE = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*)://([^/@\s]+)@")

DEFAULT_TIMEOUT = 300.0
"""Seconds one git command may take before it is killed (network commands)."""

KEPT_CORRUPT_COPIES = 1
"""Corrupt mirrors kept beside the cache for a post-mortem: the newest one only, since
each is a whole mirror's worth of disk."""

_MAX_LINK_BYTES = 4096
"""A symbolic link's target is a path: at most PATH_MAX bytes (limits.h)."""

log = logging.getLogger(__name__)
_T = TypeVar("_T")


# --- credentials and redaction ----------------------------------------------------------


@dataclass(frozen=True)
class GitAuth:
    """Credentials for a remote. Build with `token`, `basic` or `ssh`.

    HTTPS: `username` + `password` are sent as Basic auth; a token is the password
    (GitHub, GitLab, Gitea and Bitbucket all accept a token that way; the username is
    then mostly ignored). SSH: `ssh_key` is the path of an unencrypted private key (a
    deploy key), `known_hosts` a file holding the server's host key. Without
    `known_hosts`, `host_key_checking` defaults to `accept-new` (trust on first use,
    then pinned in ssh's default known_hosts).

    The password never appears in `repr`, argv, a URL, an error or a log line.
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssh_key: str | None = None
    known_hosts: str | None = None
    host_key_checking: Literal["yes", "accept-new", "no"] | None = None

    @classmethod
    def token(cls, token: str, username: str = "x-access-token") -> GitAuth:
        """A personal access / deploy token, sent as the Basic-auth password."""
        return cls(username=username, password=token)

    @classmethod
    def basic(cls, username: str, password: str) -> GitAuth:
        return cls(username=username, password=password)

    @classmethod
    def ssh(
        cls,
        key: str | os.PathLike[str],
        known_hosts: str | os.PathLike[str] | None = None,
        host_key_checking: Literal["yes", "accept-new", "no"] | None = None,
    ) -> GitAuth:
        return cls(
            ssh_key=os.fspath(key),
            known_hosts=os.fspath(known_hosts) if known_hosts is not None else None,
            host_key_checking=host_key_checking,
        )

    def secrets(self) -> list[str]:
        """Strings that must never be shown (for scrubbing messages)."""
        if not self.password:
            return []
        basic = base64.b64encode(f"{self.username or ''}:{self.password}".encode()).decode()
        return [self.password, basic]


def redact(text: str) -> str:
    """`text` with the password (or HTTP token) in any `scheme://userinfo@` removed.

    `https://user:pw@host` → `https://user:***@host`; `https://TOKEN@host` →
    `https://***@host`; an SSH user (`ssh://git@host`) is not a secret and stays.
    """

    def _one(m: re.Match[str]) -> str:
        scheme, userinfo = m.group(1), m.group(2)
        if ":" in userinfo:
            return f"{scheme}://{userinfo.split(':', 1)[0]}:***@"
        if scheme.lower() in ("http", "https", "ftp", "ftps"):
            return f"{scheme}://***@"
        return m.group(0)

    return _URL_USERINFO_RE.sub(_one, text)


def split_userinfo(url: str) -> tuple[str, GitAuth | None]:
    """Take HTTP(S) credentials out of a URL: `(url without them, their GitAuth)`.

    `https://user:pw@host/r.git` → Basic user/pw; `https://TOKEN@host/r.git` → a token.
    Other URLs come back unchanged (an SSH user name is part of the address).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    user, has_pw, pw = userinfo.partition(":")
    user, pw = urllib.parse.unquote(user), urllib.parse.unquote(pw)
    if has_pw:
        return clean, GitAuth.basic(user, pw)
    return clean, GitAuth.token(user)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return redact(text)


def _normalise_remote(url: str | os.PathLike[str]) -> str:
    """A URL as git should see it: local paths made absolute, userinfo kept for now."""
    s = os.fspath(url)
    if "://" in s:
        return s
    # git's rule (connect.c `parse_connect_url`): a colon before the first slash
    # makes it scp-like SSH `host:path`; anything else is a local path.
    colon, slash = s.find(":"), s.find("/")
    if colon > 0 and (slash == -1 or colon < slash):
        return s
    return os.path.abspath(s)


def _git_env(
    url: str, auth: GitAuth | None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for git commands that talk to `url` with `auth`."""
    env = dict(os.environ if base is None else base)
    # Never wait for a terminal; English messages so errors can be classified.
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    env.pop("LANGUAGE", None)
    parts = urllib.parse.urlsplit(url) if "://" in url else None
    scheme = parts.scheme.lower() if parts else ""
    if parts and auth is not None and auth.password is not None and scheme in ("http", "https"):
        basic = base64.b64encode(f"{auth.username or ''}:{auth.password}".encode()).decode()
        n = int(env.get("GIT_CONFIG_COUNT", "0") or "0")
        # Scoped to this origin: the header is not sent to any other host.
        env[f"GIT_CONFIG_KEY_{n}"] = f"http.{scheme}://{parts.netloc}/.extraHeader"
        env[f"GIT_CONFIG_VALUE_{n}"] = f"Authorization: Basic {basic}"
        env["GIT_CONFIG_COUNT"] = str(n + 1)
    is_ssh = scheme in ("ssh", "git+ssh", "ssh+git") or (
        not parts and not url.startswith("/") and ":" in url
    )
    if auth is not None and auth.ssh_key is not None:
        if not os.path.isfile(auth.ssh_key):
            raise GitError(
                f"{redact(url)}: SSH key {auth.ssh_key} does not exist or is not a file; "
                "check the deploy key path",
                transient=False,
            )
        checking = auth.host_key_checking or ("yes" if auth.known_hosts else "accept-new")
        opts = [
            "IdentitiesOnly=yes",
            "BatchMode=yes",
            f"StrictHostKeyChecking={checking}",
            "ConnectTimeout=30",
            "LogLevel=ERROR",
        ]
        if auth.known_hosts:
            opts.append(f"UserKnownHostsFile={auth.known_hosts}")
        cmd = ["ssh", "-i", auth.ssh_key, *(arg for o in opts for arg in ("-o", o))]
        env["GIT_SSH_COMMAND"] = shlex.join(cmd)
        env["GIT_SSH_VARIANT"] = "ssh"
    elif is_ssh and "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        # No key given: use the user's ssh set-up, but never prompt.
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


# --- running git and explaining its failures --------------------------------------------

# (stderr fragment, transient, fix). First match wins; matched case-insensitively.
_DIAGNOSES: tuple[tuple[str, bool, str], ...] = (
    (
        "unprotected private key file",
        False,
        "the SSH key file is readable by others; chmod 600 it (or mount the Secret with "
        "defaultMode 0400)",
    ),
    (
        "host key verification failed",
        False,
        "the server's SSH host key is unknown or changed; put it in the known_hosts file "
        "(ssh-keyscan), or allow accept-new host key checking",
    ),
    (
        "permission denied (publickey",
        False,
        "the server refused the SSH key; add the deploy key (with write access for "
        "pushes) to the repository",
    ),
    ("authentication failed", False, "check the username and password or token"),
    (
        "could not read username",
        False,
        "the server wants credentials; pass a token or user/password",
    ),
    (
        "could not read password",
        False,
        "the server wants a password; pass a token or user/password",
    ),
    ("invalid username or password", False, "check the username and password or token"),
    ("returned error: 401", False, "check the username and password or token"),
    ("returned error: 403", False, "the credentials lack access to this repository"),
    ("returned error: 404", False, "check the repository URL"),
    ("does not appear to be a git repository", False, "check the repository URL or path"),
    ("repository not found", False, "check the repository URL"),
    ("command not found", False, "install the missing program (ssh, for SSH remotes)"),
    ("not found", False, "check the repository URL"),
    ("no such file or directory", False, "check the repository path"),
    ("repository not exported", False, "check the repository URL"),
    ("no such repository", False, "check the repository URL"),
    ("no such remote ref", False, "check the branch name"),
    ("unknown revision", False, "the commit is not in the mirror; fetch first"),
    ("not a valid object name", False, "the commit is not in the mirror; fetch first"),
    ("not a valid commit name", False, "the commit is not in the mirror; fetch first"),
)


# What git says about a broken repository of its own (object-file.c, packfile.c,
# setup.c). Matched on the stderr of commands run on the mirror, skipping "remote:"
# lines (a broken remote is not healed by fetching from it again). "bad object" alone
# is not here: it is also what an unknown commit id gives.
_CORRUPTION = (
    "is corrupt",
    "does not match index",
    "unable to stream",
    "exceeds 32 bytes",
    "inflate:",
    "unable to unpack",
    "hash mismatch",
    "garbage at end of loose object",
    "bad packed object",
    "packfile",
    "not a git repository",
    "can only be used inside a git repository",
    "bad config",
    "broken ref",
    "reference broken",
    "unknown object type",
)


class _MirrorCorrupt(GitError):
    """git found the mirror itself broken; `symptom` is the line that says so."""

    def __init__(self, message: str, symptom: str) -> None:
        super().__init__(message, transient=True)
        self.symptom = symptom


def _corruption(stderr: str) -> str | None:
    for line in stderr.splitlines():
        low = line.strip().lower()
        if low and not low.startswith("remote:") and any(f in low for f in _CORRUPTION):
            return line.strip()
    return None


# Fragments that mean "no (acceptable) credentials": with credentials given, git asks
# for new ones after a 401 and, with prompts off, says it could not read a username.
_REFUSED = ("could not read username", "could not read password", "returned error: 401")


def _explain(stderr: str, secrets: Sequence[str]) -> tuple[str, bool]:
    """git's most telling stderr line (scrubbed), plus a fix; and whether to retry."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    low = [ln.lower() for ln in lines]
    if secrets and any(f in ln for ln in low for f in _REFUSED):
        return "the server refused the credentials; check the username and password or token", False
    for fragment, transient, fix in _DIAGNOSES:
        for i, ln in enumerate(low):
            if fragment in ln:
                return f"{_scrub(lines[i], secrets)}; {fix}", transient
    telling = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    line = (telling or lines or ["(no message)"])[-1]
    # Anything not known to need a fix is worth retrying (GitError's default).
    return _scrub(line, secrets), True


@dataclass
class _Runner:
    """Runs git with a fixed environment and turns failures into `GitError`s."""

    env: dict[str, str]
    display_url: str
    secrets: list[str]
    timeout: float

    def run(
        self,
        args: Sequence[str],
        op: str,
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        ok_codes: tuple[int, ...] = (0,),
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            proc = subprocess.run(
                ["git", *args],
                input=input,
                capture_output=True,
                env=self.env if env is None else env,
                timeout=self.timeout if timeout is None else timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise GitError(
                "git is not installed (no `git` on PATH); install git", transient=False
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise GitError(
                f"git {op} {self.display_url}: no answer within {exc.timeout:.0f} s", transient=True
            ) from exc
        failed = proc.returncode not in ok_codes
        if failed or proc.stderr:
            stderr = proc.stderr.decode("utf-8", "replace")
            # On the mirror, even a command that succeeds may have said the mirror is
            # damaged (a fetch that worked around a broken pack): heal it all the same.
            symptom = _corruption(stderr) if any("--git-dir=" in a for a in args[:3]) else None
            if symptom is not None:
                detail = _scrub(symptom, self.secrets)
                raise _MirrorCorrupt(f"git {op} {self.display_url}: {detail}", detail)
            if failed:
                detail, transient = _explain(stderr, self.secrets)
                raise GitError(f"git {op} {self.display_url}: {detail}", transient=transient)
        return proc


def _check_branch(branch: str, display_url: str) -> None:
    if not branch or _BAD_BRANCH_RE.search(branch):
        raise GitError(
            f"{display_url}: {branch!r} is not a valid branch name; pass a name such as 'main'",
            transient=False,
        )


def _check_rev(rev: str) -> None:
    if not rev or rev.startswith("-") or any(c in rev for c in "\n\r\x00 \t"):
        raise ValueError(f"not a revision: {rev!r}")


def _check_path(path: str) -> None:
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or any(p.lower() == ".git" for p in parts)
        or any(c in path for c in "\n\r\x00")
    ):
        raise ValueError(f"not a relative repository file path: {path!r}")


# --- remote head -----------------------------------------------------------------------


def remote_head(
    url: str | os.PathLike[str],
    branch: str,
    auth: GitAuth | None = None,
    *,
    timeout: float = 60.0,
) -> str | None:
    """The commit `refs/heads/<branch>` points at on the remote, or None if it is absent.

    Exactly one `git ls-remote` (protocol v2 sends only the matching ref).
    """
    target, url_auth = split_userinfo(_normalise_remote(url))
    auth = auth or url_auth
    display = redact(os.fspath(url))
    _check_branch(branch, display)
    runner = _Runner(_git_env(target, auth), display, auth.secrets() if auth else [], timeout)
    return _ls_remote(runner, target, branch)


def _ls_remote(runner: _Runner, target: str, branch: str) -> str | None:
    ref = f"refs/heads/{branch}"
    out = runner.run(["ls-remote", "--", target, ref], "ls-remote").stdout.decode()
    # ls-remote patterns match any ref *ending* in the pattern; keep the exact one.
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return None


# --- history ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitInfo:
    """One commit as `git log` shows it. Times are timezone-aware."""

    sha: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    author_time: datetime
    committer_name: str
    committer_email: str
    committer_time: datetime
    subject: str
    body: str
    trailers: dict[str, list[str]]
    """`Key: value` trailers as git parses them (`git interpret-trailers`), unfolded;
    a key given twice keeps both values in order."""


# Fields of `git log --format`, one per NUL-separated slot (commit messages cannot hold
# NUL: git refuses them, commit.c `commit_tree_extended`).
_LOG_FORMAT = "%x00".join(
    ["%H", "%P", "%an", "%ae", "%aI", "%cn", "%ce", "%cI", "%s", "%b", "%(trailers:only,unfold)"]
)
_LOG_FIELDS = 11


def _parse_trailers(text: str) -> dict[str, list[str]]:
    trailers: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            trailers.setdefault(key.strip(), []).append(value.strip())
    return trailers


def _parse_log(raw: bytes) -> list[CommitInfo]:
    fields = raw.decode("utf-8", "replace").split("\x00")
    if fields and fields[-1] == "":
        fields.pop()
    commits = []
    for i in range(0, len(fields) - _LOG_FIELDS + 1, _LOG_FIELDS):
        sha, parents, an, ae, at, cn, ce, ct, subject, body, trailers = fields[i : i + _LOG_FIELDS]
        commits.append(
            CommitInfo(
                sha=sha,
                parents=tuple(parents.split()),
                author_name=an,
                author_email=ae,
                author_time=datetime.fromisoformat(at),
                committer_name=cn,
                committer_email=ce,
                committer_time=datetime.fromisoformat(ct),
                subject=subject,
                body=body.rstrip("\n"),
                trailers=_parse_trailers(trailers),
            )
        )
    return commits


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
        self._ready = False
        self._partial = False
        # branch -> the remote head this mirror holds (saves a spawn per no-op fetch)
        self._heads: dict[str, str] = {}
        # branch -> (depth, filter) of its last fetch: what a healed mirror fetches again
        self._fetched: dict[str, tuple[int | None, str | None]] = {}

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
        if not wants_full and self._local_head(branch) == head:
            self._heads[branch] = head
            return head
        return self._fetch_branch(branch, depth, filter)

    def _fetch_branch(self, branch: str, depth: int | None, filter: str | None) -> str:
        self._run_fetch(branch, depth, filter)
        # The remote may have moved again since ls-remote; report what we now hold.
        fetched = self._local_head(branch)
        if fetched is None:  # pragma: no cover - git fetch succeeded, so the ref exists
            raise GitError(f"git fetch {self.display_url}: {branch!r} missing after fetch")
        self._heads[branch] = fetched
        return fetched

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

    # -- reading --

    def read_files(
        self, rev: str, predicate: Callable[[str], bool]
    ) -> dict[str, bytes | load.Unreadable]:
        """Every file at `rev` whose repository path satisfies `predicate`.

        Without a checkout: one `ls-tree -r -z -l` and one `cat-file --batch` (a partial
        mirror: `ls-tree` without sizes, the missing blobs fetched, a `--batch-check`
        for their sizes). Symbolic links are followed to the file they name;
        submodules are skipped. A link that leads out of the tree or nowhere, and a
        file above `load.MAX_FILE_BYTES` (never read), are `load.Unreadable`.
        """
        _check_rev(rev)
        return self._healing(lambda: self._read_files(rev, predicate))

    def _read_files(
        self, rev: str, predicate: Callable[[str], bool]
    ) -> dict[str, bytes | load.Unreadable]:
        self._ensure_repo()
        # -l: each blob's size, so that big ones are never read. Not in a partial
        # mirror, where ls-tree would fetch every absent blob one by one to size it.
        long = () if self._partial else ("-l",)
        out = self._git.run(
            self._g("ls-tree", "-r", "-z", *long, "--full-tree", rev), "ls-tree"
        ).stdout.decode("utf-8", "surrogateescape")
        blobs: dict[str, str] = {}
        links: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for entry in out.split("\x00"):
            if not entry:
                continue
            meta, _, path = entry.partition("\t")
            mode, kind, sha, *size = meta.split()
            if kind != "blob":
                continue  # a submodule (commit) has no content here
            (links if mode == "120000" else blobs)[path] = sha
            if size:
                sizes[sha] = int(size[0])
        wanted = {p: sha for p, sha in blobs.items() if predicate(p)}
        wanted_links = [p for p in links if predicate(p)]
        contents = self._cat_blobs(
            rev, {*wanted.values(), *(links[p] for p in wanted_links)}, sizes
        )
        files: dict[str, bytes | load.Unreadable] = {
            p: _bounded(contents[sha], "") for p, sha in wanted.items()
        }
        for path in wanted_links:
            files[path] = self._follow_link(path, links, blobs, contents, sizes)
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
    ) -> list[CommitInfo]:
        """Commits reachable from `rev` (newest first), touching `paths` if given.

        `rev` may be a range (`a..b`). In a shallow mirror history stops at the
        shallow boundary (that commit shows no parents).
        """
        _check_rev(rev)
        for p in paths:
            _check_path(p.rstrip("/"))
        args = ["log", "-z", f"--format=tformat:{_LOG_FORMAT}"]
        if max_count is not None:
            args.append(f"--max-count={max_count}")
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
        the same commit id. The commit is not pushed (see `push`).
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
            out = self._git.run(
                self._g(*args), "commit-tree", input=(text + "\n").encode(), env=env
            )
            return out.stdout.decode().strip()
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
        if expected_old is not None and not self._is_ancestor(expected_old, sha):
            raise ValueError(f"{sha} is not built on {expected_old}; commit on the head you read")
        ref = f"refs/heads/{branch}"
        proc = self._git.run(
            self._g("push", "--porcelain", "--no-verify", "origin", f"{sha}:{ref}"),
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
        # Accepted (" " fast-forward, "*" new branch, "=" already there): remember it,
        # so the next fetch is a no-op instead of fetching our own commit back.
        self._git.run(self._g("update-ref", f"refs/remotes/origin/{branch}", sha), "update-ref")
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
    if isinstance(content, bytes):
        return content
    return load.Unreadable(
        f"is {content:,} bytes{where}, more than the {load.MAX_FILE_BYTES:,} a config file "
        "may have",
        "split it into several files, or ship large content in the image",
    )


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
