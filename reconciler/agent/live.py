"""Live settings: what a node applies without a new image or a reboot.

Stage: the agent's edge for core's SSH keys and password hash (MCO applies both without
a reboot: `pkg/daemon/update.go`, `updateSSHKeys` / `SetPasswordHash`). Inputs: the
pool's rendered config at the pin's `sourceCommit` (read by the `PinSource`, checked
against the pin's `renderedConfig` and `liveConfigDigest`, so what is applied is what
the reconciler pinned, whatever the branch holds since).
Effects: core's `authorized_keys` written atomically under the host root, and the
password hash set with `chpasswd -e` (the hash goes on stdin only: never in an argv, a
log line, a reason or the state file). Design: `deploy/README.md`, "Changes
without a reboot".

A hash that leaves the config locks the password (`*`), as MCO's daemon does: its
`SetPasswordHash` (`pkg/daemon/update.go`) sets every configured user's hash to the
config's or, when the config has none, to `*`. Where MCD's `deconfigureUser` would
clear the hash of a user who left the config entirely (`usermod -p ""`: no password at
all, which PAM's `nullok` lets log in on a console), this agent locks it too. Only a
password this agent set is locked (`AgentState.password_applied`): one the config
never managed is left as the host has it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from reconciler.core import pins
from reconciler.errors import ReconcilerError

CORE = "core"
# core's keys: only this agent writes them (images carry the user and its ~/.ssh, never
# the keys: `reconciler/core/image/layout.py`), the whole file, at its first run on a host
# and at every change of the pin's liveConfigDigest.
CORE_KEYS = "var/home/core/.ssh/authorized_keys"
# What MCD's SetPasswordHash sets when the config gives core no hash: matches no
# password, so password logins are off (crypt(3), shadow(5)).
LOCKED = "*"


class LiveError(ReconcilerError):
    pass


@dataclass(frozen=True)
class NodeSettings:
    """The parts of a rendered config the agent itself looks at."""

    kernel_arguments: tuple[str, ...] = ()
    ssh_keys: tuple[str, ...] = ()
    password_hash: str | None = field(default=None, repr=False)
    """Never shown: `repr` hides it, and no message includes it."""

    def live_digest(self) -> str | None:
        return pins.live_config_digest(self.ssh_keys, self.password_hash)


def settings_from_spec(spec: Mapping[str, Any]) -> NodeSettings:
    """From a rendered MachineConfig spec: `kernelArguments`, and core's
    `sshAuthorizedKeys` and `passwordHash` from `config.passwd.users`."""
    users = ((spec.get("config") or {}).get("passwd") or {}).get("users") or []
    core: dict[str, Any] = next((u for u in users if u.get("name") == CORE), {})
    return NodeSettings(
        kernel_arguments=tuple(spec.get("kernelArguments") or ()),
        ssh_keys=tuple(core.get("sshAuthorizedKeys") or ()),
        password_hash=core.get("passwordHash"),
    )


class SettingsSource(Protocol):
    def settings(self, pool: str, revision: str, pin: pins.Pin) -> NodeSettings | None:
        """The pool's settings as of `pin` (None: they cannot be read)."""
        ...


@dataclass
class LiveApplier:
    root: Path = Path("/")
    """The host's root as this process sees it (`/host` in the DaemonSet)."""
    owner: str | None = CORE
    """Owner of the keys file (None: leave it to the caller, e.g. in tests)."""
    chpasswd: Sequence[str] = ("chpasswd", "-e")
    """Reads `core:<hash>` on stdin; run in the host's mount namespace."""
    timeout: float = 60.0

    def settings(self, source: SettingsSource, pool: str, snap: Any) -> NodeSettings | None:
        if snap.pin is None:
            return None
        return source.settings(pool, snap.revision, snap.pin)

    def apply(self, settings: NodeSettings, *, lock_password: bool = False) -> str:
        """Make the host match `settings`; returns what was applied, in words.
        `lock_password`: the config no longer gives a hash this agent had set, so the
        password is locked (module docstring)."""
        done = []
        self._write_keys(settings.ssh_keys)
        done.append(f"core's SSH keys ({len(settings.ssh_keys)})")
        if settings.password_hash is not None:
            self._set_password(settings.password_hash)
            done.append("core's password hash")
        elif lock_password:
            self._set_password(LOCKED)
            done.append("a locked password for core (the config sets no hash)")
        return " and ".join(done)

    def _write_keys(self, keys: Sequence[str]) -> None:
        path = self.root / CORE_KEYS
        text = "".join(f"{k}\n" for k in keys)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            if self.owner is not None:
                user = pwd.getpwnam(self.owner) if self.root == Path("/") else None
                uid, gid = (user.pw_uid, user.pw_gid) if user else _owner_in(self.root)
                os.chown(tmp, uid, gid)
                with contextlib.suppress(OSError):
                    os.chown(path.parent, uid, gid)
            os.replace(tmp, path)
        except (OSError, KeyError) as exc:
            raise LiveError(f"writing {path}: {exc}") from None

    def _set_password(self, password_hash: str) -> None:
        try:
            proc = subprocess.run(
                list(self.chpasswd),
                input=f"{CORE}:{password_hash}\n",
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LiveError(f"setting core's password hash: {exc}") from None
        if proc.returncode != 0:
            # chpasswd names the user and the line number, never the hash
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1][:200]
            raise LiveError(f"setting core's password hash: exit {proc.returncode}: {last}")


def _owner_in(root: Path) -> tuple[int, int]:
    """core's uid/gid from the host's /etc/passwd (the agent's own may differ)."""
    for line in (root / "etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if len(parts) > 3 and parts[0] == CORE:
            return int(parts[2]), int(parts[3])
    raise KeyError(f"no user {CORE} in {root / 'etc/passwd'}")
