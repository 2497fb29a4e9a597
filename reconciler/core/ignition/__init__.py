"""Ignition: the config models (`models`), 2.2 conversion (`convert`), unused keys
(`unused`) and MCO's checks (`checks`). The models' public names are re-exported here."""

from reconciler.core.ignition.models import INTERNAL_VERSION, SUPPORTED_3X, Config

__all__ = ["INTERNAL_VERSION", "SUPPORTED_3X", "Config"]
