"""Git credentials and redaction: `GitAuth`, userinfo out of URLs, secrets out of text,
and the environment that hands credentials to git (never argv or a URL)."""

from __future__ import annotations

import base64
import os
import re
import shlex
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from reconciler.errors import GitError

_URL_USERINFO_RE = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*)://([^/@\s]+)@")


@dataclass(frozen=True)
class GitAuth:
    """Credentials for a remote. Build with `token`, `basic` or `ssh`.

    HTTPS: `username` + `password` are sent as Basic auth; a token is the password
    (GitHub, GitLab, Gitea and Bitbucket all accept a token that way; the username is
    then mostly ignored). SSH: `ssh_key` is the path of an unencrypted private key (a
    deploy key), `known_hosts` a file holding the server's host key. Without
    `known_hosts`, `host_key_checking` defaults to `accept-new` (trust on first use,
    then pinned in ssh's default known_hosts).

    The password never appears in `repr`, argv, a URL, an error or a log line.
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssh_key: str | None = None
    known_hosts: str | None = None
    host_key_checking: Literal["yes", "accept-new", "no"] | None = None

    @classmethod
    def token(cls, token: str, username: str = "x-access-token") -> GitAuth:
        """A personal access / deploy token, sent as the Basic-auth password."""
        return cls(username=username, password=token)

    @classmethod
    def basic(cls, username: str, password: str) -> GitAuth:
        return cls(username=username, password=password)

    @classmethod
    def ssh(
        cls,
        key: str | os.PathLike[str],
        known_hosts: str | os.PathLike[str] | None = None,
        host_key_checking: Literal["yes", "accept-new", "no"] | None = None,
    ) -> GitAuth:
        return cls(
            ssh_key=os.fspath(key),
            known_hosts=os.fspath(known_hosts) if known_hosts is not None else None,
            host_key_checking=host_key_checking,
        )

    def secrets(self) -> list[str]:
        """Strings that must never be shown (for scrubbing messages)."""
        if not self.password:
            return []
        basic = base64.b64encode(f"{self.username or ''}:{self.password}".encode()).decode()
        return [self.password, basic]


def redact(text: str) -> str:
    """`text` with the password (or HTTP token) in any `scheme://userinfo@` removed.

    `https://user:pw@host` → `https://user:***@host`; `https://TOKEN@host` →
    `https://***@host`; an SSH user (`ssh://git@host`) is not a secret and stays.
    """

    def _one(m: re.Match[str]) -> str:
        scheme, userinfo = m.group(1), m.group(2)
        if ":" in userinfo:
            return f"{scheme}://{userinfo.split(':', 1)[0]}:***@"
        if scheme.lower() in ("http", "https", "ftp", "ftps"):
            return f"{scheme}://***@"
        return m.group(0)

    return _URL_USERINFO_RE.sub(_one, text)


def split_userinfo(url: str) -> tuple[str, GitAuth | None]:
    """Take HTTP(S) credentials out of a URL: `(url without them, their GitAuth)`.

    `https://user:pw@host/r.git` → Basic user/pw; `https://TOKEN@host/r.git` → a token.
    Other URLs come back unchanged (an SSH user name is part of the address).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    user, has_pw, pw = userinfo.partition(":")
    user, pw = urllib.parse.unquote(user), urllib.parse.unquote(pw)
    if has_pw:
        return clean, GitAuth.basic(user, pw)
    return clean, GitAuth.token(user)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return redact(text)


def _normalise_remote(url: str | os.PathLike[str]) -> str:
    """A URL as git should see it: local paths made absolute, userinfo kept for now."""
    s = os.fspath(url)
    if "://" in s:
        return s
    # git's rule (connect.c `parse_connect_url`): a colon before the first slash
    # makes it scp-like SSH `host:path`; anything else is a local path.
    colon, slash = s.find(":"), s.find("/")
    if colon > 0 and (slash == -1 or colon < slash):
        return s
    return os.path.abspath(s)


def _git_env(
    url: str, auth: GitAuth | None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for git commands that talk to `url` with `auth`."""
    env = dict(os.environ if base is None else base)
    # Never wait for a terminal; English messages so errors can be classified.
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    env.pop("LANGUAGE", None)
    parts = urllib.parse.urlsplit(url) if "://" in url else None
    scheme = parts.scheme.lower() if parts else ""
    if parts and auth is not None and auth.password is not None and scheme in ("http", "https"):
        basic = base64.b64encode(f"{auth.username or ''}:{auth.password}".encode()).decode()
        n = int(env.get("GIT_CONFIG_COUNT", "0") or "0")
        # Scoped to this origin: the header is not sent to any other host.
        env[f"GIT_CONFIG_KEY_{n}"] = f"http.{scheme}://{parts.netloc}/.extraHeader"
        env[f"GIT_CONFIG_VALUE_{n}"] = f"Authorization: Basic {basic}"
        env["GIT_CONFIG_COUNT"] = str(n + 1)
    is_ssh = scheme in ("ssh", "git+ssh", "ssh+git") or (
        not parts and not url.startswith("/") and ":" in url
    )
    if auth is not None and auth.ssh_key is not None:
        if not os.path.isfile(auth.ssh_key):
            raise GitError(
                f"{redact(url)}: SSH key {auth.ssh_key} does not exist or is not a file; "
                "check the deploy key path",
                transient=False,
            )
        checking = auth.host_key_checking or ("yes" if auth.known_hosts else "accept-new")
        opts = [
            "IdentitiesOnly=yes",
            "BatchMode=yes",
            f"StrictHostKeyChecking={checking}",
            "ConnectTimeout=30",
            "LogLevel=ERROR",
        ]
        if auth.known_hosts:
            opts.append(f"UserKnownHostsFile={auth.known_hosts}")
        cmd = ["ssh", "-i", auth.ssh_key, *(arg for o in opts for arg in ("-o", o))]
        env["GIT_SSH_COMMAND"] = shlex.join(cmd)
        env["GIT_SSH_VARIANT"] = "ssh"
    elif is_ssh and "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        # No key given: use the user's ssh set-up, but never prompt.
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env
