"""The native builder: push a config-only image without any container tooling.

Stage: build, for plans without RUN steps. Input: a `PoolPlan` whose image was composed
in-process (`core/layer.py` + `core/oci.py`). Output: the pushed manifest digest, which
is the predicted one or an error.

Order matters for "never pin what is broken": base layers first (HEAD, else
cross-repository mount within the registry, else streamed from the base's registry),
then our layer and config, the manifest last. Only the manifest PUT makes something a
tag names, and the registry refuses a manifest whose blobs are missing, so a build cut
short leaves nothing a pin could point to. Only the config layer and the config travel
from this process; base layers are never re-uploaded from here.
"""

from __future__ import annotations

import logging

from reconciler import failpoints
from reconciler.adapters.registry import RegistryClient
from reconciler.core import reference
from reconciler.core.poolplan import PoolPlan
from reconciler.errors import BuildError

log = logging.getLogger(__name__)


def push_native(registry: RegistryClient, plan: PoolPlan) -> str:
    """Push the plan's composed image to `plan.target`; returns its digest."""
    composed, built = plan.composed, plan.layer
    if composed is None or built is None:
        raise ValueError(f"pool {plan.pool} needs a Containerfile build, not the native builder")
    target = reference.repository(plan.target)
    tag = plan.target.tag
    if tag is None:
        raise ValueError(f"pool {plan.pool}: the target {plan.target} has no tag")
    registry.ensure_blobs(target, plan.base.layers, source_repo=plan.base.repository)
    registry.ensure_blobs(
        target,
        [
            composed.layer_descriptor,
            {"digest": composed.config_digest, "size": len(composed.config_bytes)},
        ],
        local={built.digest: built.blob, composed.config_digest: composed.config_bytes},
    )
    failpoints.hit("mid-build")
    digest = registry.put_manifest(target, tag, composed.manifest_bytes, composed.media_type)
    if digest != composed.manifest_digest:  # put_manifest checks the registry; this checks us
        raise BuildError(
            f"pushed {digest} for pool {plan.pool}, predicted {composed.manifest_digest}"
        )
    log.info(
        "pool %s: uploaded image %s (native)", plan.pool, reference.short_image(plan.target, digest)
    )
    return digest
