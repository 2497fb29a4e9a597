"""Git history as the audit log: pin commit messages, and what past commits mean.

Stage: used by the reconcile pass (to write a pin commit, and to decide holds) and by
`reconciler history`. Inputs: pins and commit records (sha, author, time, message
trailers, touched paths) as the Git adapter reads them. Outputs: commit messages, and
per-pool classifications. Pure: Git itself is the adapter's business.

A pin commit carries one block of trailers per pool, in order (`git interpret-trailers`
allows repeated keys):

    Pool: worker
    Image: registry.example.com/fleet/worker@sha256:…
    Inputs-Digest: sha256:…
    Base-Image: quay.io/fedora/fedora-bootc:42@sha256:…
    Source-Commit: 0123…
    Build: native
    Reconciled-By: reconciler

`Reconciled-By` marks the reconciler's own commits: any other commit that changes
`pins/<pool>.yaml` (a `git revert` of a pin commit, a hand edit) is an explicit hold
(DESIGN §6), decided from history alone so every replica agrees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from reconciler.core import pins

RECONCILED_BY = "Reconciled-By"
RECONCILER_NAME = "reconciler"
_POOL_KEYS = ("Pool", "Image", "Inputs-Digest", "Base-Image", "Source-Commit", "Build")


class CommitRecord(Protocol):
    """What the history needs of a commit (the Git adapter's commit info fits it)."""

    @property
    def sha(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def trailers(self) -> Mapping[str, Sequence[str]]: ...


@dataclass(frozen=True)
class PinChange:
    """One pool's pin moving in a pass; `previous` is None for a first pin."""

    pin: pins.Pin
    previous: pins.Pin | None

    @property
    def pool(self) -> str:
        return self.pin.spec.pool


def pin_commit_message(changes: Sequence[PinChange], source_subject: str) -> str:
    """The message of the one commit a pass makes for all pools that changed."""
    if not changes:
        raise ValueError("no pin changes: a pass without changes makes no commit")
    source = changes[0].pin.spec.source_commit
    pools = ", ".join(c.pool for c in changes)
    if len(changes) == 1:
        only = changes[0].pin.spec
        subject = f"pin {only.pool} to {only.digest[7:19]} (config {source[:10]})"
    else:
        subject = f"pin {len(changes)} pools: {pools} (config {source[:10]})"
    lines = [subject, "", f"From config commit {source[:10]}: {source_subject}", ""]
    for change in changes:
        spec = change.pin.spec
        how = {
            "reused": "the image for these inputs already existed",
            "native": "built natively",
            "buildah": "built with buildah",
            "job": "built by a Kubernetes Job",
        }[spec.build.builder]
        was = f"was {change.previous.spec.digest[7:19]}" if change.previous else "first pin"
        if change.previous is not None and change.previous.spec.digest == spec.digest:
            # the same image: only what nodes apply live changed (no reboot)
            how = "the same image, new live settings (core's SSH keys, password hash)"
            was = "no reboot"
        lines.append(f"- {spec.pool}: {spec.rendered_config}, {how} ({was})")
    lines.append("")
    for change in changes:
        spec = change.pin.spec
        lines += [
            f"Pool: {spec.pool}",
            f"Image: {spec.image}",
            f"Inputs-Digest: {spec.inputs_digest}",
            f"Base-Image: {base_reference(spec.base_image, spec.build.base_image_digest)}",
            f"Source-Commit: {spec.source_commit}",
            f"Build: {spec.build.builder}",
        ]
    lines.append(f"{RECONCILED_BY}: {RECONCILER_NAME}")
    return "\n".join(lines) + "\n"


def base_reference(written: str, digest: str) -> str:
    """`repo:tag@sha256:…`: the base as written, pinned to what it resolved to."""
    return written if written.endswith(digest) else f"{written}@{digest}"


def is_reconciler_commit(commit: CommitRecord) -> bool:
    return RECONCILER_NAME in commit.trailers.get(RECONCILED_BY, ())


def pinned_pools(commit: CommitRecord) -> dict[str, dict[str, str]]:
    """Per pool, the trailers of a reconciler pin commit (empty for other commits)."""
    if not is_reconciler_commit(commit):
        return {}
    # Trailers come back as key → values in order; pool blocks line up by index.
    columns = {key: list(commit.trailers.get(key, ())) for key in _POOL_KEYS}
    out: dict[str, dict[str, str]] = {}
    for index, pool in enumerate(columns["Pool"]):
        out[pool] = {k: v[index] for k, v in columns.items() if index < len(v)}
    return out


CommitKind = Literal["build", "reuse", "revert", "hold"]


def classify(commit: CommitRecord, pool: str, earlier_digests: set[str], digest: str) -> CommitKind:
    """What a commit that changed `pins/<pool>.yaml` did to the pool.

    `build`: the reconciler pinned a newly built image. `reuse`: it pinned an image that
    already existed for these inputs. `revert`: it pinned a digest the pool had before
    (a config revert brought the inputs back). `hold`: someone other than the reconciler
    changed the pin (a pin revert or a hand edit).
    """
    block = pinned_pools(commit).get(pool)
    if block is None:
        return "hold"
    if digest in earlier_digests:
        return "revert"
    return "reuse" if block.get("Build") == "reused" else "build"
