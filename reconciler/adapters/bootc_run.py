"""Running the bootc CLI: one call with a timeout, its failure said in bootc's own line.

Stage: the edge under `reconciler.adapters.bootc` (which parses what bootc prints and
decides what to call). Stdlib only, so that an idle `reconciler agent --once` can read
`bootc status` without loading the status models (pydantic; `reconciler.agent.idle`).

- Every call has a timeout: every host command, `status` included, waits behind the
  ostree sysroot lock while another switch runs (bootc-dev/bootc#585). On timeout the
  whole process group is killed and a transient `BootcError` says so.
- Errors are exit code 1 with one line `error: <context>: <cause>` on stderr; that line
  is what `BootcError` carries (never the environment or auth file content).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

from reconciler.errors import ReconcilerError

STATUS_ARGS = ("status", "--format=json", "--format-version=1")
"""`bootc status` as the stable v1 BootcHost JSON (`docs/src/host-v1.schema.json`)."""


class BootcError(ReconcilerError):
    """A bootc call failed, hung, or printed what its contract does not allow."""

    def __init__(self, message: str, *, transient: bool = False, exit_code: int | None = None):
        super().__init__(message)
        self.transient = transient
        self.exit_code = exit_code


def run(
    command: Sequence[str], args: Sequence[str], timeout: float, env: Mapping[str, str] | None
) -> str:
    """`command args` (e.g. `["bootc"]`, `["status", ...]`); its stdout, or `BootcError`.
    `env` is added to this process's environment (None: inherited as is)."""
    argv = [*command, *args]
    shown = " ".join(["bootc", *args])
    full_env = {**os.environ, **env} if env is not None else None
    try:
        # A new session, so a timeout kills bootc and anything it started.
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=full_env,
            start_new_session=True,
        )
    except OSError as exc:
        raise BootcError(
            f"cannot run {command[0]!r}: {exc.strerror}; install bootc or pass --bootc PATH",
            transient=False,
        ) from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise BootcError(
            f"`{shown}` did not finish within {timeout:g}s (bootc waits for the "
            "sysroot lock while another bootc command runs); killed it",
            transient=True,
        ) from None
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise BootcError(
            f"`{shown}` failed (exit {proc.returncode}): {_error_line(stderr)}",
            transient=_looks_transient(stderr),
            exit_code=proc.returncode,
        )
    return stdout


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _error_line(stderr: str) -> str:
    """bootc's `error: ...` line (one line since v1.4; `ERROR ...` before), else the last."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("error:", "ERROR")):
            return line[:500]
    return (lines[-1] if lines else "no message")[:500]


def _looks_transient(stderr: str) -> bool:
    text = stderr.lower()
    return any(
        word in text
        for word in ("timeout", "timed out", "connection refused", "temporarily", " 50", "eof")
    )
