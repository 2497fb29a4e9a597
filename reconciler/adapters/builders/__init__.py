"""Builders: turn a `PoolPlan` into an image in the registry and return its digest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.adapters.registry import RegistryClient


def available(registry: RegistryClient, **options: Any) -> dict[str, Any]:
    """The Containerfile builders this machine can run, by name (`buildah`, `job`).

    Empty until the Containerfile builders land; `building.ensure_image` then says
    which builder a pool needs and that none is configured.
    """
    return {}
