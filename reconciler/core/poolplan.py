"""A pool's plan as a value: what its image is before anything is built.

Stage: the output of pool planning (`reconciler.loop.planning`), the input of building
and of every builder. Values only: the resolved base image (`Resolved`) and the
`PoolPlan` that carries the rendered config, the image layout and the target.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.core import decision, merge, model, pins, reference
from reconciler.core.image import layer, layout, oci
from reconciler.core.reference import ImageRef

Builder = Literal["native", "buildah", "job"]
NATIVE_CREATED_BY = "reconciler: config layer"


@dataclass(frozen=True)
class Resolved:
    """An image reference resolved to one platform's image manifest.

    `digest` is what a pin records and `bootc switch` gets; `index_digest` is set when
    the reference named an index (manifest list) and `digest` was selected from it.
    """

    ref: ImageRef
    digest: str
    media_type: str
    manifest: bytes
    manifest_json: Mapping[str, Any]
    config: Mapping[str, Any]
    config_bytes: bytes
    platform: str
    index_digest: str | None = None

    @property
    def pinned(self) -> ImageRef:
        """`host/path@sha256:...` of the per-platform manifest, without a tag."""
        return reference.with_digest(self.ref, self.digest)

    @property
    def repository(self) -> str:
        return reference.repository(self.ref)

    @property
    def config_descriptor(self) -> Mapping[str, Any]:
        desc: Mapping[str, Any] = self.manifest_json["config"]
        return desc

    @property
    def layers(self) -> list[Mapping[str, Any]]:
        return list(self.manifest_json.get("layers", []))


@dataclass(frozen=True)
class PoolPlan:
    """Everything known about a pool's image before it is built."""

    pool: str
    rendered: merge.RenderedConfig
    image: layout.ImagePlan
    os_config: model.MachineOSConfig
    architecture: str
    base: Resolved
    inputs_digest: str
    target: ImageRef
    """`registry/repo:tag`; the tag derives from the inputs digest."""
    builder: Builder
    layer: layer.Layer | None = None
    composed: oci.ComposedImage | None = None
    """Native builds only: the exact config and manifest bytes to push."""

    @property
    def ca_bundle(self) -> bytes | None:
        """The CA bundle the image trusts (covered by the inputs digest)."""
        return self.image.ca_bundle

    @functools.cached_property
    def decision_target(self) -> decision.Target:
        """What `decision.decide` compares a pin with."""
        return decision.Target(
            self.inputs_digest,
            reference.repository(self.target),
            self.architecture,
            self.live_config_digest,
        )

    @functools.cached_property
    def live_config_digest(self) -> str | None:
        """The pin's `liveConfigDigest`: core's SSH keys and password hash, which nodes
        apply live (never part of the image or its identity)."""
        return pins.live_config_digest(
            self.rendered.ssh_authorized_keys, self.rendered.password_hash
        )

    @property
    def predicted_digest(self) -> str | None:
        return self.composed.manifest_digest if self.composed is not None else None

    @property
    def base_image(self) -> str:
        """The base image as written in the repository."""
        return self.image.base_image

    def summary(self) -> dict[str, Any]:
        """The JSON `reconciler plan` prints for the pool."""
        return {
            "pool": self.pool,
            "renderedConfig": self.rendered.name,
            "inputsDigest": self.inputs_digest,
            "builder": self.builder,
            "reasons": list(self.image.reasons),
            "architecture": self.architecture,
            "baseImage": self.base_image,
            "baseImageDigest": self.base.digest,
            "image": {
                "repository": reference.repository(self.target),
                "tag": self.target.tag,
            },
            "predictedDigest": self.predicted_digest,
        }
