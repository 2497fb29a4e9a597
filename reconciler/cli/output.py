"""What the commands print for scripts: exit codes and the JSON envelope.

Exit codes (docs/cli.md): 0 fine, 1 an error the user can act on (a bad config, a
failed build, a missing pool), 2 only for "some pool changes" under `plan
--detailed-exitcode`, 3 an unexpected failure (a bug), 64 a usage error (sysexits'
EX_USAGE: an unknown option, a bad value, options that do not go together). Usage errors
are not 2, so a mistyped flag in a CI step never reads as "changes".

Every `-o json` document is one object with `apiVersion` and `kind` first, as kubectl's
are; times are RFC 3339 strings. The shapes are JSON schemas in docs/json/.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import click

if TYPE_CHECKING:
    import yaml

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_CHANGES: Final = 2
EXIT_INTERNAL: Final = 3
EXIT_USAGE: Final = 64

API_VERSION: Final = "cli.gitops.bootc.dev/v1alpha1"
"""The group and version of every envelope; a change to a shape that breaks readers
bumps the version."""


def envelope(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body` under `apiVersion` and `kind` (which `body` must not hold itself)."""
    if "apiVersion" in body or "kind" in body:
        raise ValueError(f"an envelope's body holds apiVersion or kind: {sorted(body)}")
    return {"apiVersion": API_VERSION, "kind": kind, **body}


def dumps(kind: str, body: dict[str, Any]) -> str:
    """The envelope as indented JSON, keys sorted (the same result always prints the same)."""
    return json.dumps(envelope(kind, body), indent=2, sort_keys=True, ensure_ascii=False,
                      default=_default)  # fmt: skip


def rfc3339(value: float | datetime | None) -> str | None:
    """A Unix time or a datetime as RFC 3339 (`2026-12-01T09:30:00Z`); None stays None."""
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    text = when.isoformat(timespec="seconds")
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def _default(obj: object) -> Any:
    if isinstance(obj, datetime):
        return rfc3339(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


@functools.cache
def _block_dumper() -> type[yaml.SafeDumper]:
    """A dumper writing multi-line strings (unit files, dropins) as `|` blocks, readable
    in a terminal. Made on first use: a command printing no YAML (the group's --help, an
    idle `agent --once`) does not import yaml."""
    import yaml  # noqa: PLC0415

    class BlockDumper(yaml.SafeDumper):
        pass

    BlockDumper.add_representer(str, _str_presenter)
    return BlockDumper


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = (
        "|" if "\n" in data and all(line == line.rstrip() for line in data.split("\n")) else None
    )
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def dump(obj: Any, output: str) -> str:
    """Objects as JSON or YAML, keys sorted (the same object always prints the same)."""
    if output == "json":
        return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
    import yaml  # noqa: PLC0415

    text: str = yaml.dump(
        obj, Dumper=_block_dumper(), sort_keys=True, allow_unicode=True, width=1 << 16
    )
    return text.rstrip()


def echo_json(kind: str, body: dict[str, Any]) -> None:
    click.echo(dumps(kind, body))
