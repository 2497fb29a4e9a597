"""YAML parsing with duplicate-key detection and lazy line lookup for error messages.

Stage: the first step of loading. Input: one file's text. Output: its documents as
plain Python values, and on demand the line of any field path (composed only when an
error needs it, so the hot path pays for nothing but PyYAML's C parser).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: object, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r} (first at line {first_line})")
        self.key = key
        self.line = line


class _StrictLoader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader (C parser where available) that refuses duplicate mapping keys, as the
    Kubernetes API's strict decoding does, instead of keeping the last one silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
                if key in seen and key != "<<":
                    raise DuplicateKeyError(key, key_node.start_mark.line + 1, seen[key])
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


class YAMLSyntaxError(Exception):
    def __init__(self, problem: str, line: int | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


def parse_documents(text: str) -> list[Any]:
    """All documents of a YAML stream, or `YAMLSyntaxError` with the line."""
    try:
        return list(yaml.load_all(text, Loader=_StrictLoader))
    except DuplicateKeyError as exc:
        raise YAMLSyntaxError(str(exc), exc.line) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise YAMLSyntaxError(problem, line) from exc
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(str(exc), None) from exc


@dataclass(eq=False)
class SourceText:
    """One file of the repository; composes its node tree only when a line is asked for."""

    path: str
    text: str
    _nodes: list[yaml.Node] | None = field(default=None, repr=False)

    def _documents(self) -> list[yaml.Node]:
        if self._nodes is None:
            try:
                self._nodes = list(yaml.compose_all(self.text, Loader=_BaseLoader))
            except yaml.YAMLError:
                self._nodes = []
        return self._nodes

    def line_of(self, doc: int, path: Sequence[str | int] = ()) -> int | None:
        """1-based line of the deepest node along `path` in document `doc`."""
        docs = self._documents()
        if doc >= len(docs):
            return None
        node: yaml.Node | None = docs[doc]
        line = node.start_mark.line + 1 if node else None
        for part in path:
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if key_node.value == part:
                        line = key_node.start_mark.line + 1
                        node = value_node
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    return line
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line
