"""Reading the watched repository's configuration files from a directory."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.core import load
from reconciler.errors import ConfigError, ConfigProblem


def read_config_files(root: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every config file under `root` (see `load.is_config_path`), by relative path."""
    base = Path(root)
    if not base.is_dir():
        raise ConfigError(ConfigProblem(f"{base} is not a directory", fix="pass --repo DIR"))
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        # prune dot-directories and pins/ early (they can be large: .git)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and f"{rel_dir}{d}" != load.PINS_DIR
        )
        for name in filenames:
            rel = rel_dir + name
            if load.is_config_path(rel):
                files[rel] = (Path(dirpath) / name).read_bytes()
    return files
