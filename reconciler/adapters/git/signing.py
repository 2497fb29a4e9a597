"""SSH signatures for Git: signing pin commits, and reading who signed a commit.

Signing. Pin commits are signed in Git's SSH signature format (a `gpgsig` header holding
an armored SSHSIG over the commit object, namespace `git`), so plain `git verify-commit`
with `gpg.format=ssh` and `gpg.ssh.allowedSignersFile` accepts them. We do not write the
signature ourselves: `git commit-tree -S` with `gpg.format=ssh` and `user.signingKey`
set to the key file runs `ssh-keygen -Y sign -n git -f <key>` exactly as `git commit -S`
does (git's gpg-interface.c `sign_buffer_ssh`), so the header is git's own, byte for
byte. The key is handed to ssh-keygen by path only: its contents are never read into
this process, a log line or an error.

Checking. `commit_signature` splits a commit object into its signed payload and its
`gpgsig` header and asks `ssh-keygen -Y check-novalidate -n git` whether the signature
is sound; it returns the signing key (type and base64 blob, extracted from the SSHSIG
structure, see openssh PROTOCOL.sshsig). Whether that key is *allowed* is not decided
here: that is core/provenance.py's job, against the repository's policy.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reconciler.core import provenance
from reconciler.errors import ConfigError

_TIMEOUT = 30.0
_SSHSIG_ARMOR = re.compile(
    rb"-----BEGIN SSH SIGNATURE-----\n(.*?)\n-----END SSH SIGNATURE-----", re.DOTALL
)


@dataclass(frozen=True)
class SshSigningKey:
    """An OpenSSH private key file that signs pin commits.

    `load` checks it once, at start-up (`ssh-keygen -y` derives the public key: it fails
    for a key with a passphrase, a file that is no key, or one whose permissions let
    others read it, which ssh-keygen refuses to use).
    """

    path: Path
    public_key: str
    """`<type> <base64>`, as an allowed-signers entry names it."""

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SshSigningKey:
        where = Path(path).absolute()
        fix_mode = "chmod 600 it (in Kubernetes mount the Secret with defaultMode: 0400)"
        try:
            mode = where.stat().st_mode
        except OSError as exc:
            raise ConfigError.simple(
                f"--commit-signing-key {where}: cannot read it ({exc.strerror})",
                fix="pass the path of an OpenSSH private key file",
            ) from None
        if not stat.S_ISREG(mode):
            raise ConfigError.simple(
                f"--commit-signing-key {where}: not a file",
                fix="pass the path of an OpenSSH private key file",
            )
        if mode & 0o077:
            raise ConfigError.simple(
                f"--commit-signing-key {where}: permissions {stat.S_IMODE(mode):04o} let other "
                "users read the key (ssh-keygen refuses such a key)",
                fix=fix_mode,
            )
        proc = _ssh_keygen(["-y", "-P", "", "-f", str(where)])
        if proc.returncode != 0:
            raise ConfigError.simple(
                f"--commit-signing-key {where}: ssh-keygen cannot use it as a private key "
                "without a passphrase",
                fix="pass an unencrypted OpenSSH private key (ssh-keygen -t ed25519 -N '')",
            )
        fields = proc.stdout.decode("ascii", "replace").split()
        return cls(where, " ".join(fields[:2]))

    def git_config(self) -> list[str]:
        """`git -c` arguments that make `commit-tree -S` sign with this key."""
        return ["-c", "gpg.format=ssh", "-c", f"user.signingKey={self.path}",
                "-c", "gpg.ssh.program=ssh-keygen"]  # fmt: skip


@dataclass(frozen=True)
class CommitSignature:
    """What a commit's `gpgsig` header says, before any policy is applied."""

    state: provenance.SignatureState
    """`good` (a sound SSH signature by `key`), `none` (unsigned), `bad` (a signature
    that does not verify), `unsupported` (an OpenPGP or X.509 signature)."""
    key: str | None = None
    """`<type> <base64>` of the signing key, for a good signature."""
    detail: str = ""


def split_commit(raw: bytes) -> tuple[bytes, bytes | None]:
    """A commit object → (the payload the signature covers, the signature or None).

    The payload is the object without its `gpgsig` header (git's commit.c
    `parse_signed_commit`: the header and its continuation lines, which start with a
    space, are removed)."""
    head, sep, body = raw.partition(b"\n\n")
    lines = head.split(b"\n")
    kept: list[bytes] = []
    sig: list[bytes] = []
    in_sig = False
    for line in lines:
        if line.startswith(b"gpgsig "):
            in_sig = True
            sig.append(line[len(b"gpgsig ") :])
            continue
        if in_sig and line.startswith(b" "):
            sig.append(line[1:])
            continue
        in_sig = False
        kept.append(line)
    payload = b"\n".join(kept) + sep + body
    return payload, (b"\n".join(sig) + b"\n") if sig else None


def signing_key_of(armored: bytes) -> str | None:
    """The public key inside an armored SSHSIG (PROTOCOL.sshsig: magic, version,
    publickey, ...), as `<type> <base64>`."""
    m = _SSHSIG_ARMOR.search(armored)
    if m is None:
        return None
    try:
        blob = base64.b64decode(b"".join(m.group(1).split()), validate=True)
        if not blob.startswith(b"SSHSIG"):
            return None
        (length,) = struct.unpack(">I", blob[10:14])
        key = blob[14 : 14 + length]
        (tlen,) = struct.unpack(">I", key[:4])
        key_type = key[4 : 4 + tlen].decode("ascii")
    except (ValueError, struct.error, UnicodeDecodeError):
        return None
    return f"{key_type} {base64.b64encode(key).decode()}"


def check_signature(raw_commit: bytes) -> CommitSignature:
    """Whether `raw_commit` (`git cat-file commit` output) carries a sound SSH signature,
    and by which key. No allowed-signers file: `-Y check-novalidate` checks the
    signature itself; the policy decides about the key."""
    payload, sig = split_commit(raw_commit)
    if sig is None:
        return CommitSignature("none", detail="the commit is not signed")
    if not sig.startswith(b"-----BEGIN SSH SIGNATURE-----"):
        return CommitSignature(
            "unsupported", detail="an OpenPGP or X.509 signature (only SSH signatures are read)"
        )
    key = signing_key_of(sig)
    if key is None:
        return CommitSignature("bad", detail="the SSH signature cannot be parsed")
    with tempfile.TemporaryDirectory(prefix="reconciler-sig-") as tmp:
        sig_file = Path(tmp) / "sig"
        sig_file.write_bytes(sig)
        proc = _ssh_keygen(
            ["-Y", "check-novalidate", "-n", "git", "-s", str(sig_file)], input=payload
        )
    if proc.returncode != 0:
        return CommitSignature("bad", key=key, detail="the SSH signature does not verify")
    return CommitSignature("good", key=key)


def _ssh_keygen(args: list[str], input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["ssh-keygen", *args],
            input=input if input is not None else b"",
            capture_output=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError.simple(
            "ssh-keygen is not installed; it signs and checks Git's SSH signatures",
            fix="install openssh-client",
        ) from None
