"""Running git: one command with a timeout and scrubbed output, and its failures
explained (what went wrong, whether a retry may help, the fix); argument checks that
fail before a process is spawned."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.adapters.git.auth import _scrub
from reconciler.errors import GitError

# What `git check-ref-format --branch` refuses, checked here so a bad --branch is a
# clear error without a process spawn (git-check-ref-format(1), rules 1-10).
_BAD_BRANCH_RE = re.compile(
    r"(^[-/.])|(\.\.)|(//)|([\x00-\x20\x7f~^:?*\[\\])|(@\{)|(\.lock$)|([/.]$)"
)

DEFAULT_TIMEOUT = 300.0
"""Seconds one git command may take before it is killed (network commands)."""


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
