"""The idle `agent --once`: a step whose facts are those of the last one, which changed
nothing, ends as that one did without being run again.

Stage: before the step, in `reconciler agent --once` (the systemd timer runs it on
every node, so an idle step is what a fleet pays most often). A full step that
changed nothing records the facts it decided on in `<state-dir>/idle.json`, as one
digest (`Facts.key`):

- the agent's options, its node name and the effective signature settings
  (`--allowed-signers` or the image's allowed-signers file, whether bootc enforces the
  container signature policy): a changed flag or key is a changed step;
- the branch's head (`git ls-remote`): a new pin, a changed pool policy or config is a
  new commit;
- what `bootc status` printed, byte for byte: a new booted, staged or rollback
  deployment, a queued rollback, a download-only stage, a `/usr` overlay, a soft reboot
  into another deployment;
- the state file, byte for byte (phase, reason, the pin, every timer);
- the boot id: a reboot;
- this program: its version and its files (path, size, modification time), so an
  upgraded agent decides afresh.

The next `--once` reads the same facts (one `git ls-remote`, one `bootc status`, two
small files, no pydantic, no repository load) and, when their digest is the recorded
one, prints the state's line (or `AgentStep` document) and exits as the full step
would: it would read the same pin at the same commit, see the same host and keep the
same state, writing nothing. Any difference, an unreadable fact, or a failure of
`git ls-remote` or `bootc status` runs the full step, which records afresh; the full
step takes the `bootc status` the check read (its output or its failure, e.g. a timeout
behind the sysroot lock) instead of running it again.

Only a step that leaves nothing due is recorded (`settled`): `done` or `rolled-back`,
no slot held, no cordon, and (with live settings) the kernel arguments known. An update
in flight (a pending health check, a rollback or reboot timer, a drain), `idle` (which
may be waiting for a slot), `degraded` (retried every step) and coordination other than
`none` (FleetLock's steady-state report and the Kubernetes Lease and annotations are
made every step) always run the full step. systemd's soft-reboot count is not a fact:
the settled phases never look at it (a reboot matters only while `rebooting` or
`rolling-back`), and a soft reboot into another deployment changes `bootc status`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler import __version__
from reconciler.agent.state import AgentState, Phase

RECORD_NAME = "idle.json"
RECORD_VERSION = 1

SETTLED = frozenset({Phase.DONE, Phase.ROLLED_BACK})
"""The phases in which a step that changed nothing has nothing left to do."""


def settled(state: AgentState, *, live: bool) -> bool:
    """Whether a step that ended in `state` without changing it leaves nothing due, so
    that the same facts make the next step change nothing again. `live`: live settings
    are applied (then a `done` step with unknown kernel arguments reads them again)."""
    if state.phase not in SETTLED or state.holds_slot or state.cordoned:
        return False
    # Agent._consider_pin reads the settings at the pin's sourceCommit again while the
    # kernel arguments are unknown (the last read failed): that read is due.
    return not (live and state.phase == Phase.DONE and state.kernel_arguments is None)


@dataclass(frozen=True)
class Facts:
    """What a step decides on, as read before it (see the module docstring)."""

    config: Mapping[str, object]
    """The options and effective settings; JSON-able (paths and tuples become text)."""
    revision: str
    """The branch's head on the remote."""
    bootc_status: str
    """What `bootc status --format=json --format-version=1` printed."""
    state: bytes
    """The state file's bytes."""
    boot_id: str

    def key(self) -> str:
        doc = {
            "version": RECORD_VERSION,
            "reconciler": __version__,
            "program": program_fingerprint(),
            "config": self.config,
            "revision": self.revision,
            "bootcStatus": hashlib.sha256(self.bootc_status.encode()).hexdigest(),
            "state": hashlib.sha256(self.state).hexdigest(),
            "bootId": self.boot_id,
        }
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def program_fingerprint(root: Path | None = None) -> str:
    """The installed `reconciler` package's Python files (or those under `root`):
    (path, size, modification time) of each."""
    root = root or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(directory, name)
            info = os.stat(path)
            digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class IdleRecord:
    """`<state-dir>/idle.json`: the key of the last step's facts, when it settled."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / RECORD_NAME

    def key(self) -> str | None:
        """The recorded key; None when there is none (or it is unreadable)."""
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("version") != RECORD_VERSION:
            return None
        key = doc.get("key")
        return key if isinstance(key, str) else None

    def save(self, facts: Facts) -> None:
        # Written whole (temp file, rename). Not fsynced: the key covers the state
        # file's bytes, so a record lost or left over by a power cut matches nothing
        # but the state it was made for.
        data = json.dumps({"version": RECORD_VERSION, "key": facts.key()}) + "\n"
        tmp = self.path.with_name(f".{RECORD_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
