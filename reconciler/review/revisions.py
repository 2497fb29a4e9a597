"""Plans between two revisions, and what the next pass does with each pool.

Stage: review, for `reconciler plan --base/--head` and `rollback`. Inputs: a reader of
Git objects (a `Mirror`, or `LocalRepository.view`), commit ids, a `Planner` and the
registry. Outputs: a `Review` (per pool: rendered config diff, disruption, build path,
target, whether the image already exists) and `Prediction`s made by the loop's own
decision (`core.decision`), without building or pushing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from reconciler.adapters.git import CommitInfo, Mirror
from reconciler.adapters.git import verify as gitverify
from reconciler.adapters.registry import RegistryClient
from reconciler.core import diff, load, merge, model, pins, poolplan, provenance, verdict
from reconciler.core.image import layout
from reconciler.errors import ConfigError, ConfigProblem, ReconcilerError
from reconciler.loop import building, holds, planning

AGENT_NOTE = (
    "Our node agent applies core's SSH keys and password hash live (no reboot) and every "
    "other change as a new image with `bootc switch` and a reboot, node by node within the "
    "pool's maxUnavailable; the MCO policy shown in the details is what MCO's default node "
    "disruption policies would do for the same change."
)


# --- reading a revision ----------------------------------------------------------------------


def load_at(reader: Mirror, sha: str) -> load.Repository:
    """The repository's configuration at commit `sha` (read from Git, not a work tree)."""
    return load.load_repository(reader.read_files(sha, load.is_config_path))


def commit_info(reader: Mirror, sha: str) -> CommitInfo:
    return reader.log(sha, max_count=1)[0]


@dataclass(frozen=True)
class PoolState:
    """A pool at one revision: its verdict (rendered, or why not) and its MachineOSConfig."""

    pool: str
    judged: verdict.Verdict
    os_config: model.MachineOSConfig | None
    architecture: str
    push_spec: str | None

    @property
    def rendered(self) -> merge.RenderedConfig | None:
        return self.judged.rendered if isinstance(self.judged, verdict.Ready) else None

    @property
    def fingerprint(self) -> str | None:
        return self.judged.fingerprint if isinstance(self.judged, verdict.Ready) else None

    @property
    def error(self) -> ConfigError | None:
        if isinstance(self.judged, verdict.Ready):
            return None
        error = self.judged.error
        return error if isinstance(error, ConfigError) else ConfigError(self.judged.problems)

    @property
    def own(self) -> tuple[ConfigProblem, ...]:
        """Problems found rendering or planning this pool (beyond the repository's own)."""
        return self.judged.own if isinstance(self.judged, verdict.Blocked) else ()

    @property
    def key(self) -> tuple[str | None, str | None, bool]:
        """What decides "this pool changed": its inputs as Git states them, where its
        image goes, and whether it is managed at all."""
        return (self.fingerprint, self.push_spec, self.os_config is not None)

    def items(self) -> dict[str, diff.Item]:
        spec = self.rendered.spec if self.rendered is not None else None
        return diff.config_items(spec, self.os_config, self.architecture)


def pool_states(repo: load.Repository) -> dict[str, PoolState]:
    """Every pool the verdict names, as `review_revisions` compares them."""
    out = {}
    for pool, judged in verdict.judge(repo).items():
        mosc = repo.os_configs.get(pool)
        os_config = mosc.obj if mosc else None
        arch = layout.pool_architecture(os_config, repo.settings)
        push = os_config.spec.rendered_image_push_spec if os_config else None
        out[pool] = PoolState(pool, judged, os_config, arch, push)
    return out


# --- plan between revisions ------------------------------------------------------------------

ReviewStatus = Literal["changed", "added", "removed", "unchanged", "error"]
SourceChange = Literal["added", "removed", "modified"]


@dataclass(frozen=True)
class Source:
    """A changed object that brought a pool's change (attribution)."""

    kind: str
    name: str
    file: str
    change: SourceChange
    via: str | None = None
    """The role label through which the pool takes it, when it is not the pool's own
    (infra taking a worker config)."""


@dataclass(frozen=True)
class Rollout:
    """How the head's pool takes a new image: batch size and whether it is paused."""

    max_unavailable: str
    paused: bool


@dataclass(frozen=True)
class PoolReview:
    pool: str
    status: ReviewStatus
    base: PoolState | None
    head: PoolState | None
    diffs: tuple[diff.ItemDiff, ...] = ()
    disruption: diff.Disruption | None = None
    outcome: planning.PoolOutcome | None = None
    """The head's plan (changed pools only)."""
    existing_digest: str | None = None
    """The image for the head's inputs is already in the registry (no build on merge)."""
    lookup_error: str | None = None
    sources: tuple[Source, ...] = ()
    """The changed objects this pool takes (or took), which brought its change."""
    not_planned: str | None = None
    """Why the image could not be planned although the config is valid (a registry that
    cannot be reached): the diff and the disruption still stand."""
    blocked_by: tuple[str, ...] = ()
    """For a pool in error: the files whose problems block it (it keeps its pin)."""
    rollout: Rollout | None = None

    @property
    def node_action(self) -> diff.NodeAction | None:
        """What our agent does on the pool's nodes (None when nothing changes)."""
        if self.status not in ("changed", "added"):
            return None
        return diff.node_action(self.diffs)

    @property
    def plan(self) -> poolplan.PoolPlan | None:
        return self.outcome if isinstance(self.outcome, poolplan.PoolPlan) else None

    @property
    def digest_after_merge(self) -> str | None:
        plan = self.plan
        if plan is None:
            return None
        return self.existing_digest or plan.predicted_digest


@dataclass(frozen=True)
class Review:
    base: CommitInfo
    head: CommitInfo
    pools: dict[str, PoolReview]
    problems: tuple[ConfigProblem, ...]
    """What is wrong at the head, every problem once (grouped by file when printed)."""
    errors: tuple[str, ...] = ()
    """Failures outside the repository (a registry that cannot be reached)."""
    warnings: tuple[ConfigProblem, ...] = ()
    """What the head's loader accepts but says (unused keys, install-time-only LUKS)."""
    source: provenance.SourceVerdict | None = None
    """Whether the reconciler would accept the head's commits (None: no policy)."""

    @property
    def blocked(self) -> list[str]:
        """Pools that cannot be planned at the head: they keep their pins."""
        return sorted(p for p, r in self.pools.items() if r.status == "error")

    @property
    def not_planned(self) -> list[str]:
        """Changed pools whose image is not planned (e.g. no registry access)."""
        return sorted(p for p, r in self.pools.items() if r.not_planned)

    @property
    def changed(self) -> list[str]:
        return sorted(
            p for p, r in self.pools.items() if r.status in ("changed", "added", "removed")
        )

    @property
    def failed(self) -> bool:
        if self.source is not None and not self.source.accepted:
            return True
        return bool(self.problems or self.errors) or any(
            r.status == "error" for r in self.pools.values()
        )

    def only(self, pools: Iterable[str]) -> Review:
        """The same review narrowed to some pools (problems stay: they block the merge)."""
        wanted = set(pools)
        return replace(self, pools={p: r for p, r in self.pools.items() if p in wanted})

    def exit_code(self, detailed: bool) -> int:
        """0 no change, 2 changes (with `detailed`), 1 errors (terraform's convention)."""
        if self.failed:
            return 1
        return 2 if detailed and self.changed else 0


def review_source(reader: Mirror, base_sha: str, head_sha: str) -> provenance.SourceVerdict | None:
    """Whether the reconciler would accept `head_sha` on top of `base_sha` (None: no
    sourceVerification policy at either); the reconciler's keys are `pinSigners` at
    the base."""
    facts = gitverify.SourceFacts(reader)
    at_base = facts.policy_at(base_sha)
    if isinstance(at_base, provenance.Policy):
        facts.own_keys = frozenset(s.key for s in at_base.pin_signers)
    return gitverify.verify_change(facts, base_sha, head_sha)


def review_revisions(
    reader: Mirror,
    base_sha: str,
    head_sha: str,
    planner: planning.Planner,
    registry: RegistryClient | None,
) -> Review:
    """What merging `head` onto `base` does to every pool (see the module docstring)."""
    base_repo, head_repo = load_at(reader, base_sha), load_at(reader, head_sha)
    before, after = pool_states(base_repo), pool_states(head_repo)
    problems: list[ConfigProblem] = list(head_repo.problems)
    reviews: dict[str, PoolReview] = {}
    changed: list[str] = []
    for pool in sorted(set(before) | set(after)):
        old, new = before.get(pool), after.get(pool)
        rollout = _rollout(head_repo, pool)
        if new is not None and new.error is not None:
            problems.extend(new.own)
            culprits = tuple(dict.fromkeys(
                b.file for b in head_repo.blockers if verdict.reaches(b.reach, head_repo, pool)
            ))  # fmt: skip
            reviews[pool] = PoolReview(pool, "error", old, new, blocked_by=culprits,
                                       rollout=rollout)  # fmt: skip
            continue
        if old is not None and new is not None and old.error is None and old.key == new.key:
            reviews[pool] = PoolReview(pool, "unchanged", old, new, rollout=rollout)
            continue
        diffs = diff.diff_items(old.items() if old else {}, new.items() if new else {})
        status: ReviewStatus = "added" if old is None else "removed" if new is None else "changed"
        reviews[pool] = PoolReview(
            pool, status, old, new, tuple(diffs), diff.classify(diffs),
            sources=changed_sources(base_repo, head_repo, pool, old, new), rollout=rollout,
        )  # fmt: skip
        if new is not None:
            changed.append(pool)
    errors: list[str] = []
    # the head's verdicts are those just compared: planned as they are, not judged again
    outcomes = {pool: planner.plan_verdict(head_repo, after[pool].judged) for pool in changed}
    for pool, outcome in outcomes.items():
        review = reviews[pool]
        existing, lookup_error, not_planned = None, None, None
        status = review.status
        if isinstance(outcome, planning.PoolFailure):
            if outcome.transient:
                # Outside the repository (the registry): the diff and the disruption
                # stand; only the image is not planned.
                errors.append(f"{pool}: {outcome.error}")
                not_planned = str(outcome.error).splitlines()[0]
            elif isinstance(outcome.error, ConfigError):
                problems.extend(outcome.error.problems)
                status = "error"
            else:
                errors.append(f"{pool}: {outcome.error}")
                status = "error"
        elif isinstance(outcome, poolplan.PoolPlan) and registry is not None:
            try:
                existing = building.find_existing(registry, outcome)
            except ReconcilerError as exc:
                lookup_error = str(exc)
        reviews[pool] = replace(
            review, status=status, outcome=outcome, existing_digest=existing,
            lookup_error=lookup_error, not_planned=not_planned,
        )  # fmt: skip
    return Review(
        commit_info(reader, base_sha),
        commit_info(reader, head_sha),
        reviews,
        _unique(problems),
        tuple(errors),
        _unique(head_repo.warnings),
    )


def _unique(problems: Iterable[ConfigProblem]) -> tuple[ConfigProblem, ...]:
    return tuple(sorted(dict.fromkeys(problems), key=lambda p: (p.file or "", p.line or 0)))


def _rollout(repo: load.Repository, pool: str) -> Rollout | None:
    loaded = repo.pools.get(pool)
    if loaded is None:
        return None
    spec = loaded.obj.spec
    batch = spec.max_unavailable if spec.max_unavailable is not None else 1  # MCO's default
    return Rollout(str(batch), spec.paused)


def changed_sources(
    base: load.Repository,
    head: load.Repository,
    pool: str,
    old: PoolState | None,
    new: PoolState | None,
) -> tuple[Source, ...]:
    """The objects that differ between base and head and that the pool takes at either:
    its MachineConfigs (with the role they come through), its pool and MachineOSConfig."""
    names: list[str] = []
    for state in (new, old):
        if state is not None and state.rendered is not None:
            names += [n for n in state.rendered.sources if n not in names]
    found: list[Source] = []
    for name in names:
        a, b = base.machine_configs.get(name), head.machine_configs.get(name)
        change = _change(a, b, lambda x: (x.obj, x.ignition))
        if change is None:
            continue
        either = b or a
        assert either is not None  # noqa: S101 - _change said one of them exists
        role = either.labels.get(model.ROLE_LABEL)
        via = role if role and role != pool else None
        found.append(Source("MachineConfig", name, either.origin.file, change, via))
    for kind, table_a, table_b in (
        ("MachineConfigPool", base.pools, head.pools),
        ("MachineOSConfig", base.os_configs, head.os_configs),
    ):
        a2, b2 = table_a.get(pool), table_b.get(pool)
        change = _change(a2, b2, lambda x: x.obj)
        either2 = b2 or a2
        if change is not None and either2 is not None:
            found.append(Source(kind, pool, either2.origin.file, change))
    return tuple(found)


def _change(a: Any, b: Any, key: Callable[[Any], Any]) -> SourceChange | None:
    if a is None and b is None:
        return None
    if a is None:
        return "added"
    if b is None:
        return "removed"
    return "modified" if key(a) != key(b) else None


# --- what the next pass does -----------------------------------------------------------------

PredictedAction = Literal["pin", "unchanged", "held", "stalled", "failed", "unmanaged"]


@dataclass(frozen=True)
class Prediction:
    pool: str
    action: PredictedAction
    message: str
    digest: str | None = None
    """The digest the pool will be pinned to (or stays at)."""
    build: Literal["none", "native", "buildah", "job"] | None = None
    """For `pin`: `none` when the image exists already, else the builder that will run."""

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool, "action": self.action, "message": self.message,
                "digest": self.digest, "build": self.build}  # fmt: skip


def predict_pass(
    reader: Mirror, head: str, planner: planning.Planner, registry: RegistryClient
) -> dict[str, Prediction]:
    """What a reconcile pass at `head` would do with each pool, building nothing: the
    loop's own judgement and decision (`planning.decide`), then what building means
    (an image found by identity, a native build's exact digest, a Containerfile build).
    """
    repo = load_at(reader, head)
    all_pins = holds.read_pins(reader, head)
    outcomes = planner.plan_pools(repo, known=all_pins)
    # an invalid pin is replaced by the loop: as if there were none
    current = {p: pin for p, pin in all_pins.items() if isinstance(pin, pins.Pin) and p in outcomes}
    held = holds.HoldFinder(reader).holds(head, repo, current)
    out: dict[str, Prediction] = {}
    for pool in sorted(outcomes):
        outcome, pin = outcomes[pool], current.get(pool)
        choice = planning.decide(outcome, pin, held[pool].reason if pool in held else None)
        digest = pin.spec.digest if pin else None
        if choice.action in ("stalled", "failed"):
            keeps = f"keeps {digest[:19]}" if digest else "stays unpinned"
            first = choice.reason.splitlines()[0] if choice.reason else ""
            out[pool] = Prediction(pool, choice.action, f"{keeps}: {first}", digest)
        elif choice.action == "unmanaged":
            out[pool] = Prediction(pool, "unmanaged", "no MachineOSConfig: no image is built")
        elif choice.action == "held":
            setter = held[pool].commit
            out[pool] = Prediction(
                pool, "held",
                f"held at {digest} (pin set by {setter.author_name} in "
                f"{setter.sha[:10]}) until its inputs change",
                digest,
            )  # fmt: skip
        elif choice.action == "unchanged":
            out[pool] = Prediction(pool, "unchanged", f"stays at {digest}", digest)
        else:
            assert isinstance(outcome, poolplan.PoolPlan)  # noqa: S101 - decide() says so
            out[pool] = _predict_build(outcome, building.find_existing(registry, outcome))
    return out


def _predict_build(plan: poolplan.PoolPlan, existing: str | None) -> Prediction:
    if existing is not None:
        return Prediction(
            plan.pool, "pin", f"pins {existing} (image exists: no build)", existing, "none"
        )
    if plan.builder == "native":
        predicted = plan.predicted_digest
        return Prediction(
            plan.pool, "pin", f"builds natively and pins {predicted}", predicted, "native"
        )
    return Prediction(
        plan.pool, "pin", f"builds with {plan.builder} ({'; '.join(plan.image.reasons)}) "
        "and pins the result", None, plan.builder,
    )  # fmt: skip
