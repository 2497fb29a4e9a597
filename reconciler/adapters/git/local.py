"""A local clone of the config repository: read by revision, written beside the checkout.

Stage: edge, for the commands an admin or a CI job runs in a clone (`plan --base/--head`,
`build --ref`, `history`, `rollback`). Input: the path of a work tree (or of a bare
repository). Outputs: commit ids for revisions (`resolve`), a read-only `Mirror` view for
reading files and history at any commit, and new commits (reverts, a hold pin) made in
a temporary linked work tree and placed on a branch.

Why this shape:
- *Never the work tree for reading.* A plan must describe the commits, not whatever is
  edited or untracked in the checkout, so files are read from Git objects. The reading
  is `Mirror`'s (one `ls-tree`, one `cat-file --batch`); to give it the clone's objects
  without letting it touch the clone (a `Mirror` keeps its own refs and config), the
  view is a scratch bare repository whose `objects/info/alternates` names the clone's
  object store (gitrepository-layout(5), "objects/info/alternates"). Nothing is copied.
- *Writing with git's own revert.* `git revert` in a temporary linked work tree (`git
  worktree add --detach`) gives git's three-way merge, conflict detection and message
  format ("Revert "…" / This reverts commit …"), and leaves the admin's checkout, index
  and stash alone. The worktree is removed afterwards.
- *Placing the result* is a compare-and-swap: a new branch is created with `git
  update-ref <ref> <new> <zero>` (fails if it exists); the current branch moves by `git
  merge --ff-only` (it refuses to overwrite local edits), or by `update-ref <ref> <new>
  <old>` in a bare repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from reconciler.adapters.git import Mirror
from reconciler.errors import ConfigError, ConfigProblem, GitError

_ZERO = "0" * 40
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


class LocalRepository:
    """A clone on this machine (see the module docstring). Use as a context manager, or
    call `close()`, to remove the scratch view."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_dir():
            raise ConfigError(
                ConfigProblem(f"{self.path} is not a directory", fix="pass --repo DIR")
            )
        try:
            out = self._git(
                "rev-parse", "--path-format=absolute", "--git-common-dir", "--is-bare-repository"
            )
        except GitError:
            raise ConfigError(
                ConfigProblem(
                    f"{self.path} is not a Git repository",
                    fix="pass --repo with the path of a clone of the config repository",
                )
            ) from None
        common, bare = out.splitlines()[:2]
        self.git_dir = Path(common)
        self.bare = bare == "true"
        self._scratch = Path(tempfile.mkdtemp(prefix="reconciler-view-"))
        self.view = self._make_view(self._scratch / "view.git")
        """A `Mirror` reading this repository's objects (by commit id, not by ref)."""

    def __enter__(self) -> LocalRepository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    # -- reading ---------------------------------------------------------------------------

    def resolve(self, rev: str) -> str:
        """The commit id `rev` names here (a branch, tag, `origin/main`, `HEAD~2`, an id)."""
        if not rev or rev.startswith("-") or any(c in rev for c in "\n\r\x00"):
            raise ConfigError(ConfigProblem(f"{rev!r} is not a revision", fix="pass a commit"))
        proc = self._run(["rev-parse", "-q", "--verify", "--end-of-options", f"{rev}^{{commit}}"])
        sha = proc.stdout.strip()
        if proc.returncode != 0 or not _SHA_RE.match(sha):
            shallow = (self.git_dir / "shallow").exists()
            hint = (
                "; this clone is shallow: fetch the history (git fetch --unshallow), or in CI "
                "clone with full history (actions/checkout fetch-depth: 0, GitLab GIT_DEPTH: 0)"
                if shallow
                else ""
            )
            raise ConfigError(
                ConfigProblem(
                    f"no commit {rev!r} in {self.path}",
                    fix=f"fetch it first (git fetch origin), or check the name{hint}",
                )
            )
        return sha

    def current_branch(self) -> str | None:
        """The branch HEAD is on, or None when HEAD is detached."""
        proc = self._run(["symbolic-ref", "-q", "HEAD"])
        ref = proc.stdout.strip()
        return ref.removeprefix("refs/heads/") if proc.returncode == 0 and ref else None

    def branch_exists(self, name: str) -> bool:
        return self._run(["rev-parse", "-q", "--verify", f"refs/heads/{name}"]).returncode == 0

    # -- writing ---------------------------------------------------------------------------

    def revert(
        self, head: str, commits: Sequence[str], author: tuple[str, str] | None = None
    ) -> str:
        """Revert `commits` (in the order given) on top of `head`, one revert commit each;
        return the last one. Nothing is placed on a branch (see `place`)."""
        if not commits:
            raise ValueError("nothing to revert")
        with self._worktree(head) as wt:
            for sha in commits:
                parents = self._git("rev-list", "--parents", "-n", "1", sha).split()[1:]
                args = ["revert", "--no-edit"]
                if len(parents) > 1:
                    args += ["-m", "1"]  # a merge: undo what it brought to the first parent
                proc = self._run([*args, sha], cwd=wt, author=author)
                if proc.returncode != 0:
                    conflicted = self._run(
                        ["diff", "--name-only", "--diff-filter=U"], cwd=wt
                    ).stdout.split()
                    self._run(["revert", "--abort"], cwd=wt)
                    detail = (
                        f"conflicts in {', '.join(conflicted)}"
                        if conflicted
                        else _last_line(proc.stderr)
                    )
                    raise GitError(
                        f"git revert {sha[:10]} in {self.path}: {detail}; later commits changed "
                        f"the same lines: revert it by hand (git revert {sha[:10]}) and resolve, "
                        "or pin the image back with --hold",
                        transient=False,
                    )
            return self._git("rev-parse", "HEAD", cwd=wt).strip()

    def commit_files(
        self,
        head: str,
        changes: Mapping[str, bytes],
        message: str,
        author: tuple[str, str] | None = None,
    ) -> str:
        """A commit on top of `head` writing `changes` (path → content); return its id."""
        with self._worktree(head) as wt:
            for rel, data in changes.items():
                target = wt / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            self._git("add", "--", *changes, cwd=wt)
            proc = self._run(
                ["commit", "--quiet", "--no-verify", "-F", "-"],
                cwd=wt,
                author=author,
                input=message,
            )
            if proc.returncode != 0:
                raise GitError(
                    f"git commit in {self.path}: {_last_line(proc.stderr)}", transient=False
                )
            return self._git("rev-parse", "HEAD", cwd=wt).strip()

    def place(self, new: str, old: str, branch: str | None) -> str:
        """Put commit `new` (built on `old`) on a new `branch`, or, without one, move the
        current branch forward to it. Returns the branch name."""
        if branch is not None:
            proc = self._run(["check-ref-format", "--branch", branch])
            if proc.returncode != 0:
                raise ConfigError(
                    ConfigProblem(f"{branch!r} is not a valid branch name", fix="pick another")
                )
            if self.branch_exists(branch):
                raise ConfigError(
                    ConfigProblem(
                        f"branch {branch!r} already exists in {self.path}",
                        fix="pick another --branch name, or delete the old branch",
                    )
                )
            self._git("update-ref", f"refs/heads/{branch}", new, _ZERO)
            return branch
        current = self.current_branch()
        if current is None:
            raise ConfigError(
                ConfigProblem(
                    f"{self.path} has a detached HEAD: no current branch to commit to",
                    fix="check out a branch, or pass --branch NAME",
                )
            )
        if self.bare:
            self._git("update-ref", f"refs/heads/{current}", new, old)
            return current
        proc = self._run(["merge", "--ff-only", "--quiet", new], cwd=self.path)
        if proc.returncode != 0:
            raise GitError(
                f"git merge --ff-only in {self.path}: {_last_line(proc.stderr)}; the commits "
                f"are made ({new[:10]}): commit or stash local changes and run "
                f"`git merge --ff-only {new[:10]}`, or pass --branch NAME",
                transient=False,
            )
        return current

    # -- plumbing --------------------------------------------------------------------------

    def _make_view(self, view: Path) -> Mirror:
        objects = self.git_dir / "objects"
        subprocess.run(
            ["git", "init", "--bare", "-q", str(view)],
            check=True,
            capture_output=True,
            env=_env(),
        )
        (view / "objects" / "info" / "alternates").write_text(f"{objects}\n")
        if (self.git_dir / "shallow").exists():
            # Without the shallow list, `git log` would look for parents that are absent.
            shutil.copyfile(self.git_dir / "shallow", view / "shallow")
        return Mirror(self.git_dir, view)

    class _Worktree:
        def __init__(self, repo: LocalRepository, head: str) -> None:
            self.repo = repo
            self.head = head
            self.path = Path(tempfile.mkdtemp(prefix="reconciler-wt-", dir=repo._scratch))

        def __enter__(self) -> Path:
            self.repo._git("worktree", "add", "--quiet", "--detach", str(self.path), self.head)
            return self.path

        def __exit__(self, *exc: object) -> None:
            self.repo._run(["worktree", "remove", "--force", str(self.path)])
            self.repo._run(["worktree", "prune"])

    def _worktree(self, head: str) -> LocalRepository._Worktree:
        return LocalRepository._Worktree(self, head)

    def _run(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        author: tuple[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = _env()
        if author is not None:
            name, email = author
            env.update(
                GIT_AUTHOR_NAME=name,
                GIT_AUTHOR_EMAIL=email,
                GIT_COMMITTER_NAME=name,
                GIT_COMMITTER_EMAIL=email,
            )
        try:
            return subprocess.run(
                ["git", "-C", str(cwd or self.path), *args],
                capture_output=True,
                text=True,
                env=env,
                input=input,
                timeout=300,
                check=False,
            )
        except FileNotFoundError as exc:
            raise GitError("git is not installed (no `git` on PATH)", transient=False) from exc

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        proc = self._run(args, cwd=cwd)
        if proc.returncode != 0:
            raise GitError(
                f"git {args[0]} in {cwd or self.path}: {_last_line(proc.stderr)}", transient=False
            )
        return proc.stdout


def _env() -> dict[str, str]:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    env.pop("LANGUAGE", None)
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(var, None)  # set by hooks or CI; they would redirect every command
    return env


def _last_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if any("author identity unknown" in ln.lower() or "tell me who you are" in ln.lower()
           for ln in lines):  # fmt: skip
        return "no commit identity: set git config user.name and user.email, or pass --author"
    telling = [ln for ln in lines if ln.startswith(("fatal:", "error:", "CONFLICT"))]
    return (telling or lines or ["(no message)"])[-1]
