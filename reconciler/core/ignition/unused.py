"""Unused keys: the keys of a raw object that its model has no field for.

Stage: part of loading, before validation. Input: a JSON-like dict and the pydantic
model it is read as. Output: the dict without the unused keys (what the object means)
and one `UnusedKey` per key removed.

Ignition reports unused keys as warnings (`validate.ValidateUnusedKeys`, `AddOnWarn`)
and MCO fails only on fatal reports (`IgnParseWrapper`), so a leftover such as
`filesystem: root` on a 3.x file or `networkd: {}` renders. The API server prunes
unknown fields of a MachineConfig's `spec` the same way. One exception, ours: a key a
small edit away from a field of the same object that is *not* set, holding a value,
is almost certainly a typo (`contens`, `kernelArgument`), and dropping it would lose
content without a word, so it is reported as `typo_of` that field (an error for load).
In Ignition a key that differs from a field only in case is read as that field, as
Go's `encoding/json` matches field names case-insensitively.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

import pydantic


@dataclass(frozen=True)
class UnusedKey:
    path: tuple[str | int, ...]
    """Where the key is, the key itself last."""
    typo_of: str | None = None
    """The unset sibling field it is almost certainly a misspelling of."""
    read_as: str | None = None
    """The field it was read as (a case-only difference)."""


def strip(
    data: Any, cls: type[pydantic.BaseModel], *, fold_case: bool = False
) -> tuple[Any, list[UnusedKey]]:
    """`data` without the keys `cls` has no field for (a copy), and those keys.
    `fold_case`: a key differing from a field only in case is read as that field
    (Ignition, parsed by Go's `encoding/json`); otherwise it is unused (the API server
    prunes it) and reported as a typo of the field."""
    found: list[UnusedKey] = []
    return _strip(data, cls, (), found, fold_case), found


@functools.cache
def _fields(cls: type[pydantic.BaseModel]) -> Mapping[str, Any]:
    """Field alias → the model inside its annotation (or None for plain values); made
    once per model (every object of a kind asks for the same table)."""
    return {(f.alias or n): _inner_model(f.annotation) for n, f in cls.model_fields.items()}


@functools.cache
def _lower_names(cls: type[pydantic.BaseModel]) -> Mapping[str, str]:
    return {name.lower(): name for name in _fields(cls)}


def _inner_model(annotation: Any) -> type[pydantic.BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _strip(
    data: Any,
    cls: type[pydantic.BaseModel],
    path: tuple[str | int, ...],
    found: list[UnusedKey],
    fold_case: bool,
) -> Any:
    if isinstance(data, list):
        return [_strip(item, cls, (*path, i), found, fold_case) for i, item in enumerate(data)]
    if not isinstance(data, Mapping):
        return data  # a wrong type: validation reports it
    fields = _fields(cls)
    by_lower = _lower_names(cls)
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key if key in fields else None
        if name is None and fold_case and isinstance(key, str):
            same = by_lower.get(key.lower())
            if same is not None and same not in data:
                found.append(UnusedKey((*path, key), read_as=same))
                name = same
        if name is None:
            found.append(UnusedKey((*path, key), typo_of=_typo_of(key, value, fields, data)))
            continue
        inner = fields[name]
        out[name] = (
            value if inner is None else _strip(value, inner, (*path, name), found, fold_case)
        )
    return out


def _typo_of(
    key: Any, value: Any, fields: Mapping[str, Any], data: Mapping[str, Any]
) -> str | None:
    if not isinstance(key, str) or value in (None, "", [], {}):
        return None
    best: tuple[int, str] | None = None
    for name in fields:
        if name in data:
            continue  # the real field is set: the key is a leftover, not a lost value
        distance = edit_distance(key.lower(), name.lower())
        if distance <= _allowed(name) and (best is None or distance < best[0]):
            best = (distance, name)
    return best[1] if best else None


def _allowed(name: str) -> int:
    """Edits a typo may be away from `name`: 1 for short names, 2 from 8 characters."""
    return 1 if len(name) < 8 else 2


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (insert, delete, substitute, swap neighbours)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]
