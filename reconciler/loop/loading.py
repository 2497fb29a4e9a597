"""Loading the config at a head, parsing only the files that changed since the last pass.

Stage: the loop's step 2 (issue 13: a pass costs what changed). `load.load_file` is a
pure function of a file's path and text, so the `LoadedFile` of a file whose text did
not move is kept and given to `load.load_repository` again, which puts the files
together as always (duplicates, the ReconcilerConfig, the problem limit and cross
references are decided across files there, every pass). The objects of a kept file are
the very objects of the last pass, which is what lets `verdict.VerdictCache` find the
pools whose inputs did not move.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.core import load


class LoadCache:
    """The loaded files of the last `load`, by path and text (memory: one per file)."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, str], load.LoadedFile] = {}
        self.parsed = 0
        """Files parsed by the last `load` (the others were kept)."""

    def load(self, files: Mapping[str, bytes | str | load.Unreadable]) -> load.Repository:
        """`load.load_repository(files)`, parsing only files not loaded last time."""
        kept = self._files
        used: dict[tuple[str, str], load.LoadedFile] = {}
        self.parsed = 0

        def load_file(path: str, text: str) -> load.LoadedFile:
            key = (path, text)
            loaded = kept.get(key)
            if loaded is None:
                loaded = load.load_file(path, text)
                self.parsed += 1
            used[key] = loaded
            return loaded

        repo = load.load_repository(files, load_file)
        self._files = used
        return repo
