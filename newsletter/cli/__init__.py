"""The `newsletter` command: options in, library calls, results and exit codes out. No logic.

The group and its plumbing live here; each module of this package adds the commands of one
stage of the pipeline (`COMMANDS`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import click

from newsletter import __version__
from newsletter.config import load_config
from newsletter.dates import Period, parse_now
from newsletter.errors import NewsletterError, Problem
from newsletter.project import Project


class Context:
    def __init__(self, project: Project, verbose: bool):
        self.project = project
        self.verbose = verbose

    def now(self, text: str | None) -> datetime:
        tz = load_config(self.project.root).tz
        try:
            return parse_now(text, tz)
        except ValueError as exc:
            raise NewsletterError(Problem(str(exc), field="--now")) from None


def period_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Period | None:
    if value is None:
        return None
    try:
        return Period.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class Group(click.Group):
    """Turns NewsletterError into one line per problem on stderr and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            for problem in exc.problems:
                click.echo(f"error: {problem}", err=True)
            sys.exit(1)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except BrokenPipeError:
            # The reader went away (`newsletter subscribers list | head`): not an error.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            verbose = bool(ctx.obj and ctx.obj.verbose)
            if verbose:
                raise
            click.echo(
                f"error: unexpected {type(exc).__name__}: {exc} (run with -v for details)", err=True
            )
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C",
    "--project",
    "project_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    envvar="NEWSLETTER_PROJECT",
    help="The newsletter project directory.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show detail, and tracebacks of crashes.")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, project_dir: Path, verbose: bool) -> None:
    """Build, preview and send an email newsletter from Markdown content and news feeds."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = Context(Project.at(project_dir), verbose)


NOW_HELP = "Fix the clock (ISO date or date-time; project time zone if no offset)."


def issue_options(verb: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """--period, --lang, --now and --offline: which issue, as seen when (build and preview)."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(
            [
                click.option(
                    "--period",
                    callback=period_option,
                    metavar="YYYY-MM",
                    help=f"The month to {verb}; default: the month of --now.",
                ),
                click.option(
                    "--lang",
                    "languages",
                    multiple=True,
                    metavar="CODE",
                    help="Build only this language (repeatable); default: all configured.",
                ),
                click.option("--now", metavar="ISO-DATETIME", help=NOW_HELP),
                click.option(
                    "--offline", is_flag=True, help="Use cached feed entries; no network."
                ),
            ]
        ):
            command = option(command)
        return command

    return decorate


def main() -> None:
    cli(prog_name="newsletter")


def _project_here(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    """`newsletter build -C DIR` means what `newsletter -C DIR build` means."""
    if value is not None:
        context = ctx.find_object(Context)
        if context is not None:
            context.project = Project.at(value)


def _accept_project_option(command: click.Command) -> None:
    """Let every command take -C/--project after its name too, where users often put it."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_project_option(sub)
        return
    command.params.append(
        click.Option(
            ["-C", "--project"],
            type=click.Path(file_okay=False, path_type=Path),
            expose_value=False,
            is_eager=True,
            callback=_project_here,
            help="The newsletter project directory (also accepted before the command).",
        )
    )


def _register() -> None:
    from newsletter.cli import build, mailing, preview, watch

    for module in (build, preview, mailing, watch):
        for command in module.COMMANDS:
            if command.name != "init":  # its argument is the new project's directory
                _accept_project_option(command)
            cli.add_command(command)


_register()

__all__ = ["NOW_HELP", "Context", "cli", "issue_options", "main", "period_option"]
