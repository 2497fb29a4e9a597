"""The `reconciler` command: click commands over the core and adapters.

Errors become exit codes and one-line messages on stderr; a traceback only with
`--debug`. Exit codes (`cli_output`, docs/cli.md): 0 success, 1 an error (bad config,
failed build, ...), 2 only "some pool changes" under `plan --detailed-exitcode`, 3 an
unexpected failure (a bug), 64 a usage error. `-o json` prints one enveloped document.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import click

from reconciler import extras
from reconciler.cli import output as cli_output
from reconciler.errors import InternalError, ReconcilerError

# name → (module, attribute, summary). A command's module is imported only when that
# command runs (or its own --help is asked for): `reconciler --help` and a PR check's
# `validate` do not pay for the registry client, the agent or the loop. The summary is
# the first paragraph of the command's help, what the group's --help lists;
# tests/unit/test_cli_startup.py checks it against the command itself.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "agent": (
        "reconciler.cli.agent", "agent_command",
        "Apply this machine's pool pin with `bootc switch`, a few machines at a time.",
    ),
    "build": (
        "reconciler.cli.images", "build",
        "Build and push pools' images (unless they exist); print `repo@sha256:...` for "
        "each.",
    ),
    "containerfile": (
        "reconciler.cli.repository", "containerfile_command",
        "Print the Containerfile that builds a pool's image with podman, buildah or "
        "docker.",
    ),
    "history": (
        "reconciler.cli.review", "history_command",
        "Every pin of each pool, oldest first: time, image digest, inputs digest, the "
        "config commit it came from (author, subject), and whether it was a build, a "
        "reuse of an existing image, a revert to an earlier image, or a hold (a pin set "
        "by hand).",
    ),
    "plan": (
        "reconciler.cli.images", "plan",
        "What each pool's image would be: inputs digest, tag, builder, predicted "
        "digest.",
    ),
    "render": (
        "reconciler.cli.repository", "render",
        "Print a pool's rendered MachineConfig (the merge of its selected configs).",
    ),
    "rollback": (
        "reconciler.cli.review", "rollback_command",
        "Return a pool to an earlier image: `git revert` the config commits since then "
        "(or, with --hold, commit the earlier pin), then say what the next pass will "
        "do.",
    ),
    "run": (
        "reconciler.cli.loop", "run",
        "Reconcile the repository: build what changed and commit pins back "
        "(long-running).",
    ),
    "schema": (
        "reconciler.cli.repository", "schema",
        "JSON schemas of every kind the repository holds (generated from the models).",
    ),
    "status": (
        "reconciler.cli.loop", "status",
        "Each pool's pin in Git, with the conditions the last pass recorded (Ready, "
        "Building, Stalled, Held) and its last error.",
    ),
    "validate": (
        "reconciler.cli.repository", "validate",
        "Check every file, render every pool and plan its image; list all problems and "
        "which pools they block (exit 1 if any, or if the directory holds no "
        "configuration). The loop's own judgement: `run` pins the pools this reports as "
        "fine, and no other.",
    ),
}  # fmt: skip


class _LazyCommands(MutableMapping[str, click.Command]):
    """`Group.commands` whose values are imported from `COMMANDS` when first read."""

    def __init__(self) -> None:
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            module, attribute, _ = COMMANDS[name]
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError("commands cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(COMMANDS) | set(self._loaded)))

    def __len__(self) -> int:
        return len(set(COMMANDS) | set(self._loaded))


class _Commands(click.Group):
    """The CLI's error boundary: our errors become `error: ...` lines on stderr and exit
    1; anything else is a bug, said in one line with exit 3. Tracebacks only with
    `--debug`, the same under `main()` and click's test runner.

    Commands load lazily from `COMMANDS` (see there)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: MutableMapping[str, click.Command] = _LazyCommands()

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, from the summaries: no command module is imported."""
        names = list(self.commands)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            # a command added with add_command (not in COMMANDS) is already loaded
            cmd = click.Command(name, help=COMMANDS[name][2]) if name in COMMANDS else None
            cmd = cmd or self.commands[name]
            if not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:  # the group's own options
            exc.exit_code = cli_output.EXIT_USAGE  # type: ignore[misc]  # click: a ClassVar
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # click's 2 is what `plan --detailed-exitcode` says for "changes": a typo in
            # a CI step must not read as success with changes.
            exc.exit_code = cli_output.EXIT_USAGE  # type: ignore[misc]  # click: a ClassVar
            raise
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            code = cli_output.EXIT_ERROR
            if not isinstance(exc, ReconcilerError):
                exc = InternalError(f"running {ctx.invoked_subcommand}", exc)
                code = cli_output.EXIT_INTERNAL
            for line in str(exc).splitlines():
                click.echo(f"error: {line}", err=True)
            ctx.exit(code)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_name=extras.DISTRIBUTION, prog_name="reconciler", message="%(prog)s %(version)s"
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """GitOps for image-mode (bootc) machine pools.

    MachineConfigs, MachineConfigPools and MachineOSConfigs in Git become one pinned,
    layered bootc image per pool.

    Exit codes: 0 fine, 1 an error, 2 "changes" (only `plan --detailed-exitcode`), 3 a
    bug, 64 a usage error. Shell completion (bash; zsh and fish alike):
    eval "$(_RECONCILER_COMPLETE=bash_source reconciler)"
    """
    ctx.obj = {"debug": debug}
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:  # one line per HTTP request is debugging detail, not a transition
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)


def main() -> None:
    cli(prog_name="reconciler")
