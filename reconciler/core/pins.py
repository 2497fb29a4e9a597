"""Pins: what the reconciler commits to `pins/<pool>.yaml` and node agents apply.

Stage: the output of a pass, and the input of every node agent. A pin names one image
by digest (what `bootc switch` gets; always the per-architecture image manifest, never
an index, because bootc reports that digest as `imageDigest`), plus the provenance an
auditor needs: rendered config, inputs digest, base image and its digest, the config
commit it was made from, and how it was made.

`parse_pin` is strict: a pin that is malformed, not by digest, or whose image is not a
plain `host/path@sha256:` reference (nothing an argv could read as an option) is
refused with a reason (an agent must never switch to a guess). `check_origin` is the
agent's second gate: the image must live in the repository the pool's MachineOSConfig
pushes to, so a pin edited to name any other registry is not applied.

Live settings (`liveConfigDigest`): what a node applies without a new image or a
reboot (core's SSH keys and password hash; design in `deploy/README.md`, "Changes
without a reboot"). The pin carries only a digest of them, never their value; the agent
reads them from the rendered config at `sourceCommit`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, Literal

import pydantic
import yaml
from pydantic import Field

from reconciler.core import canonical, model
from reconciler.errors import ReconcilerError

DIGEST_RE = canonical.SHA256_DIGEST_RE
# The distribution reference grammar (distribution/reference `regexp.go`), restricted
# to `domain[:port]/path@sha256:<64 hex>`: a registry host is required and no tag, so
# the string can neither start with `-` nor name a local transport.
_DOMAIN = (
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_DOMAIN}(?::[0-9]+)?(?:/{_COMPONENT})+$")
IMAGE_BY_DIGEST_RE = re.compile(rf"^{REPOSITORY_RE.pattern[1:-1]}@sha256:[0-9a-f]{{64}}$")
PIN_KIND = "Pin"
_SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def pin_path(pool: str) -> str:
    return f"pins/{pool}.yaml"


class BuildFacts(model.StrictModel):
    builder: Literal["native", "buildah", "job", "reused"]
    """How the image came to be: built natively, by buildah, by a Kubernetes Job, or
    `reused` (the image for these inputs already existed in the registry)."""
    base_image_digest: str = Field(pattern=DIGEST_RE.pattern)
    """Digest of the base image's per-architecture manifest the image was built on."""


class PinSpec(model.StrictModel):
    pool: str
    """The MachineConfigPool this pin is for."""
    image: str = Field(pattern=IMAGE_BY_DIGEST_RE.pattern)
    """`registry/repo@sha256:<digest>`: exactly what `bootc switch` is given."""
    digest: str = Field(pattern=DIGEST_RE.pattern)
    """The image manifest digest (bootc's `imageDigest` after the switch)."""
    architecture: str
    """OCI architecture of the image, e.g. amd64."""
    rendered_config: str
    """`rendered-<pool>-<hash>` the image was made from."""
    inputs_digest: str = Field(pattern=DIGEST_RE.pattern)
    """Digest of every build input; the image tag derives from it."""
    base_image: str
    """The base image as written in the repository (tag or digest)."""
    source_commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    """The config commit this pin was computed from."""
    build: BuildFacts
    live_config_digest: str | None = Field(default=None, pattern=DIGEST_RE.pattern)
    """Digest of the settings nodes apply live, without a reboot (core's SSH keys and
    password hash, `live_config_digest`); absent when the pool has none. Never the
    settings themselves: the agent reads them at `sourceCommit`."""


class Pin(model.StrictModel):
    """`pins/<pool>.yaml`, written by the reconciler only."""

    api_version: Literal["gitops.bootc.dev/v1alpha1"] = model.OUR_API_VERSION  # type: ignore[assignment]
    kind: Literal["Pin"] = PIN_KIND  # type: ignore[assignment]
    metadata: model.ObjectMeta
    spec: PinSpec


class PinError(ReconcilerError, ValueError):
    """A pin file that cannot be trusted; the message says why."""


def parse_pin(text: str | bytes, *, where: str = "pin") -> Pin:
    """Parse and check a pin file; `PinError` names the problem."""
    try:
        # libyaml's parser with PyYAML's safe constructor: what `safe_load` builds, at a
        # tenth of its time (a pass reads every pool's pin)
        doc: Any = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise PinError(f"{where}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise PinError(f"{where}: expected a Pin object, got {type(doc).__name__}")
    try:
        pin = Pin.model_validate(doc)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise PinError(f"{where}: {loc}: {first['msg']}") from exc
    if not pin.spec.image.endswith("@" + pin.spec.digest):
        raise PinError(f"{where}: spec.image {pin.spec.image!r} does not end in spec.digest")
    return pin


def image_repository(image: str) -> str:
    """`host/path` of `host/path@sha256:...` or `host/path:tag`."""
    name = image.partition("@")[0]
    head, sep, tail = name.rpartition(":")
    if sep and "/" not in tail:
        return head  # a tag (a port is followed by a path, so it contains "/")
    return name


def check_origin(pin: Pin, push_spec: str | None, *, where: str = "pin") -> None:
    """`PinError` unless the pin's image is in the repository `push_spec` (the pool's
    MachineOSConfig `renderedImagePushSpec`) names: the only place the reconciler
    pushes this pool's images to."""
    if push_spec is None:
        raise PinError(
            f"{where}: pool {pin.spec.pool!r} has no MachineOSConfig, so where its images "
            "may come from is unknown; not applying it"
        )
    want = image_repository(push_spec)
    got = image_repository(pin.spec.image)
    if got != want:
        raise PinError(
            f"{where}: spec.image is in {got!r}, but MachineOSConfig {pin.spec.pool} pushes "
            f"to {want!r}; a pin may only name an image from its pool's push repository"
        )


def live_config_digest(ssh_keys: Sequence[str], password_hash: str | None) -> str | None:
    """The digest a pin carries for core's live settings (None when there are none):
    sha256 over canonical JSON, so equal settings give an equal digest whatever their
    source order was (keys keep their order: MCO's union is ordered)."""
    if not ssh_keys and password_hash is None:
        return None
    doc = {"passwordHash": password_hash, "sshAuthorizedKeys": list(ssh_keys)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def render_pin(pin: Pin) -> str:
    """The pin file's text: YAML, keys in a fixed order, byte-stable for equal pins."""
    header = (
        "# Written by the reconciler; do not edit by hand (a hand edit holds the pool at\n"
        "# this image until its inputs change: see `reconciler history`).\n"
    )
    doc = pin.model_dump(by_alias=True, mode="json")
    if doc["spec"].get("liveConfigDigest") is None:
        del doc["spec"]["liveConfigDigest"]  # pins of pools without live settings unchanged
    body = _dump_simple(doc)
    if body is None:
        body = yaml.safe_dump(doc, sort_keys=False)
    return header + body


# A plain scalar PyYAML's emitter writes unquoted in block context: no indicator
# first, no `: ` / ` #` / space / quote / comma / bracket anywhere, no trailing `:`
# (`emitter.analyze_scalar`). Whether it would then read back as a string is the
# resolver's question (`_plain_is_str`).
_PLAIN = re.compile(r"[A-Za-z0-9_./](?:[A-Za-z0-9_./:@+=-]*[A-Za-z0-9_./@+=-])?")
_RESOLVER = yaml.resolver.Resolver()


def _plain_is_str(value: str) -> bool:
    tag = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    return bool(tag == "tag:yaml.org,2002:str")


def _scalar(value: str) -> str | None:
    if _PLAIN.fullmatch(value):
        return value if _plain_is_str(value) else f"'{value}'"
    return None


def _dump_simple(doc: dict[str, Any], indent: str = "") -> str | None:
    """`yaml.safe_dump(doc, sort_keys=False)`, for the shape pins have: mappings of
    strings to short plain-or-quotable strings and mappings. Pins are small and fixed
    in shape, and PyYAML's pure-Python emitter spends ~5 ms on each (a pass may write
    hundreds); this writes the same bytes directly. Anything outside that shape
    (another type, a string that would need double quotes, folding or escapes) gives
    None and the caller uses PyYAML. tests/unit/test_pin_render.py checks, on generated
    pins, that the bytes equal PyYAML's and read back to the same pin."""
    lines = []
    for key, value in doc.items():
        k = _scalar(key) if isinstance(key, str) and len(key) < 128 else None
        if k is None:  # (PyYAML writes a key of 128 characters or more as `? key`)
            return None
        if isinstance(value, dict):
            if not value:
                lines.append(f"{indent}{k}: {{}}\n")
                continue
            inner = _dump_simple(value, indent + "  ")
            if inner is None:
                return None
            lines.append(f"{indent}{k}:\n{inner}")
            continue
        v = _scalar(value) if isinstance(value, str) else None
        if v is None:  # (no space in it: PyYAML folds at spaces only, so no folding)
            return None
        lines.append(f"{indent}{k}: {v}\n")
    return "".join(lines)
