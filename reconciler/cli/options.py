"""Option groups shared by the `reconciler` commands.

Each group adds its options to a command and hands the command one value instead of
a parameter per option: `registry: RegistryOptions`, `source: GitSource`,
`builder_opts: dict` (for `builders.available`). A command's signature then says what
it needs, and an option is defined once however many commands take it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from reconciler import extras
from reconciler.adapters import git
from reconciler.adapters.git import GitAuth

if TYPE_CHECKING:  # imported when a client is made: httpx only for commands that use it
    from reconciler.adapters.registry import RegistryClient

F = TypeVar("F", bound=Callable[..., Any])


def option_group(
    name: str, options: list[Callable[[Any], Any]], build: Callable[..., Any]
) -> Callable[[F], F]:
    """Add `options` to a command; pass it `name=build(**their values)` instead."""
    params = [opt(lambda: None).__click_params__[0].name for opt in options]

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {p: kwargs.pop(p) for p in params}
            return f(*args, **{name: build(**values)}, **kwargs)

        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return decorated  # type: ignore[no-any-return]

    return decorate


def repo_option(f: F) -> F:
    return click.option(
        "--repo",
        "repo_dir",
        default=".",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The config repository's work tree.",
    )(f)


def containerfile_builder_option(f: F) -> F:
    return click.option(
        "--containerfile-builder",
        type=click.Choice(["buildah", "job"]),
        default="buildah",
        show_default=True,
        help="Builder for pools with RUN steps whose MachineOSConfig and ReconcilerConfig "
        "name none.",
    )(f)


def image_signing_option(f: F) -> F:
    """`--image-signing-key FILE` → `image_signer: KeySigner | None` (loaded at start-up,
    so a bad key fails the command before anything is built)."""

    def load(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if not value:
            return None
        from reconciler.adapters.registry import signatures  # noqa: PLC0415 - start-up

        return signatures.KeySigner.load(value)

    return click.option(
        "--image-signing-key",
        "image_signer",
        metavar="FILE",
        callback=load,
        help="Sign every image pushed or reused, in cosign's format (a `sha256-<hex>.sig` "
        "manifest that containers-policy `sigstoreSigned` reads), with this ECDSA P-256 "
        "private key (PEM, unencrypted).",
    )(f)


# --- registries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryOptions:
    authfiles: tuple[str, ...]
    insecure: tuple[str, ...]
    registry_ca: str | None

    def client(self) -> RegistryClient:
        from reconciler.adapters.registry import RegistryClient  # noqa: PLC0415 - start-up
        from reconciler.adapters.registry.credentials import Credentials  # noqa: PLC0415

        return RegistryClient(
            credentials=Credentials.discover(self.authfiles),
            insecure=self.insecure,
            ca_file=self.registry_ca,
        )


registry_options = option_group(
    "registry",
    [
        click.option(
            "--authfile",
            "authfiles",
            multiple=True,
            type=click.Path(exists=True, dir_okay=False),
            help="Registry credentials: containers auth.json, Docker config.json or a "
            "Kubernetes pull secret (repeatable). Default: $REGISTRY_AUTH_FILE, then the "
            "containers and Docker default files.",
        ),
        click.option(
            "--insecure-registry",
            "insecure",
            multiple=True,
            metavar="HOST:PORT",
            help="Talk plain HTTP to this registry (repeatable). Never the default.",
        ),
        click.option(
            "--registry-ca",
            type=click.Path(exists=True, dir_okay=False),
            help="Extra CA certificates (PEM) to trust for registries.",
        ),
    ],
    RegistryOptions,
)
"""Registry access: credentials, TLS, plain-HTTP registries → `registry: RegistryOptions`."""


# --- builders -----------------------------------------------------------------------------


def _builder_opts(
    build_timeout: float,
    build_log_dir: Path | None,
    kubeconfig: str | None,
    build_namespace: str | None,
    builder_image: str | None,
    build_lock_dir: Path | None,
) -> dict[str, Any]:
    return {
        "build_timeout_s": build_timeout,
        "build_log_dir": build_log_dir,
        "kubeconfig": kubeconfig,
        "namespace": build_namespace,
        "builder_image": builder_image,
        "build_lock_dir": build_lock_dir,
    }


builder_options = option_group(
    "builder_opts",
    [
        click.option(
            "--build-timeout",
            type=click.FloatRange(min=1),
            default=3600.0,
            show_default=True,
            help="Seconds a Containerfile build may take (buildah or Job) before it is stopped.",
        ),
        click.option(
            "--build-log-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Where buildah build logs go (kept when a build fails). "
            "Default: build-logs in the work directory.",
        ),
        click.option(
            "--build-lock-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Lock directory that makes buildah builds of the same inputs run once among "
            "the reconcilers sharing it (a second one waits for the first). Default: "
            "$XDG_RUNTIME_DIR/reconciler/build-locks, else /tmp/reconciler-<uid>/build-locks.",
        ),
        click.option(
            "--kubeconfig",
            type=click.Path(exists=True, dir_okay=False),
            help="Run Job builds in this cluster (in a pod, its service account is used "
            "without this).",
        ),
        click.option(
            "--build-namespace",
            help="Namespace of build Jobs. Default: the pod's own namespace, else 'default'.",
        ),
        click.option(
            "--builder-image",
            help="The image build Jobs run (buildah and bash). "
            "Default: a quay.io/containers/buildah tag.",
        ),
    ],
    _builder_opts,
)
"""How Containerfile builds run → `builder_opts` for `builders.available(registry, ...)`."""


# --- the config repository as a remote ----------------------------------------------------


@dataclass(frozen=True)
class GitSource:
    """Where the config repository is, which branch, and how to reach it."""

    url: str
    branch: str
    auth: GitAuth | None
    work_dir: Path | None

    @property
    def work(self) -> Path:
        """The work directory: given, else one per repository and branch in the cache."""
        if self.work_dir is not None:
            return self.work_dir
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        key = hashlib.sha256(f"{git.redact(self.url)}\n{self.branch}".encode()).hexdigest()
        return cache / "reconciler" / key[:16]


def _git_auth(
    git_token_file: str | None,
    git_username: str | None,
    git_password_file: str | None,
    ssh_key: str | None,
    known_hosts: str | None,
    git_ssh_key: str | None,
) -> GitAuth | None:
    def secret(path: str) -> str:
        return Path(path).read_text().strip()

    if git_ssh_key is not None:
        if ssh_key is not None:
            raise click.UsageError("--git-ssh-key is the old name of --ssh-key: pass one")
        click.echo("warning: --git-ssh-key is deprecated; use --ssh-key", err=True)
        ssh_key = git_ssh_key
    if git_token_file:
        return GitAuth.token(secret(git_token_file), username=git_username or "x-access-token")
    if git_password_file:
        if not git_username:
            raise click.UsageError("--git-password-file needs --git-username")
        return GitAuth.basic(git_username, secret(git_password_file))
    if ssh_key:
        return GitAuth.ssh(ssh_key, known_hosts=known_hosts)
    return None


_GIT_AUTH_OPTIONS = [
    click.option(
        "--git-token-file",
        type=click.Path(exists=True, dir_okay=False),
        help="HTTPS: a file holding an access token.",
    ),
    click.option("--git-username", help="HTTPS: user name for Basic auth."),
    click.option(
        "--git-password-file",
        type=click.Path(exists=True, dir_okay=False),
        help="HTTPS: a file holding the password for --git-username.",
    ),
    click.option(
        "--ssh-key",
        type=click.Path(exists=True, dir_okay=False),
        help="SSH: the deploy key (private key file).",
    ),
    click.option(
        "--known-hosts",
        type=click.Path(exists=True, dir_okay=False),
        help="SSH: known_hosts holding the server's key (default: accept on first use).",
    ),
    # The agent's old name for --ssh-key (before issue 15): accepted, hidden, warned about.
    click.option("--git-ssh-key", type=click.Path(exists=True, dir_okay=False), hidden=True),
]

git_auth_options = option_group("git_auth", _GIT_AUTH_OPTIONS, _git_auth)
"""Git credentials only (the agent names its repository itself) → `git_auth: GitAuth | None`.
The same names on every command that reads the config repository from a remote."""


def _git_source(repo_url: str, branch: str, work_dir: Path | None, **auth: str | None) -> GitSource:
    return GitSource(repo_url, branch, _git_auth(**auth), work_dir)


git_options = option_group(
    "source",
    [
        click.option(
            "--repo",
            "repo_url",
            required=True,
            help="The config repository: a URL (https://, ssh://, git://, file://) or a "
            "local path.",
        ),
        click.option("--branch", default="main", show_default=True, help="Branch to watch."),
        click.option(
            "--work-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Mirror and status live here (default: a directory per repository and "
            "branch under $XDG_CACHE_HOME/reconciler).",
        ),
        *_GIT_AUTH_OPTIONS,
    ],
    _git_source,
)
"""The config repository as a remote → `source: GitSource`."""


def parse_author(text: str) -> tuple[str, str]:
    name, sep, rest = text.partition("<")
    if not sep or not rest.endswith(">") or not name.strip():
        raise click.BadParameter(f"{text!r} is not 'Name <email>'", param_hint="--author")
    return name.strip(), rest[:-1].strip()


ContainerfileBuilder = Literal["buildah", "job"]


def output_option(help: str | None = None) -> Callable[[F], F]:
    """`-o text|json` (json: the command's documented envelope, docs/cli.md)."""
    return click.option(
        "--output", "-o", type=click.Choice(["text", "json"]), default="text",
        show_default=True, help=help,
    )  # fmt: skip


def require_kubernetes_for(containerfile_builder: ContainerfileBuilder) -> None:
    if containerfile_builder == "job":
        extras.require_kubernetes("--containerfile-builder job")
