"""Field docstrings as JSON-schema descriptions, read only when a schema is generated.

Pydantic's `use_attribute_docstrings` reads and parses every model's source when the
class is created: a third of the start-up of every command, for descriptions only
`reconciler schema` prints. Here the models name `describe_fields` as their
`json_schema_extra` instead, and the source is read when a schema is asked for.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from typing import Any

from pydantic import BaseModel


@functools.cache
def field_docstrings(cls: type) -> dict[str, str]:
    """`{field: docstring}` for the string literals right after annotated fields in
    the class body (the convention `use_attribute_docstrings` reads), cleaned as
    `inspect.cleandoc` does."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)  # noqa: S101 - getsource of a class
    out: dict[str, str] = {}
    for stmt, after in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            out[stmt.target.id] = inspect.cleandoc(after.value.value)
    return out


def describe_fields(schema: dict[str, Any], cls: type[Any]) -> None:
    """`json_schema_extra`: each property's description from its field's docstring
    (the class's own, then its bases'), unless the field sets one itself."""
    if not issubclass(cls, BaseModel):
        return
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        docs.update(field_docstrings(klass) if issubclass(klass, BaseModel) else {})
    properties = schema.get("properties") or {}
    for name, info in cls.model_fields.items():
        key = info.validation_alias if isinstance(info.validation_alias, str) else None
        key = key or info.alias or name
        if name in docs and key in properties and info.description is None:
            properties[key].setdefault("description", docs[name])
