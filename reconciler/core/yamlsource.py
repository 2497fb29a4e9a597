"""YAML parsing with duplicate-key detection and lazy line lookup for error messages.

Stage: the first step of loading. Input: one file's text. Output: its documents as
plain Python values, and on demand the line of any field path (composed only when an
error needs it, so the hot path pays for nothing but PyYAML's C parser).

Bounded: aliases may add at most `MAX_ALIAS_VALUES` values to what a file spells out
("billion laughs"), recursive aliases and nesting deeper than Python's stack are refused,
each as a `YAMLSyntaxError` (a problem of that file); so are an unknown tag and a scalar
its explicit tag cannot read (`!!int abc`), where PyYAML raises KeyError or ValueError.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from reconciler.errors import ReconcilerError

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# Scalars whose values are immutable and depend on the text alone, so one object may
# stand for all equal ones (PyYAML itself gives one object for every `.nan`).
_IMMUTABLE_TAGS = tuple(f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float"))
_MISSING = object()
# The first characters of PyYAML's implicit types (the resolver table both loaders share).
_FIRST_CHARACTERS = frozenset(k for k in yaml.SafeLoader.yaml_implicit_resolvers if k)

MAX_ALIAS_VALUES = 1_000_000
"""How many values the aliases of one file may stand for, counted as copies.

Aliases share one object, so building them is cheap, but every consumer (validation,
merge, rendering) walks them as copies: ten lines of nested aliases spell 10^9 kernel
arguments. Anchors used the way people use them (a shared block of labels or files)
stay far below 10^6 (a file of `MAX_FILE_BYTES` spells at most about 2·10^6 values
itself), and 10^6 values still validate and render in seconds. Without aliases only an
explicitly tagged node of 10^6 values (a `!!set`) could reach it."""


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: object, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r} (first at line {first_line})")
        self.key = key
        self.line = line


class _Loader(_BaseLoader):  # type: ignore[misc]
    """PyYAML's safe loader (libyaml's C parser and composer) with two changes.

    - Plain scalars resolve their implicit tag without PyYAML's chain of regexes when
      their first character starts no implicit type (most keys, paths and names), and
      through a per-load cache otherwise (configs repeat `420`, `true` thousands of
      times). The resolver table is PyYAML's own, so the tags are the same; quoted
      scalars, mappings and sequences get PyYAML's default tags directly (what its
      resolver answers when, as in the safe loader, there are no path resolvers).
    - Nodes become Python values in one direct recursive walk instead of PyYAML's
      generator-driven constructor, which is most of PyYAML's load time. Values are
      identical: non-string scalars still go through SafeConstructor's own functions,
      once per distinct text for the immutable ones (null, bool, int, float).
      Duplicate mapping keys are refused, as the Kubernetes API's strict decoding does,
      instead of silently keeping the last one. Merge keys (`<<`) fall back to PyYAML
      (mappings are searched for one only in a file that has `<<` or a tag), and so
      do unknown tags, for PyYAML's error.
    - Each alias counts the values a copy of its node would hold (`_count`, per file),
      and the file is refused once they pass `MAX_ALIAS_VALUES`.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._tags: dict[str, str] = {}
        self._scalars: dict[str, dict[str, Any]] = {tag: {} for tag in _IMMUTABLE_TAGS}
        self._sizes: dict[int, int] = {}
        self._count = 0
        # A merge key is a plain `<<` or explicitly tagged (every tag starts with `!`):
        # a file with neither has none, and its mappings need not be searched for one.
        self._merges = "<<" in stream or "!" in stream

    def resolve(self, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if not implicit[0]:
                return _STR_TAG  # what BaseResolver gives without path resolvers
            if value and value[0] not in _FIRST_CHARACTERS:
                return _STR_TAG  # no implicit type starts with this character
            tag = self._tags.get(value)
            if tag is None:
                tag = self._tags[value] = super().resolve(kind, value, implicit)
            return tag
        if kind is yaml.MappingNode:
            return _MAP_TAG
        if kind is yaml.SequenceNode:
            return _SEQ_TAG
        return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]

    def build_document(self, node: yaml.Node) -> Any:
        # Sizes are keyed by node id, and a finished document's nodes may be freed and
        # their ids reused: start each document afresh (the count goes on per file).
        self._sizes = {}
        return self.build(node, {})

    def build(self, node: yaml.Node, memo: dict[int, Any]) -> Any:
        if isinstance(node, yaml.ScalarNode):
            tag = node.tag
            if tag == _STR_TAG:
                return node.value
            values = self._scalars.get(tag)
            if values is None:
                construct = self.yaml_constructors.get(tag)
                if construct is None:  # an unknown tag: PyYAML's own error, with the line
                    return self._fallback(node, memo)
                return _constructed(construct, self, node)
            # Immutable values, so equal scalars may share one (`420`, `true` repeat).
            value = values.get(node.value, _MISSING)
            if value is _MISSING:
                construct = self.yaml_constructors[tag]
                value = values[node.value] = _constructed(construct, self, node)
            return value
        key = id(node)
        if key in memo:  # an alias: the same object, as PyYAML gives
            self._count_alias(node)
            return memo[key]
        build = self.build
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            pairs = node.value
            if self._merges:
                for key_node, _ in pairs:
                    if key_node.tag == _MERGE_TAG:
                        return self._fallback(node, memo)
            mapping: dict[Any, Any] = {}
            memo[key] = mapping
            for key_node, value_node in pairs:
                k = build(key_node, memo)
                if k.__class__ is not str and not isinstance(k, Hashable):
                    # `? [a, b]: c` is YAML, but no Kubernetes object has such a key
                    # (PyYAML refuses it too: "found unhashable key").
                    raise _KeyTypeError(type(k).__name__, key_node.start_mark.line + 1)
                if k in mapping:
                    # Keys went in in the order of `pairs`, none twice until now.
                    first = pairs[list(mapping).index(k)][0]
                    raise DuplicateKeyError(
                        k, key_node.start_mark.line + 1, first.start_mark.line + 1
                    )
                mapping[k] = build(value_node, memo)
            return mapping
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            items: list[Any] = []
            memo[key] = items
            items.extend([build(child, memo) for child in node.value])
            return items
        return self._fallback(node, memo)  # explicit tags (!!set, !!binary, ...)

    def _fallback(self, node: yaml.Node, memo: dict[int, Any]) -> Any:
        """PyYAML's own constructor for `node`, once what it expands to is counted.

        PyYAML shares aliased objects too, and since 6.0.2 merges each aliased mapping
        once, but the aliases beneath `node` are not seen by `build`: count them all.
        """
        self._count_values(self._expanded_size(node, set()), node)
        value = memo[id(node)] = _constructed(_construct_document, self, node)
        return value

    def _count_alias(self, node: yaml.Node) -> None:
        """Count a second use of `node` as the values a copy of it would hold."""
        self._count_values(self._expanded_size(node, set()), node)

    def _count_values(self, size: int, node: yaml.Node) -> None:
        self._count += size
        if self._count > MAX_ALIAS_VALUES:
            raise _BoundError(
                f"YAML aliases expand to more than {MAX_ALIAS_VALUES:,} values",
                node.start_mark.line + 1,
            )

    def _expanded_size(self, node: yaml.Node, building: set[int]) -> int:
        """Values beneath `node`, aliases counted as copies; memoised, so linear in nodes.

        Only asked for at an alias (and a fallback), so the hot path pays nothing.
        """
        if isinstance(node, yaml.ScalarNode):
            return 0
        key = id(node)
        size = self._sizes.get(key)
        if size is not None:
            return size
        if key in building:
            raise _BoundError(
                "a YAML alias refers to a node that contains it (a recursive structure, "
                "which JSON and the Kubernetes API cannot represent)",
                node.start_mark.line + 1,
            )
        building.add(key)
        children = (
            [n for pair in node.value for n in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        size = len(children)
        for child in children:
            size += self._expanded_size(child, building)
            if size > MAX_ALIAS_VALUES:
                break  # enough to refuse; the rest need not be walked
        building.discard(key)
        self._sizes[key] = size
        return size


class _BoundError(yaml.YAMLError):
    def __init__(self, problem: str, line: int) -> None:
        super().__init__(problem)
        self.line = line


class YAMLSyntaxError(ReconcilerError):
    def __init__(self, problem: str, line: int | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


def _construct_document(loader: Any, node: yaml.Node) -> Any:
    return loader.construct_document(node)


def _constructed(construct: Any, loader: _Loader, node: yaml.Node) -> Any:
    """`construct(loader, node)`, where a scalar that its explicit tag cannot read
    (`!!int abc`, `!!bool maybe`, `!!timestamp x`) is a YAML error with the line:
    PyYAML's constructors raise plain ValueError, KeyError or AttributeError there."""
    try:
        return construct(loader, node)
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise _ScalarError(node) from exc


class _ScalarError(yaml.YAMLError):
    def __init__(self, node: yaml.Node) -> None:
        tag = "!!" + node.tag.removeprefix("tag:yaml.org,2002:")
        if isinstance(node, yaml.ScalarNode):
            super().__init__(f"{node.value!r} is not a valid {tag}")
        else:
            super().__init__(f"a value in this {tag} is not valid")
        self.line = node.start_mark.line + 1


class _KeyTypeError(yaml.YAMLError):
    def __init__(self, kind: str, line: int) -> None:
        super().__init__(f"a mapping key is a {kind}, which no object can have")
        self.line = line


def parse_documents(text: str) -> list[Any]:
    """All documents of a YAML stream, or `YAMLSyntaxError` with the line."""
    loader = _Loader(text)
    try:
        docs = []
        while loader.check_node():
            docs.append(loader.build_document(loader.get_node()))
        return docs
    except (DuplicateKeyError, _BoundError, _KeyTypeError, _ScalarError) as exc:
        raise YAMLSyntaxError(str(exc), exc.line) from exc
    except RecursionError as exc:
        # libyaml allows 1,000 levels; the walk above uses Python's stack, which ends
        # sooner. Far beyond any real config either way.
        raise YAMLSyntaxError("YAML is nested too deeply (hundreds of levels)", None) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise YAMLSyntaxError(problem, line) from exc
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(str(exc), None) from exc
    finally:
        loader.dispose()


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
