"""Optional dependencies (extras) and the error that names the one to install.

The distribution is `bootc-reconciler`; `pip install 'bootc-reconciler[kubernetes]'`
adds the Kubernetes client that Job builds and the agent's Kubernetes coordination
need (the container image has it). Everything else works without it.
"""

from __future__ import annotations

import importlib

from reconciler.errors import ReconcilerError

DISTRIBUTION = "bootc-reconciler"
KUBERNETES = "kubernetes"


class MissingExtra(ReconcilerError):
    """A feature was asked for whose optional dependency is not installed."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the Python package {module!r}, which is not installed; "
            f"install the {extra!r} extra: pip install '{DISTRIBUTION}[{extra}]' "
            "(the reconciler's container image has it)"
        )
        self.extra = extra


def require_kubernetes(feature: str) -> None:
    """Raise `MissingExtra` naming `feature` unless the Kubernetes client imports."""
    try:
        importlib.import_module("kubernetes")
    except ImportError:
        raise MissingExtra(feature, KUBERNETES, "kubernetes") from None


def has_kubernetes() -> bool:
    try:
        require_kubernetes("")
    except MissingExtra:
        return False
    return True
