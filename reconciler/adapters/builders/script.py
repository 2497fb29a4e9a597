"""What both Containerfile builders share: the build script, its inputs, auth files, and
how a failed run becomes a `BuildError`.

Stage: build, for plans with RUN steps. Input: a `PoolPlan` and the registry client's
credentials and TLS settings. Output: the files a build needs (`Containerfile`, its
context, `build.sh`), an auth file holding exactly the logins the build uses, and
errors that say what failed, whether retrying can help, and the log's last lines.

`build.sh` (beside this module, shipped as package data) is the one script that builds
and pushes: the local builder runs it as a subprocess, the Job builder ships its text
in the Job's ConfigMap, so the tests that run it here run what a cluster runs. Its exit
status names the failing phase (pull, build, push), which is how failures are
classified without parsing buildah's messages.
"""

from __future__ import annotations

import base64
import collections
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from reconciler.adapters.registry.credentials import Credential, Credentials
from reconciler.core import canonical, reference
from reconciler.core.image import containerfile
from reconciler.core.poolplan import PoolPlan
from reconciler.core.reference import ImageRef
from reconciler.errors import BuildError

SCRIPT = Path(__file__).with_name("build.sh")
SCRIPT_NAME = SCRIPT.name

# build.sh exit codes.
EXIT_SETUP = 2
EXIT_PULL = 10
EXIT_BUILD = 11
EXIT_PUSH = 12
EXIT_STRIP = 13

# The files buildah makes the mount points of every RUN step and leaves behind, empty,
# when the image has none (bootc's `buildah-injected` lint checks the first two).
BUILDAH_INJECTED = ("/etc/hostname", "/etc/resolv.conf", "/etc/hosts")

TAIL_LINES = 30
DIGEST_RE = canonical.SHA256_DIGEST_RE
# What registries and containers/image say when credentials are missing or refused:
# retrying cannot help until someone fixes the credentials.
_AUTH_RE = re.compile(
    r"unauthorized|authentication required|denied|invalid username/password|\b401\b|\b403\b",
    re.IGNORECASE,
)


def script_text() -> str:
    return SCRIPT.read_text()


@dataclass(frozen=True)
class BuildInputs:
    """One pool's build, as the script takes it."""

    pool: str
    inputs_digest: str
    containerfile: containerfile.Containerfile
    base_image: str
    """The FROM reference: `host/repo@sha256:...`, the base the inputs digest covers."""
    base: ImageRef
    target: ImageRef
    """`host/repo:tag` (the tag derives from the inputs digest)."""
    strip_if_empty: tuple[str, ...] = BUILDAH_INJECTED
    """What build.sh removes from the built image when empty (`STRIP_IF_EMPTY`): the
    files buildah injects, less those the pool's config writes (the admin's, kept)."""

    @property
    def image(self) -> str:
        return str(self.target)

    @property
    def short_id(self) -> str:
        """12 hex of the inputs digest: names this build's directories and objects."""
        return self.inputs_digest.split(":", 1)[1][:12]

    def files(self, *, with_script: bool = False) -> dict[str, bytes]:
        """`Containerfile` and the context (and `build.sh`), by file name."""
        out = {"Containerfile": self.containerfile.text.encode(), **self.containerfile.context}
        if with_script:
            out[SCRIPT_NAME] = SCRIPT.read_bytes()
        return out


def prepare(plan: PoolPlan) -> BuildInputs:
    """The Containerfile for `plan`, FROM its resolved base digest, with the CA bundle
    the inputs digest covers; `RUN bootc container lint` only if the base has bootc."""
    if plan.target.tag is None:
        raise ValueError(f"pool {plan.pool}: the target {plan.target} has no tag")
    labels = (plan.base.config.get("config") or {}).get("Labels") or {}
    generated = containerfile.generate(
        plan.image,
        base_digest=plan.base.digest,
        base_labels=labels,
        ca_bundle=plan.ca_bundle,
    )
    return BuildInputs(
        pool=plan.pool,
        inputs_digest=plan.inputs_digest,
        containerfile=generated,
        base_image=containerfile.from_reference(plan.base_image, plan.base.digest),
        base=plan.base.ref,
        target=plan.target,
        strip_if_empty=strip_if_empty(plan),
    )


def strip_if_empty(plan: PoolPlan) -> tuple[str, ...]:
    """`BUILDAH_INJECTED` less the paths the pool's config layer writes."""
    own = {e.path for e in plan.image.entries}
    return tuple(p for p in BUILDAH_INJECTED if p not in own)


# --- auth -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthDocument:
    """A containers auth.json (`{"auths": {...}}`) with only the logins a build needs.

    `secrets` are the strings in it that must never be shown (for redacting logs).
    `sources` says where each login came from, for messages (never what it is).
    """

    data: bytes
    secrets: frozenset[str]
    sources: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.sources


def auth_document(credentials: Credentials | None, images: Iterable[ImageRef]) -> AuthDocument:
    """The logins `credentials` holds for `images` (base and target), as one auth.json.

    Keys are hosts, as every containers/image version reads them; when two images on
    one host need different logins, keys are `host/repository` (containers-auth.json(5)
    namespaces) so each keeps its own.
    """
    found: dict[ImageRef, Credential] = {}
    if credentials is not None:
        for ref in images:
            cred = credentials.lookup(ref.registry, ref.repository)
            if cred is not None:
                found[ref] = cred
    per_host: dict[str, set[Credential]] = collections.defaultdict(set)
    for ref, cred in found.items():
        per_host[ref.registry].add(cred)
    auths: dict[str, dict[str, str]] = {}
    secrets: set[str] = set()
    for ref, cred in found.items():
        key = ref.registry if len(per_host[ref.registry]) == 1 else reference.repository(ref)
        entry = {"auth": base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()}
        if cred.identity_token:
            entry["identitytoken"] = cred.identity_token
            secrets.add(cred.identity_token)
        if cred.password:
            secrets.add(cred.password)
        secrets.add(entry["auth"])
        auths[key] = entry
    data = json.dumps({"auths": auths}, indent="\t", sort_keys=True).encode()
    sources = tuple(sorted({c.describe() for c in found.values()}))
    return AuthDocument(data, frozenset(s for s in secrets if s), sources)


# --- logs and failures ------------------------------------------------------------------


class LogTail:
    """The last `TAIL_LINES` lines of a build log, with secrets replaced by `***`."""

    def __init__(self, secrets: Iterable[str] = (), size: int = TAIL_LINES) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self.lines: collections.deque[str] = collections.deque(maxlen=size)

    def redact(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, "***")
        return line

    def add(self, line: str) -> str:
        """Redact and remember `line` (without its newline); returns the redacted line."""
        clean = self.redact(line.rstrip("\r\n"))
        self.lines.append(clean)
        return clean

    def text(self) -> str:
        return "\n".join(self.lines)


_PHASES = {
    EXIT_PULL: "pulling the base image failed",
    EXIT_BUILD: "the build failed (a RUN step or the Containerfile)",
    EXIT_PUSH: "pushing the image failed",
    EXIT_STRIP: "removing the empty files buildah left in the image failed",
    EXIT_SETUP: "the build could not start",
}


def failure(
    inputs: BuildInputs, exit_code: int | None, tail: str, *, where: str, hint: str = ""
) -> BuildError:
    """A `BuildError` for a run of build.sh that ended with `exit_code`.

    A failing build step (exit 11) is not transient: the same inputs fail the same way
    until a commit changes them. Pull and push failures are, unless the registry refused
    the credentials (someone must fix them first).
    """
    what = _PHASES.get(exit_code or 0, f"the build ended with status {exit_code}")
    if exit_code is None:
        what = "the build was killed"
    transient = exit_code != EXIT_BUILD
    fix = ""
    if exit_code == EXIT_BUILD:
        fix = "; fix the step in the pool's config or containerFile (log below)"
    elif exit_code in (EXIT_PULL, EXIT_PUSH) and _AUTH_RE.search(tail):
        transient = False
        ref = inputs.base if exit_code == EXIT_PULL else inputs.target
        fix = f"; the registry refused the credentials for {ref.registry}: check the auth file"
    message = f"pool {inputs.pool}: {what} for {inputs.image}{fix}; {where}"
    if hint:
        message += f"; {hint}"
    return BuildError(message, log_tail=tail, transient=transient)


def check_digest(inputs: BuildInputs, text: str, *, where: str) -> str:
    digest = text.strip()
    if not DIGEST_RE.match(digest):
        raise BuildError(
            f"pool {inputs.pool}: the build reported {digest[:80]!r} as the digest of "
            f"{inputs.image}, not sha256:<64 hex>; {where}",
            transient=True,
        )
    return digest


def ca_certificates(
    ca_file: str | None, certs_dirs: Iterable[str], hosts: Iterable[str]
) -> dict[str, bytes]:
    """The CA certificates the registry client trusts for `hosts`, as files for buildah's
    `--cert-dir` (which replaces the certs.d lookup, so both go in): the client's
    `--registry-ca` file and every `*.crt` in `<certs.d>/<host>/` (containers-certs.d(5))."""
    out: dict[str, bytes] = {}
    if ca_file:
        out["registry-ca.crt"] = Path(ca_file).read_bytes()
    for base in certs_dirs:
        for host in sorted(set(hosts)):
            directory = Path(base) / host
            if directory.is_dir():
                for cert in sorted(directory.glob("*.crt")):
                    out[f"{host.replace(':', '_')}-{cert.name}"] = cert.read_bytes()
    return out


def env_flags(host: str, insecure: Iterable[str]) -> str:
    """`false` when `host` is a plain-HTTP registry (`--insecure-registry`), else `true`."""
    return "false" if host in set(insecure) else "true"
