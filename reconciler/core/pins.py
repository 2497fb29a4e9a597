"""Pins: what the reconciler commits to `pins/<pool>.yaml` and node agents apply.

Stage: the output of a pass, and the input of every node agent. A pin names one image
by digest (what `bootc switch` gets; always the per-architecture image manifest, never
an index, because bootc reports that digest as `imageDigest`), plus the provenance an
auditor needs: rendered config, inputs digest, base image and its digest, the config
commit it was made from, and how it was made.

`parse_pin` is strict: a pin that is malformed or not by digest is refused with a
reason (an agent must never switch to a guess).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import pydantic
import yaml
from pydantic import Field

from reconciler.core import canonical, model

DIGEST_RE = canonical.SHA256_DIGEST_RE
IMAGE_BY_DIGEST_RE = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
PIN_KIND = "Pin"


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


class Pin(model.StrictModel):
    """`pins/<pool>.yaml`, written by the reconciler only."""

    api_version: Literal["gitops.bootc.dev/v1alpha1"] = model.OUR_API_VERSION  # type: ignore[assignment]
    kind: Literal["Pin"] = PIN_KIND  # type: ignore[assignment]
    metadata: model.ObjectMeta
    spec: PinSpec


class PinError(ValueError):
    """A pin file that cannot be trusted; the message says why."""


def parse_pin(text: str | bytes, *, where: str = "pin") -> Pin:
    """Parse and check a pin file; `PinError` names the problem."""
    try:
        doc: Any = yaml.safe_load(text)
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


def render_pin(pin: Pin) -> str:
    """The pin file's text: YAML, keys in a fixed order, byte-stable for equal pins."""
    header = (
        "# Written by the reconciler; do not edit by hand (a hand edit holds the pool at\n"
        "# this image until its inputs change: see `reconciler history`).\n"
    )
    body = yaml.safe_dump(pin.model_dump(by_alias=True, mode="json"), sort_keys=False)
    return header + body
