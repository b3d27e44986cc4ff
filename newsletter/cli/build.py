"""Commands of the build stage: `build`, `check`, `feeds fetch`."""

from __future__ import annotations

from pathlib import Path

import click

from newsletter.build import BuildResult, build, check, load_inputs
from newsletter.cli import NOW_HELP, Context, issue_options
from newsletter.dates import Period
from newsletter.errors import NewsletterError, Problem
from newsletter.outbox import CLIP_LIMIT_BYTES
from newsletter.project import Project
from newsletter.scaffold import init_project


@click.command("build")
@issue_options("build")
@click.option("--force", is_flag=True, help="Rebuild an issue even though it has been sent.")
@click.pass_obj
def build_command(
    obj: Context,
    period: Period | None,
    languages: tuple[str, ...],
    now: str | None,
    offline: bool,
    force: bool,
) -> None:
    """Build the issue into outbox/<period>/<lang>/."""
    result = build(
        obj.project,
        period=period,
        languages=languages,
        now=obj.now(now),
        offline=offline,
        force=force,
    )
    _print_summary(obj.project, result, obj.verbose)


def _print_summary(project: Project, result: BuildResult, verbose: bool) -> None:
    for issue in result.issues:
        where = _relative(issue.directory, project.root)
        size = f"{issue.size_bytes / 1024:.1f} KB of {CLIP_LIMIT_BYTES // 1024} KB"
        state = " (unchanged)" if issue.unchanged else ""
        click.echo(f"{issue.language}: {where}/  {size}{state}")
        counts = ", ".join(f"{name} {count}" for name, count in issue.section_counts.items())
        click.echo(f"    {counts}")
    warnings = [*result.warnings, *(w for i in result.issues for w in i.warnings)]
    unique = list(dict.fromkeys(str(w) for w in warnings))
    if unique:
        click.echo(f"{len(unique)} warning{'s' if len(unique) != 1 else ''}:", err=True)
        for warning in unique:
            click.echo(f"  warning: {warning}", err=True)
    if verbose:
        timings = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in result.timings.items())
        click.echo(f"timings: {timings}", err=True)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        try:
            return str(path.relative_to(root))
        except ValueError:
            return str(path)


@click.command("check")
@click.option("--now", metavar="ISO-DATETIME", help=NOW_HELP)
@click.pass_obj
def check_command(obj: Context, now: str | None) -> None:
    """Validate the config, every content file and the templates; exit 1 on any problem."""
    try:
        moment = obj.now(now)
    except NewsletterError:
        moment = None
    problems = check(obj.project, now=moment)
    if problems:
        raise NewsletterError(problems)
    click.echo("ok: config, content and templates are valid")


@click.group("feeds")
def feeds_group() -> None:
    """News feeds: fetch and inspect."""


@feeds_group.command("fetch")
@click.pass_obj
def feeds_fetch(obj: Context) -> None:
    """Download every feed now (conditional GET) and refresh the cache."""
    inputs = load_inputs(obj.project)
    by_source: dict[str, int] = {}
    for entry in inputs.feeds.entries:
        by_source[entry.source] = by_source.get(entry.source, 0) + 1
    for name, status in inputs.feeds.statuses.items():
        click.echo(f"{name}: {status}, {by_source.get(name, 0)} entries")
    for warning in inputs.feeds.warnings:
        click.echo(f"warning: {warning}", err=True)
    failed = [name for name, status in inputs.feeds.statuses.items() if status == "failed"]
    if failed:
        raise NewsletterError(
            [Problem("no entries, fresh or cached", field=f"feeds.{name}") for name in failed]
        )


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--title", default="My Newsletter", show_default=True, help="The newsletter's name.")
def init_command(directory: Path, title: str) -> None:
    """Create a new project in DIRECTORY: config, theme and one sample item of each kind."""
    project = init_project(directory, title=title)
    click.echo(f"created {project.root}; next: newsletter -C {directory} build")


COMMANDS = [build_command, check_command, feeds_group, init_command]
