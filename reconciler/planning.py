"""Planning: what each pool's image is, before anything is built.

Stage: between the core and the builders; shared by `reconciler plan`, `reconciler
build` and every reconcile pass. Input: a loaded repository and a way to resolve base
images (the registry). Output, per pool, a `PoolPlan` (rendered config, image plan,
resolved base, inputs digest, target `repo:tag`, builder, and for native builds the
exact image bytes and so the predicted digest) or a `PoolFailure` saying why not.

The only I/O is `BaseResolver.resolve` (one registry lookup per distinct base image and
architecture per call of `plan_pools`); the rest is the pure core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from reconciler.adapters.registry import Resolved
from reconciler.core import identity, imageplan, layer, load, merge, model, oci, reference
from reconciler.core.reference import ImageRef, InvalidReference
from reconciler.errors import ConfigError, ConfigProblem, ReconcilerError, is_transient

Builder = Literal["native", "buildah", "job"]
NATIVE_CREATED_BY = "reconciler: config layer"


class BaseResolver(Protocol):
    def resolve(self, ref: ImageRef | str, arch: str = "amd64", os: str = "linux") -> Resolved: ...


@dataclass(frozen=True)
class PoolPlan:
    """Everything known about a pool's image before it is built."""

    pool: str
    rendered: merge.RenderedConfig
    image: imageplan.ImagePlan
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


@dataclass(frozen=True)
class PoolFailure:
    """Why a pool has no plan: a config problem (wait for a new commit) or a failure
    outside the repository (`transient`: retry later)."""

    pool: str
    error: ReconcilerError

    @property
    def transient(self) -> bool:
        return is_transient(self.error)

    def summary(self) -> dict[str, Any]:
        return {"pool": self.pool, "error": str(self.error), "transient": self.transient}


@dataclass(frozen=True)
class Unmanaged:
    """A pool without a MachineOSConfig: rendered, but no image is built for it."""

    pool: str
    rendered: merge.RenderedConfig

    def summary(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "renderedConfig": self.rendered.name,
            "unmanaged": "no MachineOSConfig: no image is built for this pool",
        }


PoolOutcome = PoolPlan | PoolFailure | Unmanaged


@dataclass
class Planner:
    """Plans pools against one registry view; base lookups are cached per instance."""

    resolver: BaseResolver
    default_builder: Literal["buildah", "job"] = "buildah"
    _bases: dict[tuple[str, str], Resolved | ReconcilerError] = field(default_factory=dict)

    def plan_pools(
        self, repo: load.Repository, pools: Iterable[str] | None = None
    ) -> dict[str, PoolOutcome]:
        rendered, failed = merge.render_all(repo)
        wanted = sorted(repo.pools) if pools is None else list(pools)
        out: dict[str, PoolOutcome] = {}
        for pool in wanted:
            if pool not in repo.pools:
                known = ", ".join(sorted(repo.pools)) or "none"
                out[pool] = PoolFailure(
                    pool, ConfigError.simple(f"no pool {pool!r} (pools: {known})")
                )
            elif pool in failed:
                out[pool] = PoolFailure(pool, failed[pool])
            else:
                out[pool] = self.plan_pool(repo, rendered[pool])
        return out

    def plan_pool(self, repo: load.Repository, rendered: merge.RenderedConfig) -> PoolOutcome:
        pool = rendered.pool
        mosc = repo.os_configs.get(pool)
        if mosc is None:
            return Unmanaged(pool, rendered)
        arch = imageplan.pool_architecture(mosc.obj, repo.settings)
        try:
            # Problems that need no registry first: the plan's own, the push spec.
            image = imageplan.plan_image(rendered, mosc.obj, repo.settings, arch)
            target_repo = _push_repository(mosc)
            base = self._resolve(rendered.spec["osImageURL"], arch)
            digest = identity.inputs_digest(
                base.digest, rendered, mosc.obj, repo.settings, architecture=arch
            )
            # Only the labels depend on the inputs digest: no second plan.
            image = replace(image, labels=identity.image_labels(rendered, digest))
        except ReconcilerError as exc:
            return PoolFailure(pool, exc)
        target = reference.with_tag(target_repo, identity.image_tag(pool, digest))
        if image.needs_containerfile:
            return PoolPlan(pool, rendered, image, mosc.obj, arch, base, digest, target,
                            self._containerfile_builder(mosc.obj, repo.settings))  # fmt: skip
        built = layer.build_layer(image.entries)
        composed = oci.compose_image(
            base.manifest,
            base.config_bytes,
            built,
            labels=image.labels,
            created_by=f"{NATIVE_CREATED_BY} {rendered.name}",
        )
        return PoolPlan(
            pool, rendered, image, mosc.obj, arch, base, digest, target, "native", built, composed
        )

    def _resolve(self, base_image: str, arch: str) -> Resolved:
        key = (base_image, arch)
        if key not in self._bases:
            try:
                self._bases[key] = self.resolver.resolve(base_image, arch=arch)
            except ReconcilerError as exc:
                self._bases[key] = exc
        found = self._bases[key]
        if isinstance(found, ReconcilerError):
            raise found
        return found

    def _containerfile_builder(
        self, mosc: model.MachineOSConfig, settings: model.ReconcilerConfigSpec
    ) -> Builder:
        chosen = (
            mosc.spec.image_builder.image_builder_type if mosc.spec.image_builder else None
        ) or settings.default_image_builder
        if chosen is None:
            return self.default_builder
        return "job" if chosen == "Job" else "buildah"


def _push_repository(mosc: load.Loaded[model.MachineOSConfig]) -> ImageRef:
    spec = mosc.obj.spec.rendered_image_push_spec
    try:
        ref = reference.parse(spec)
    except InvalidReference as exc:
        raise ConfigError(
            ConfigProblem(
                exc.problem,
                file=mosc.origin.file,
                line=mosc.origin.line(("spec", "renderedImagePushSpec")),
                kind="MachineOSConfig",
                name=mosc.obj.metadata.name,
                field="spec.renderedImagePushSpec",
                fix=exc.fix,
            )
        ) from None
    if ref.digest:
        raise ConfigError(
            ConfigProblem(
                f"{spec!r} names a digest; the push spec names where images go",
                file=mosc.origin.file,
                kind="MachineOSConfig",
                name=mosc.obj.metadata.name,
                field="spec.renderedImagePushSpec",
                fix=f"write {reference.repository(ref)}:latest (the tag is replaced)",
            )
        )
    return ref


def outcomes_summary(outcomes: Mapping[str, PoolOutcome]) -> list[dict[str, Any]]:
    return [outcomes[p].summary() for p in sorted(outcomes)]
