"""bootc driver: the node agent's only way to look at and change the host's image.

Stage: the agent's edge. Inputs: the bootc command (default `bootc`) and timeouts.
Outputs: `Host` (the parsed `bootc status`), and the effects of `switch` / `rollback`.

Everything here follows the documented CLI contract (reference `bootc-contract.md`):
- `bootc status --format=json --format-version=1` is the stable v1 BootcHost schema
  (`docs/src/host-v1.schema.json`). Parsed strictly where we rely on a field, leniently
  elsewhere: unknown fields and enum values are accepted (the schema is non-exhaustive),
  optional fields may be absent, and `signature` is a string *or* an object
  (`{"ostreeRemote": ...}`), which bootc-operator's Go client gets wrong.
- `bootc switch [flags] -- <repo>@sha256:<digest>` with no tag and never `--apply` (with
  `--apply` bootc reboots and parks forever; the agent persists its state and reboots
  itself). Exit 0 also when `Image specification is unchanged.`. The `--` ends clap's
  option parsing, so no image string can ever be read as an option; an image beginning
  with `-` is refused before any call anyway.
- `--soft-reboot=auto` on switch only prepares `/run/nextroot` when the staged entry is
  `softRebootCapable` (`cli.rs handle_soft_reboot`); whether the host then soft-reboots
  is the reboot command's choice (`SYSTEMCTL_SKIP_AUTO_SOFT_REBOOT`, contract §8).
- `bootc upgrade --from-downloaded` unlocks a staged entry left `downloadOnly` by
  `upgrade --download-only` (`cli.rs upgrade`, `change_finalization`); a switch to the
  same image answers "unchanged" and does not unlock it.
- `bootc rollback` swaps the boot order; run twice it reverts, so callers check
  `rollback_queued` first. It also discards a staged deployment, so it is never used to
  cancel a stage (re-switch to the booted digest instead).
- Every call has a timeout, and a failure is bootc's own `error:` line
  (`reconciler.adapters.bootc_run`, which runs the commands).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from reconciler.adapters.bootc_run import STATUS_ARGS, BootcError, run

__all__ = ["BootcError"]  # re-exported (callers catch it from here); the rest is defined here

IMAGE_BY_DIGEST_RE = re.compile(r"^[^@\s:]+(:\d+)?(/[^@\s:]+)*@sha256:[0-9a-f]{64}$")
UNCHANGED = "Image specification is unchanged."
# What `bootc switch --transport` accepts (ostree-ext `Transport::try_from`); status
# reports the registry transport as "registry" (`status.rs transport_to_string`).
TRANSPORTS = frozenset(
    {"registry", "docker", "oci", "oci-archive", "docker-archive", "containers-storage", "dir"}
)
SOFT_REBOOT_MODES = frozenset({"auto", "required"})


class _Model(BaseModel):
    # Unknown fields are ignored: bootc adds fields within v1 (readOnly in 1.15,
    # softRebootCapable in 1.7); the enums are declared non-exhaustive.
    model_config = ConfigDict(
        frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True
    )


class ImageReference(_Model):
    image: str
    transport: str
    signature: str | dict[str, Any] | None = None
    """Absent by default; `"containerPolicy"`, `"insecure"` or `{"ostreeRemote": name}`."""


class ImageStatus(_Model):
    image: ImageReference
    version: str | None = None
    timestamp: str | None = None
    image_digest: str = Field(pattern=r"^[a-z0-9]+:[0-9a-f]+$")
    """The per-architecture image manifest digest (never an index digest)."""
    architecture: str
    """OCI architecture, e.g. amd64."""


class OstreeDeployment(_Model):
    checksum: str
    deploy_serial: int
    stateroot: str


class BootEntry(_Model):
    image: ImageStatus | None = None
    """None when the entry is not container-based (e.g. rpm-ostree layering)."""
    cached_update: ImageStatus | None = None
    incompatible: bool = False
    pinned: bool = False
    soft_reboot_capable: bool = False
    download_only: bool = False
    store: str | None = None
    ostree: OstreeDeployment | None = None

    @property
    def digest(self) -> str | None:
        return self.image.image_digest if self.image else None


class HostSpec(_Model):
    image: ImageReference | None = None
    boot_order: str = "default"


class FilesystemOverlay(_Model):
    """`status.usrOverlay`: a live overlay on /usr (`bootc usr-overlay`, `spec.rs`)."""

    access_mode: str
    """`readOnly` or `readWrite`."""
    persistence: str
    """`transient` (gone at the next boot) or `persistent` (an ostree hotfix)."""


class HostStatus(_Model):
    staged: BootEntry | None = None
    booted: BootEntry | None = None
    rollback: BootEntry | None = None
    other_deployments: list[BootEntry] = Field(default_factory=list)
    rollback_queued: bool = False
    type: str | None = None
    usr_overlay: FilesystemOverlay | None = None
    """Set while /usr is not what the booted image holds."""
    read_only: bool = False
    """The physical root is read-only (a live ISO): no switch is possible."""


class Host(_Model):
    """`bootc status --format=json --format-version=1` (BootcHost, v1)."""

    api_version: str
    kind: str
    spec: HostSpec = Field(default_factory=HostSpec)
    status: HostStatus = Field(default_factory=HostStatus)

    @property
    def is_bootc(self) -> bool:
        """The documented detection rule: a booted entry exists."""
        return self.status.booted is not None

    @property
    def booted_digest(self) -> str | None:
        return self.status.booted.digest if self.status.booted else None

    @property
    def staged_digest(self) -> str | None:
        return self.status.staged.digest if self.status.staged else None

    @property
    def rollback_digest(self) -> str | None:
        return self.status.rollback.digest if self.status.rollback else None


def parse_status(text: str | bytes) -> Host:
    """Parse BootcHost JSON; a `BootcError` says what is wrong and shows a short excerpt."""
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    excerpt = raw.strip().replace("\n", " ")[:120]
    try:
        doc = json.loads(raw)
    except ValueError:
        raise BootcError(
            f"bootc status printed something that is not JSON: {excerpt!r}; "
            "is the bootc on PATH the real one (it needs --format=json --format-version=1)?"
        ) from None
    if not isinstance(doc, dict) or doc.get("kind") != "BootcHost":
        raise BootcError(f"bootc status printed JSON that is not a BootcHost object: {excerpt!r}")
    if doc.get("apiVersion") != "org.containers.bootc/v1":
        raise BootcError(
            f"bootc status answered apiVersion {doc.get('apiVersion')!r}; this agent "
            "understands org.containers.bootc/v1 only"
        )
    try:
        return Host.model_validate(doc)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise BootcError(f"bootc status: {loc}: {first['msg']}") from None


@dataclass(frozen=True)
class SwitchResult:
    unchanged: bool
    """bootc said `Image specification is unchanged.` (nothing was pulled or staged)."""
    output: str


@dataclass(frozen=True)
class Timeouts:
    """Seconds per call. `status` is short: it only waits on the sysroot lock; `switch`
    pulls the image (bootc fetches layers serially, rpm-ostree#5460), so it is long."""

    status: float = 120.0
    switch: float = 3600.0
    rollback: float = 300.0


class Bootc:
    """Runs the bootc CLI. `command` is the argv prefix (e.g. `["bootc"]`)."""

    def __init__(
        self,
        command: Sequence[str] = ("bootc",),
        *,
        timeouts: Timeouts = Timeouts(),
        env: Mapping[str, str] | None = None,
        enforce_sigpolicy: bool = False,
    ) -> None:
        self.command = list(command)
        self.timeouts = timeouts
        self.env = dict(env) if env is not None else None
        # Always the same flags: a switch without the flag after one with it re-stages
        # (the whole image reference, signature included, is compared; contract §1).
        self.enforce_sigpolicy = enforce_sigpolicy
        self.ran: Counter[str] = Counter()
        """How often each subcommand (`status`, `switch`, ...) ran."""
        self.status_output: str | None = None
        """What the last `status` printed (the agent's idle record keys on it)."""
        self._answered: str | BootcError | None = None

    def answered(self, outcome: str | BootcError) -> None:
        """Let the next `status()` answer with what a `bootc status` this process has just
        run printed, or how it failed, instead of running (or waiting for) it again: the
        agent's idle check read it, and its facts were not the recorded ones."""
        self._answered = outcome

    def status(self) -> Host:
        outcome, self._answered = self._answered, None
        if outcome is None:
            out = self._run(list(STATUS_ARGS), self.timeouts.status)
        else:
            self.ran["status"] += 1
            if isinstance(outcome, BootcError):
                raise outcome
            out = outcome
        self.status_output = out
        return parse_status(out)

    def switch(self, image: str, *, soft_reboot: str | None = None) -> SwitchResult:
        """Stage `image` (`registry/repo@sha256:<64 hex>`, registry transport)."""
        if not IMAGE_BY_DIGEST_RE.match(image):
            raise BootcError(
                f"refusing to switch to {image!r}: not a reference by digest "
                "(registry/repo@sha256:<64 hex>)"
            )
        return self._switch(image, "registry", self.enforce_sigpolicy, soft_reboot)

    def switch_to(self, ref: ImageReference) -> SwitchResult:
        """Stage the image `ref` names exactly as status reported it: its own transport,
        reference (a tag too) and signature mode, so a stage is cancelled by switching
        back to the booted entry whatever it was booted from (contract §8)."""
        if isinstance(ref.signature, dict) or ref.signature not in (None, "containerPolicy"):
            raise BootcError(
                f"cannot switch back to {ref.image!r}: its signature source "
                f"{ref.signature!r} has no `bootc switch` flag"
            )
        return self._switch(ref.image, ref.transport, ref.signature == "containerPolicy", None)

    def _switch(
        self, image: str, transport: str, enforce: bool, soft_reboot: str | None
    ) -> SwitchResult:
        if not image or image.startswith("-") or any(c.isspace() for c in image):
            raise BootcError(f"refusing to switch to {image!r}: not an image reference")
        if transport not in TRANSPORTS:
            raise BootcError(f"refusing to switch with transport {transport!r}: unknown")
        argv = ["switch", "--quiet"]
        if transport != "registry":
            argv.append(f"--transport={transport}")
        if enforce:
            argv.append("--enforce-container-sigpolicy")
        if soft_reboot is not None:
            if soft_reboot not in SOFT_REBOOT_MODES:
                raise BootcError(f"unknown --soft-reboot mode {soft_reboot!r}")
            argv.append(f"--soft-reboot={soft_reboot}")
        out = self._run([*argv, "--", image], self.timeouts.switch)
        return SwitchResult(unchanged=UNCHANGED in out, output=out)

    def unlock_downloaded(self) -> str:
        """`bootc upgrade --from-downloaded`: let a download-only stage apply at reboot."""
        return self._run(["upgrade", "--from-downloaded"], self.timeouts.rollback)

    def rollback(self) -> str:
        return self._run(["rollback"], self.timeouts.rollback)

    def _run(self, args: list[str], timeout: float) -> str:
        self.ran[args[0]] += 1
        return run(self.command, args, timeout, self.env)
