"""Registry credentials from the standard auth files and Kubernetes pull secrets.

Stage: edge. Input: which files to read (explicit paths, else the environment's
defaults); output: a `Credentials` object that answers "which credential for this
registry host and repository?" with a `Credential` naming the file and key it came
from. Nothing here talks to a registry.

Where we look, and in which order, follows containers/image `pkg/docker/config`
(what skopeo, podman, buildah and bootc use), so `skopeo login` and this reconciler
agree on which credential applies:
- files named explicitly (`--authfile`, a pull secret) are the only ones read, in the
  order given; else `$REGISTRY_AUTH_FILE` alone (the containers tools' default for
  `--authfile`); else the chain
  `$XDG_RUNTIME_DIR/containers/auth.json` (or `/run/containers/$UID/auth.json`),
  `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/...`),
  `$DOCKER_CONFIG/config.json` (`~/.docker/config.json`). The first file holding a
  matching entry wins.
- inside a file, `auths` keys may be a host, `host:port`, a namespace or repository
  (`quay.io/org`, most specific wins), or a URL (`https://index.docker.io/v1/`: scheme
  and path are dropped). `docker.io`, `index.docker.io` and `registry-1.docker.io` are
  the same registry.
- an entry holds `auth` (base64 `user:password`), or `username`/`password`, and may
  hold `identitytoken` (an OAuth2 refresh token for the registry's token service).
  Empty entries (`{}`, written by Docker when a credential helper is used) are skipped.
  Credential helpers (`credHelpers`, `credsStore`) are not run: they are interactive
  desktop machinery; the reconciler is given a file.
- a Kubernetes Secret of type `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`,
  YAML or JSON, `data` base64 or `stringData`), the legacy `kubernetes.io/dockercfg`
  (`.dockercfg`, the bare `auths` map), or a bare `.dockerconfigjson` file are all read
  the same way; which one a file is, is told from its content.

Secrets stay secret: `Credential`'s repr and every error name the file and the key,
never a username, password, token or file content.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.errors import ConfigError, ConfigProblem

log = logging.getLogger("reconciler.adapters.auth")  # the logger keeps its name across moves

# The three names of Docker Hub (containers/image `normalizeRegistry`).
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credential:
    """One registry login. `source` is the file and `key` the `auths` entry it came from.

    Either `username` and `password`, or `identity_token` (then `username` may be
    empty or `<token>`), is set.
    """

    username: str = field(repr=False)
    password: str = field(repr=False)
    source: str
    key: str
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Credential(source={self.source!r}, key={self.key!r})"

    def describe(self) -> str:
        """For messages: where the credential came from, never what it is."""
        return f"{self.key!r} in {self.source}"


@dataclass(frozen=True)
class _AuthFile:
    path: str
    entries: Mapping[str, Credential]
    notes: tuple[str, ...] = ()


class Credentials:
    """Credential lookup over an ordered list of auth files (see the module docstring).

    Files are read when the object is built, so a bad file fails early with its name.
    Missing files are skipped (and listed as checked, for error messages).
    """

    def __init__(
        self, files: Sequence[str | os.PathLike[str]], *, must_exist: bool = False
    ) -> None:
        self.checked: tuple[str, ...] = tuple(str(f) for f in files)
        self._files: list[_AuthFile] = []
        for f in self.checked:
            parsed = read_auth_file(f, must_exist=must_exist)
            if parsed is not None:
                self._files.append(parsed)

    def __repr__(self) -> str:
        return f"Credentials(checked={list(self.checked)!r})"

    @classmethod
    def discover(
        cls,
        authfiles: Sequence[str | os.PathLike[str]] = (),
        *,
        env: Mapping[str, str] | None = None,
        home: str | None = None,
        uid: int | None = None,
    ) -> Credentials:
        """Credentials from explicitly named files (auth.json, config.json or pull
        secrets; they must exist), else from `REGISTRY_AUTH_FILE`, else from the
        default chain. `env`, `home` and `uid` default to this process's."""
        if authfiles:
            return cls(authfiles, must_exist=True)
        return cls(default_auth_files(env=env, home=home, uid=uid), must_exist=False)

    @classmethod
    def from_mapping(
        cls, logins: Mapping[str, tuple[str, str]], source: str = "<given>"
    ) -> Credentials:
        """Credentials given in code (`{"host:port": (user, password)}`), for callers
        that received them another way, and for tests."""
        creds = cls(())
        creds.checked = (source,)
        creds._files = [
            _AuthFile(
                source,
                {
                    _normalise_key(k): Credential(username=u, password=p, source=source, key=k)
                    for k, (u, p) in logins.items()
                },
            )
        ]
        return creds

    def lookup(self, host: str, repository: str | None = None) -> Credential | None:
        """The credential for `host` (and, if given, the repository path inside it:
        namespace keys match by longest prefix), from the first file that has one."""
        host = _normalise_host(host)
        key = f"{host}/{repository}" if repository else host
        for f in self._files:
            # containers/image authKeyLookupOrder: repo, namespaces, then the host.
            candidate = key
            while True:
                if candidate in f.entries:
                    found = f.entries[candidate]
                    log.debug("credentials for %s: %s", key, found.describe())
                    return found
                if "/" not in candidate:
                    break
                candidate = candidate.rsplit("/", 1)[0]
        return None

    def describe_checked(self) -> str:
        """`file1, file2` or `no auth file`, for error messages."""
        return ", ".join(self.checked) if self.checked else "no auth file"

    def notes_for(self, host: str) -> list[str]:
        """Hints about `host` worth adding to an authentication error (such as a
        credential helper configured for it, which we do not run)."""
        host = _normalise_host(host)
        return [n for f in self._files for n in f.notes if f" {host} " in f" {n} "]


def default_auth_files(
    *, env: Mapping[str, str] | None = None, home: str | None = None, uid: int | None = None
) -> list[str]:
    """The files containers/image reads when no `--authfile` is given."""
    env = os.environ if env is None else env
    home = home if home is not None else env.get("HOME") or str(Path.home())
    uid = os.getuid() if uid is None else uid
    if env.get("REGISTRY_AUTH_FILE"):
        # containers tools use it as the default of --authfile: a user-specified file,
        # which replaces the whole chain.
        return [env["REGISTRY_AUTH_FILE"]]
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    primary = (
        os.path.join(runtime_dir, "containers", "auth.json")
        if runtime_dir
        else f"/run/containers/{uid}/auth.json"
    )
    config_home = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    docker_dir = env.get("DOCKER_CONFIG") or os.path.join(home, ".docker")
    return [
        primary,
        os.path.join(config_home, "containers", "auth.json"),
        os.path.join(docker_dir, "config.json"),
    ]


def read_auth_file(path: str | os.PathLike[str], *, must_exist: bool = True) -> _AuthFile | None:
    """Parse one auth file of any supported shape; None if it is missing and need not
    exist. Raises `ConfigError` naming the file (never its content) if unreadable."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(
                ConfigProblem("auth file not found", file=name, fix="check the --authfile path")
            ) from None
        return None
    except OSError as exc:
        raise ConfigError(
            ConfigProblem(
                f"cannot read auth file ({exc.strerror})", file=name, fix="check its permissions"
            )
        ) from None
    auths, notes = _auths_of(name, raw, strict=must_exist)
    entries: dict[str, Credential] = {}
    for key, value in auths.items():
        cred = _credential(name, key, value)
        if cred is not None:
            # First spelling wins, as Go's map iteration would not promise anything better.
            entries.setdefault(_normalise_key(key), cred)
    return _AuthFile(name, entries, tuple(notes))


# --- file shapes -----------------------------------------------------------------------


def _problem(path: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(ConfigProblem(problem, file=path, fix=fix))


def _auths_of(path: str, raw: bytes, *, strict: bool) -> tuple[Mapping[str, Any], list[str]]:
    """The `auths` map of an auth.json, config.json, .dockercfg or pull-secret file.
    `strict`: a file without one is an error (it was named explicitly), else empty."""
    # JSON first: auth.json is tab-indented (containers/image MarshalIndent), which YAML
    # refuses. Parser errors are not passed on: they quote file content.
    doc: Any
    try:
        doc = json.loads(raw)
    except ValueError:
        try:
            doc = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise _problem(
                path,
                "is neither JSON nor YAML",
                'write an auth.json ({"auths": {...}}) or a Secret manifest',
            ) from None
    if doc is None:
        raise _problem(
            path, "is empty", 'write an auth.json ({"auths": {...}}) or a Secret manifest'
        )
    if not isinstance(doc, dict):
        raise _problem(path, "is not a JSON object", 'write an auth.json ({"auths": {...}})')

    if doc.get("kind") == "Secret":
        return _auths_of_secret(path, doc)

    notes = []
    for host, helper in (doc.get("credHelpers") or {}).items():
        notes.append(
            f"credential helper {helper!r} for {_normalise_key(host)} in {path} is not run"
        )
    if doc.get("credsStore"):
        notes.append(f"credential store {doc['credsStore']!r} in {path} is not run")
    if "auths" in doc:
        auths = doc["auths"]
        if not isinstance(auths, dict):
            raise _problem(
                path, "'auths' is not an object", 'write {"auths": {"HOST": {"auth": ...}}}'
            )
        return auths, notes
    if doc and all(isinstance(v, dict) and ("auth" in v or "username" in v) for v in doc.values()):
        # ~/.dockercfg and kubernetes.io/dockercfg: the auths map itself.
        return doc, notes
    if notes or not strict:
        return {}, notes
    raise _problem(
        path,
        "has no 'auths' object",
        'write an auth.json ({"auths": {"HOST": {"auth": ...}}}), '
        "e.g. with `skopeo login --authfile FILE`",
    )


def _auths_of_secret(path: str, doc: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str]]:
    typ = doc.get("type")
    keys = {
        "kubernetes.io/dockerconfigjson": ".dockerconfigjson",
        "kubernetes.io/dockercfg": ".dockercfg",
    }
    if typ not in keys:
        raise _problem(
            path,
            f"is a Secret of type {typ!r}, not a pull secret",
            "use a Secret of type kubernetes.io/dockerconfigjson "
            "(kubectl create secret docker-registry NAME --docker-server=... )",
        )
    key = keys[typ]
    name = (doc.get("metadata") or {}).get("name", "?")
    payload: bytes
    if isinstance(doc.get("stringData"), dict) and key in doc["stringData"]:
        payload = str(doc["stringData"][key]).encode()
    elif isinstance(doc.get("data"), dict) and key in doc["data"]:
        try:
            payload = base64.b64decode(str(doc["data"][key]), validate=True)
        except (binascii.Error, ValueError):
            raise _problem(
                path,
                f"Secret {name}: data.{key} is not valid base64",
                "re-create the Secret with kubectl",
            ) from None
    else:
        raise _problem(
            path, f"Secret {name}: has no data.{key}", "re-create the Secret with kubectl"
        )
    auths, notes = _auths_of(f"{path} (Secret {name})", payload, strict=True)
    return auths, notes


def _credential(path: str, key: str, value: Any) -> Credential | None:
    where = f"auths[{key!r}]"
    if not isinstance(value, dict):
        raise _problem(
            path, f"{where} is not an object", 'write {"auth": "<base64 user:password>"}'
        )
    token = value.get("identitytoken") or value.get("identityToken") or None
    username = value.get("username") or ""
    password = value.get("password") or ""
    if value.get("auth"):
        try:
            decoded = base64.b64decode(str(value["auth"]), validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise _problem(
                path,
                f"{where}.auth is not base64 of 'user:password'",
                "log in again, e.g. `skopeo login`",
            ) from None
        user, sep, pw = decoded.partition(":")
        if not sep:
            raise _problem(
                path,
                f"{where}.auth has no ':' between user and password",
                "log in again, e.g. `skopeo login`",
            )
        username, password = user, pw.strip("\x00")
    if not (username or password or token):
        return None  # Docker's marker for a credential helper: nothing to use here
    return Credential(
        username=str(username),
        password=str(password),
        source=path,
        key=key,
        identity_token=str(token) if token else None,
    )


def _normalise_host(host: str) -> str:
    return "docker.io" if host in _DOCKER_HUB else host


def _normalise_key(key: str) -> str:
    """containers/image `normalizeAuthFileKey`: URLs lose scheme and path, Docker
    Hub's names collapse to one."""
    stripped = key.removeprefix("http://").removeprefix("https://")
    if stripped != key:
        stripped = stripped.split("/", 1)[0]
    host, sep, rest = stripped.partition("/")
    return _normalise_host(host) + (sep + rest if sep else "")
