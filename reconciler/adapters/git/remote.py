"""The remote's head of a branch: one `git ls-remote`, no mirror. Kept apart from the
mirror (and what it imports) so that a caller that only asks "did the branch move?",
such as an idle `reconciler agent --once`, loads git's runner and auth and no more."""

from __future__ import annotations

import os

from reconciler.adapters.git.auth import (
    GitAuth,
    _git_env,
    _normalise_remote,
    redact,
    split_userinfo,
)
from reconciler.adapters.git.runner import _check_branch, _Runner


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
