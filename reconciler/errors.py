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
    """Base of every error this package raises on purpose.

    `transient` is the one way to say "retrying the same inputs later may succeed"
    (registry 503, network, a push race); otherwise the user must change something.
    """

    transient: bool = False

    def __init__(self, message: str = "", *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


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
        # A file name that is not UTF-8 reaches us with surrogate escapes (Git trees and
        # os.walk keep its bytes); print them as \udcff rather than fail to print at all.
        text = f"{where}{obj}{field}{self.problem}{fix}"
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


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


class InternalError(ReconcilerError):
    """A bug: an unexpected exception caught at an error boundary (a pool's planning, a
    pass, a command), reported in one line instead of a traceback."""

    def __init__(self, where: str, exc: BaseException) -> None:
        super().__init__(
            f"internal error while {where}: {type(exc).__name__}: {exc} "
            "(a bug in the reconciler: please report it; --debug shows the traceback)"
        )


class RegistryError(ReconcilerError):
    """A registry refused or failed a request. `transient` says whether to retry."""


class GitError(ReconcilerError):
    """A Git operation failed (clone, fetch, commit, push); transient unless told."""

    transient = True


class PushRejected(GitError):
    """The remote moved under us: fetch, re-plan and try again (compare-and-swap)."""


class BuildError(ReconcilerError):
    """An image build failed; `log_tail` holds the last lines of the builder's output."""

    def __init__(self, message: str, *, log_tail: str = "", transient: bool = False) -> None:
        super().__init__(
            message if not log_tail else f"{message}\n--- last lines ---\n{log_tail}",
            transient=transient,
        )
        self.log_tail = log_tail


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same inputs later might succeed."""
    return isinstance(exc, ReconcilerError) and exc.transient


def first_lines(exc: BaseException, n: int = 40) -> str:
    """An error's message cut to its first `n` lines (a failed build's log tail stays
    readable in `status` and the pass report)."""
    lines = str(exc).splitlines()
    return "\n".join(lines[:n] + (["..."] if len(lines) > n else []))
