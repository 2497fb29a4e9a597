"""Failpoints: named places where a test can make the process die, to prove that a
restart converges (issue: "killed at any point ... a restart converges").

Set `RECONCILER_FAILPOINT=<name>` and the process exits with status 137 (as if killed
with SIGKILL: no cleanup, no `finally`) the first time it reaches that point. Names
are listed in `POINTS`. Unset in production, where `hit` is one dict lookup.
"""

from __future__ import annotations

import os
import sys

POINTS = (
    "after-load",  # repository read and parsed, nothing planned
    "after-plan",  # identities known, nothing built
    "mid-build",  # native build: blobs pushed, manifest not yet
    "after-build",  # images pushed, no pin commit made
    "after-commit",  # pin commit made locally, not pushed
    "after-push",  # pin commit pushed, status not saved
)

KILLED_EXIT = 137


def hit(name: str) -> None:
    if os.environ.get("RECONCILER_FAILPOINT") == name:
        sys.stderr.write(f"failpoint {name}: exiting\n")
        sys.stderr.flush()
        os._exit(KILLED_EXIT)
