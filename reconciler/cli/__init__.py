"""The `reconciler` command: click commands over the core and adapters.

Errors become exit codes and one-line messages on stderr; a traceback only with
`--debug`. Exit codes (`cli_output`, docs/cli.md): 0 success, 1 an error (bad config,
failed build, ...), 2 only "some pool changes" under `plan --detailed-exitcode`, 3 an
unexpected failure (a bug), 64 a usage error. `-o json` prints one enveloped document.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from reconciler import extras
from reconciler.cli import images, loop, repository, review
from reconciler.cli import output as cli_output
from reconciler.cli.agent import agent_command
from reconciler.errors import InternalError, ReconcilerError


class _Commands(click.Group):
    """The CLI's error boundary: our errors become `error: ...` lines on stderr and exit
    1; anything else is a bug, said in one line with exit 3. Tracebacks only with
    `--debug`, the same under `main()` and click's test runner."""

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


for command in (
    repository.validate,
    repository.render,
    repository.schema,
    repository.containerfile_command,
    images.plan,
    images.build,
    review.history_command,
    review.rollback_command,
    loop.run,
    loop.status,
    agent_command,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="reconciler")
