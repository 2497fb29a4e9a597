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

from reconciler.core import (
    decision,
    identity,
    load,
    merge,
    model,
    pins,
    reference,
    verdict,
)
from reconciler.core.image import layer, oci
from reconciler.core.poolplan import NATIVE_CREATED_BY, Builder, PoolPlan, Resolved
from reconciler.core.reference import ImageRef
from reconciler.errors import ConfigError, InternalError, ReconcilerError, is_transient


class BaseResolver(Protocol):
    def resolve(self, ref: ImageRef | str, arch: str = "amd64", os: str = "linux") -> Resolved: ...


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


PlanKey = tuple[str, str, str, str]
"""(pool, config fingerprint, resolved base digest, default builder)."""


class PlanCache:
    """The plans of the last pass, by what they are made from: a pool whose inputs
    (its config fingerprint, `identity.config_fingerprint`) and resolved base did not
    move gets the same plan again, without re-planning its image (the config layer's
    tar and gzip, the composed manifest). The fingerprint covers everything of the
    repository a plan reads (rendered config, MachineOSConfig, ReconcilerConfig,
    architecture) and the key adds the base digest and the default builder, so a hit
    is the plan `_plan_image` would make. Holds the plans of one pass: `start` begins
    a pass, and plans not asked for in it are dropped (memory: one plan per pool)."""

    def __init__(self) -> None:
        self._plans: dict[PlanKey, PoolPlan] = {}
        self._used: dict[PlanKey, PoolPlan] = {}
        self.hits = 0

    def start(self) -> None:
        if self._used:
            self._plans = self._used
        self._used = {}

    def get(self, key: PlanKey) -> PoolPlan | None:
        plan = self._plans.get(key) or self._used.get(key)
        if plan is not None:
            self.hits += 1
            self._used[key] = plan
        return plan

    def put(self, key: PlanKey, plan: PoolPlan) -> None:
        self._used[key] = plan


@dataclass
class Planner:
    """Plans pools against one registry view; base lookups are cached per instance,
    plans across instances in `cache` (the loop's, see `PlanCache`) and verdicts in
    `verdicts` (`verdict.VerdictCache`)."""

    resolver: BaseResolver
    default_builder: Literal["buildah", "job"] = "buildah"
    cache: PlanCache | None = None
    verdicts: verdict.VerdictCache | None = None
    _bases: dict[tuple[str, str], Resolved | ReconcilerError] = field(default_factory=dict)

    def plan_pools(
        self, repo: load.Repository, pools: Iterable[str] | None = None, known: Iterable[str] = ()
    ) -> dict[str, PoolOutcome]:
        """Plan `pools` (default: every pool `verdict.judge` names, `known` included);
        only the pools asked for are judged."""
        if pools is None:
            verdicts = verdict.judge(repo, known, self.verdicts)
        else:
            verdicts = {pool: verdict.judge_pool(repo, pool) for pool in pools}
        return {pool: self.plan_verdict(repo, judged) for pool, judged in verdicts.items()}

    def plan_verdict(self, repo: load.Repository, judged: verdict.Verdict) -> PoolOutcome:
        """The plan of a judged pool: its failure, unmanaged, or its image (one registry
        lookup for the base, shared by pools on the same base)."""
        if isinstance(judged, verdict.Blocked):
            return PoolFailure(judged.pool, judged.error)
        if judged.image is None:
            return Unmanaged(judged.pool, judged.rendered)
        try:
            return self._plan_image(repo, judged, judged.image)
        except ReconcilerError as exc:
            return PoolFailure(judged.pool, exc)
        except Exception as exc:
            return PoolFailure(judged.pool, InternalError(f"planning pool {judged.pool}", exc))

    def _plan_image(
        self, repo: load.Repository, ready: verdict.Ready, judged: verdict.Image
    ) -> PoolPlan:
        base = self._resolve(judged.base_image, ready.architecture)
        if self.cache is None:
            return self._plan_image_on(repo, ready, judged, base)
        key = (ready.pool, ready.fingerprint, base.digest, self.default_builder)
        plan = self.cache.get(key)
        if plan is None:
            plan = self._plan_image_on(repo, ready, judged, base)
            self.cache.put(key, plan)
        return plan

    def _plan_image_on(
        self, repo: load.Repository, ready: verdict.Ready, judged: verdict.Image, base: Resolved
    ) -> PoolPlan:
        pool, rendered, arch = ready.pool, ready.rendered, ready.architecture
        mosc = judged.os_config.obj
        digest = identity.inputs_digest(
            base.digest, rendered, mosc, repo.settings, architecture=arch
        )
        # Only the labels depend on the inputs digest: no second plan.
        image = replace(judged.plan, labels=identity.image_labels(rendered, digest))
        target = reference.with_tag(judged.push_repository, identity.image_tag(pool, digest))
        if image.needs_containerfile:
            return PoolPlan(pool, rendered, image, mosc, arch, base, digest, target,
                            self._containerfile_builder(mosc, repo.settings))  # fmt: skip
        built = layer.build_layer(image.entries)
        try:
            composed = oci.compose_image(
                base.manifest,
                base.config_bytes,
                built,
                labels=image.labels,
                created_by=f"{NATIVE_CREATED_BY} {pool}",
            )
        except oci.ManifestError as exc:
            raise ConfigError.simple(
                f"base image {judged.base_image}: {exc}",
                file=judged.os_config.origin.file,
                kind="MachineOSConfig",
                name=pool,
                fix="use a bootc base image (an OCI image with a rootfs), or fix its tag",
            ) from exc
        return PoolPlan(
            pool, rendered, image, mosc, arch, base, digest, target, "native", built, composed
        )

    def _resolve(self, base_image: reference.ImageRef, arch: str) -> Resolved:
        key = (str(base_image), arch)
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


def decide(
    outcome: PoolOutcome,
    pin: pins.Pin | None,
    hold: str | None = None,
    failed_inputs: str | None = None,
    build: decision.BuildState | None = None,
) -> decision.Decision:
    """`decision.decide` for a planned pool: the one call the loop and `plan` make
    (`build`: the loop's background build of the pool's inputs, if any)."""
    if isinstance(outcome, PoolFailure):
        return decision.decide(
            target=None, problem=str(outcome.error), transient=outcome.transient, pin=pin
        )
    if isinstance(outcome, Unmanaged):
        return decision.decide(target=None, pin=pin)
    return decision.decide(
        target=outcome.decision_target, pin=pin, hold=hold, failed_inputs=failed_inputs,
        build=build,
    )  # fmt: skip


def outcomes_summary(outcomes: Mapping[str, PoolOutcome]) -> list[dict[str, Any]]:
    return [outcomes[p].summary() for p in sorted(outcomes)]
