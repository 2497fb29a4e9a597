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

from reconciler.adapters.git.auth import GitAuth, redact, split_userinfo
from reconciler.adapters.git.commits import CommitInfo
from reconciler.adapters.git.mirror import Mirror, remote_head

__all__ = [
    "CommitInfo",
    "GitAuth",
    "Mirror",
    "redact",
    "remote_head",
    "split_userinfo",
]
