"""The exception tree: what the user must fix versus what is worth retrying.

`ConfigError` stalls a pool until a new commit changes its inputs (Flux's *Stalled*,
kopf's `PermanentError`); `TransientError` is retried with backoff (kopf's
`TemporaryError`). Adapters translate foreign exceptions into these at the edge
(`raise RegistryError(...) from exc`), so callers never see an `httpx` or `git` error.

Messages never carry secrets: adapters pass registry hosts and repository names, never
tokens, passwords or pull-secret content.
"""

from __future__ import annotations

from dataclasses import dataclass


class ReconcilerError(Exception):
    """Base of every error this package raises on purpose."""


@dataclass(frozen=True, eq=True)
class ConfigProblem:
    """One thing wrong with the watched repository, located as precisely as we can.

    Rendered as `file:line: Kind name: field: problem; fix`, every part optional but
    the problem, so an admin can jump straight to it.
    """

    problem: str
    file: str | None = None
    line: int | None = None
    kind: str | None = None
    name: str | None = None
    field: str | None = None
    fix: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        obj = f"{self.kind} {self.name}: " if self.kind and self.name else ""
        field = f"{self.field}: " if self.field else ""
        fix = f"; {self.fix}" if self.fix else ""
        return f"{where}{obj}{field}{self.problem}{fix}"


class ConfigError(ReconcilerError):
    """The user must fix the repository; retrying the same commit cannot help.

    Carries one or more `ConfigProblem`s so `validate` can list every problem at once.
    """

    def __init__(self, problems: ConfigProblem | list[ConfigProblem]) -> None:
        self.problems = [problems] if isinstance(problems, ConfigProblem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def simple(cls, problem: str, **where: str | int | None) -> ConfigError:
        return cls(ConfigProblem(problem, **where))  # type: ignore[arg-type]


class TransientError(ReconcilerError):
    """Something outside the repository failed; the same work may succeed later."""


class RegistryError(ReconcilerError):
    """A registry refused or failed a request. `transient` says whether to retry."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class GitError(ReconcilerError):
    """A Git operation failed (clone, fetch, commit, push)."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class PushRejected(GitError):
    """The remote moved under us: fetch, re-plan and try again (compare-and-swap)."""


class BuildError(ReconcilerError):
    """An image build failed; `log_tail` holds the last lines of the builder's output."""

    def __init__(self, message: str, *, log_tail: str = "", transient: bool = False) -> None:
        super().__init__(message if not log_tail else f"{message}\n--- last lines ---\n{log_tail}")
        self.log_tail = log_tail
        self.transient = transient


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same inputs later might succeed."""
    if isinstance(exc, TransientError):
        return True
    return bool(getattr(exc, "transient", False))
