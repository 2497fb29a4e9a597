"""Building: make sure a planned image exists in the registry, building only if not.

Stage: after planning. Input: a `PoolPlan`. Output: a `BuildResult` naming the image by
digest and how it came to be. The existence check is one HEAD request for the
inputs-derived tag (DESIGN §2 promise 3: build once, whatever replica, restart or
revert); only when it fails does a builder run: the native builder for config-only
plans, buildah or a Kubernetes Job for plans with RUN steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from reconciler.adapters.builders.buildah import BuiltElsewhere
from reconciler.adapters.builders.native import push_native
from reconciler.adapters.registry import RegistryClient, signatures
from reconciler.core import cosign, reference
from reconciler.core.poolplan import PoolPlan
from reconciler.core.reference import ImageRef
from reconciler.errors import BuildError

log = logging.getLogger("reconciler.building")  # the logger keeps its name across moves

BuiltBy = Literal["native", "buildah", "job", "reused"]


class ContainerfileBuilder(Protocol):
    """Builds a plan's Containerfile and pushes it to `plan.target`; returns the digest
    of the pushed (per-architecture) image manifest. A build of the same inputs that
    someone else runs is waited for, not repeated (`waiting` hears who): the Job
    builder finds their Job by name, the buildah builder their lock (and raises
    `BuiltElsewhere` when it ends)."""

    def build(self, plan: PoolPlan, waiting: Callable[[str], None] | None = None) -> str: ...


@dataclass(frozen=True)
class BuildResult:
    pool: str
    image: ImageRef
    """`registry/repo@sha256:…`, exactly what a pin and `bootc switch` carry."""
    digest: str
    built_by: BuiltBy


def find_existing(registry: RegistryClient, plan: PoolPlan) -> str | None:
    """The digest already stored under the plan's tag, if any (one HEAD)."""
    tag = plan.target.tag or ""
    return registry.manifest_digest(reference.repository(plan.target), tag)


def ensure_image(
    registry: RegistryClient,
    plan: PoolPlan,
    builders: Mapping[str, ContainerfileBuilder],
    signer: cosign.Signer | None = None,
) -> BuildResult:
    """The plan's image, from the registry if it exists, else built and pushed; with a
    `signer`, signed in cosign's format whether built or reused (docs/design/signing.md)."""
    result = _ensure_image(registry, plan, builders)
    if signer is not None:
        sign(registry, result, signer)
    return result


def sign(registry: RegistryClient, result: BuildResult, signer: cosign.Signer) -> None:
    """Sign a pinned image (built or reused) in cosign's format."""
    signatures.sign_image(registry, result.image, result.digest, signer)


def find_or_build_native(registry: RegistryClient, plan: PoolPlan) -> BuildResult | None:
    """The plan's image if it exists (one HEAD), or built natively if it can be;
    None when it needs a Containerfile build."""
    existing = find_existing(registry, plan)
    if existing is not None:
        if plan.predicted_digest and existing != plan.predicted_digest:
            # Same inputs, other bytes: an image from another zlib or an older format.
            # The tag is ours and names these inputs, so it is still the right image.
            log.warning(
                "pool %s: %s holds %s, not the predicted %s; using it",
                plan.pool, plan.target, existing, plan.predicted_digest,
            )  # fmt: skip
        return _result(plan, existing, "reused")
    if plan.builder == "native":
        return _result(plan, push_native(registry, plan), "native")
    return None


def containerfile_builder(
    plan: PoolPlan, builders: Mapping[str, ContainerfileBuilder]
) -> ContainerfileBuilder:
    builder = builders.get(plan.builder)
    if builder is None:
        raise BuildError(
            f"pool {plan.pool} needs a {plan.builder} build ({'; '.join(plan.image.reasons)}) "
            f"and no {plan.builder} builder is configured"
        )
    return builder


def build_containerfile(
    registry: RegistryClient,
    plan: PoolPlan,
    builders: Mapping[str, ContainerfileBuilder],
    waiting: Callable[[str], None] | None = None,
) -> BuildResult:
    """Run the plan's Containerfile builder (the image is not in the registry). A build
    of the same inputs by another process on this host is waited for; its image is then
    `reused`, or built here if that build failed."""
    builder = containerfile_builder(plan, builders)
    try:
        digest = builder.build(plan, waiting)
    except BuiltElsewhere:
        existing = find_existing(registry, plan)
        if existing is not None:
            return _result(plan, existing, "reused")
        digest = builder.build(plan, waiting)
    return _result(plan, digest, plan.builder)


def _ensure_image(
    registry: RegistryClient,
    plan: PoolPlan,
    builders: Mapping[str, ContainerfileBuilder],
) -> BuildResult:
    found = find_or_build_native(registry, plan)
    if found is not None:
        return found
    return build_containerfile(registry, plan, builders)


def _result(plan: PoolPlan, digest: str, built_by: BuiltBy) -> BuildResult:
    return BuildResult(plan.pool, reference.with_digest(plan.target, digest), digest, built_by)
