"""Selection: which MachineConfigs a pool takes, and in which order they merge.

Stage: after loading. Input: a pool's label selector and the loaded configs. Output:
the configs in MCO's merge order.

Rules (MCO `controller/render/render_controller.go` `getMachineConfigsForPool`,
`controller/common/helpers.go` `MergeMachineConfigs`): a nil or empty selector matches
nothing; configs labelled `role=worker` come first, then all others, each group
stable-sorted by name byte-wise, so a custom pool's configs override worker configs
whatever their names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from reconciler.core import model

_C = TypeVar("_C")


def matches(selector: model.LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics; an empty selector matches nothing (MCO)."""
    if selector is None or not (selector.match_labels or selector.match_expressions):
        return False
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "In":
            ok = present and labels[req.key] in req.values
        elif req.operator == "NotIn":
            ok = not present or labels[req.key] not in req.values
        elif req.operator == "Exists":
            ok = present
        else:  # DoesNotExist
            ok = not present
        if not ok:
            return False
    return True


def merge_order(names_and_labels: Iterable[tuple[str, Mapping[str, str], _C]]) -> list[_C]:
    """Worker-role configs first, then the rest; each group sorted by name (bytes)."""
    worker: list[tuple[str, _C]] = []
    other: list[tuple[str, _C]] = []
    for name, labels, item in names_and_labels:
        (worker if labels.get(model.ROLE_LABEL) == "worker" else other).append((name, item))
    key = lambda pair: pair[0].encode()  # noqa: E731 - byte-wise, as Go's sort.Strings
    return [item for _, item in sorted(worker, key=key) + sorted(other, key=key)]
