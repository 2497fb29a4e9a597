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

from reconciler.adapters.git.auth import GitAuth, redact, split_userinfo
from reconciler.adapters.git.commits import CommitInfo
from reconciler.adapters.git.mirror import Mirror, remote_head
from reconciler.adapters.git.signing import CommitSignature, SshSigningKey, check_signature

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
