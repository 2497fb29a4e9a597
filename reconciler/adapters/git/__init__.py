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

How the promises are kept (cheap no-op, shallow and partial reads, healing, ...):
docs/design/git.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from reconciler.adapters.git.auth import GitAuth, redact, split_userinfo
from reconciler.adapters.git.commits import CommitInfo
from reconciler.adapters.git.remote import remote_head

if TYPE_CHECKING:
    from reconciler.adapters.git.mirror import Mirror
    from reconciler.adapters.git.signing import CommitSignature, SshSigningKey, check_signature

# Loaded on first use: the mirror brings the config loader (pydantic), which a caller
# that only needs `remote_head` or `GitAuth` (an idle `agent --once`) does without.
_LAZY = {
    "Mirror": "reconciler.adapters.git.mirror",
    "CommitSignature": "reconciler.adapters.git.signing",
    "SshSigningKey": "reconciler.adapters.git.signing",
    "check_signature": "reconciler.adapters.git.signing",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CommitInfo",
    "CommitSignature",
    "GitAuth",
    "Mirror",
    "SshSigningKey",
    "check_signature",
    "redact",
    "remote_head",
    "split_userinfo",
]
