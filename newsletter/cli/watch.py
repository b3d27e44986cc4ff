"""Commands of the event engine: `watch` and `events`."""

from __future__ import annotations

import json
import signal
import threading
from datetime import UTC, timedelta

import click

from newsletter.cli import NOW_HELP, Context
from newsletter.config import load_config
from newsletter.dates import parse_moment, parse_now
from newsletter.errors import NewsletterError, Problem
from newsletter.events import KINDS
from newsletter.timeline import project_timeline
from newsletter.watch import ManualClock, ShiftedClock, SystemClock, TickReport, Watcher


@click.command("watch")
@click.option("--once", is_flag=True, help="Run one tick and exit (for cron or systemd timers).")
@click.option(
    "--now",
    metavar="ISO-DATETIME",
    help=NOW_HELP + " With --once the clock stands still; otherwise it runs from there.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    metavar="SECONDS",
    help="Seconds between ticks; default watch.tick_seconds.",
)
@click.pass_obj
def watch_command(obj: Context, once: bool, now: str | None, interval: float | None) -> None:
    """Notice events (content edits, new feed entries, deadlines, month ends) and carry out
    the rules in newsletter.toml, each action once. Stops cleanly on Ctrl-C or SIGTERM."""
    config = load_config(obj.project.root)
    if once:
        clock = ManualClock(obj.now(now))
    elif now:
        clock = ShiftedClock(obj.now(now))
    else:
        clock = SystemClock(config.tz)
    watcher = Watcher(obj.project, clock)
    if once:
        report = watcher.tick()
        _print_tick(report)
        if report.failed:
            raise NewsletterError(
                [Problem(f"{key}: {outcome}") for key, _s, outcome in report.failed]
            )
        return
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()
        name = signal.Signals(signum).name
        if watcher.running is None:
            click.echo(f"stopping ({name})", err=True)
            return
        # A send can take hours: stop it after the messages in flight (the ledger records
        # them); the action stays pending and resumes at the next start.
        click.echo(
            f"stopping ({name}); {watcher.running} is left to resume at the next start", err=True
        )
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    click.echo(f"watching {obj.project.root} (Ctrl-C to stop)", err=True)
    watcher.run(stop, interval=interval, on_tick=_print_tick, on_error=_print_error)
    click.echo("stopped", err=True)


def _print_tick(report: TickReport) -> None:
    for event in report.events:
        click.echo(f"{report.now:%Y-%m-%d %H:%M:%S} event  {event.kind:<26} {event.id}")
    for key, status, outcome in report.ran:
        click.echo(f"{report.now:%Y-%m-%d %H:%M:%S} action {status:<26} {key}: {outcome}")


def _print_error(error: NewsletterError) -> None:
    for problem in error.problems:
        click.echo(f"error: {problem} (still watching; fix it and save)", err=True)


def _day(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_now(value, UTC)  # same syntax and year range as --now
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


@click.command("events")
@click.option(
    "--from",
    "start",
    metavar="DATE",
    callback=_day,
    help="Start of the window (default: 30 days before now).",
)
@click.option(
    "--to",
    "end",
    metavar="DATE",
    callback=_day,
    help="End of the window (default: 60 days after now).",
)
@click.option(
    "--kind", "kinds", multiple=True, type=click.Choice(KINDS), help="Only this kind (repeatable)."
)
@click.option("--now", metavar="ISO-DATETIME", help=NOW_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def events_command(
    obj: Context,
    start: str | None,
    end: str | None,
    kinds: tuple[str, ...],
    now: str | None,
    as_json: bool,
) -> None:
    """The timeline: events seen by the watcher, and those due or upcoming from the content."""
    config = load_config(obj.project.root)
    moment = obj.now(now)
    begin = parse_moment(start, config.tz) if start else moment - timedelta(days=30)
    finish = parse_moment(end, config.tz) if end else moment + timedelta(days=60)
    if finish <= begin:
        raise click.UsageError(
            f"--to ({finish:%Y-%m-%d %H:%M}) must come after --from ({begin:%Y-%m-%d %H:%M})"
        )
    rows = project_timeline(obj.project, begin, finish, moment, kinds)
    if as_json:
        for row in rows:
            click.echo(json.dumps({**row.event.to_json(), "state": row.state}, ensure_ascii=False))
        return
    if not rows:
        click.echo("no events in this window")
        return
    click.echo(f"{'time':<16}  {'state':<8}  {'kind':<25}  what")
    for row in rows:
        event = row.event
        what = (
            event.payload.get("title")
            or event.payload.get("period")
            or event.payload.get("path")
            or event.id
        )
        if event.kind == "call.deadline_approaching":
            what = f"{what} (deadline in {event.payload['lead_days']} days)"
        when = event.time.astimezone(config.tz)
        click.echo(f"{when:%Y-%m-%d %H:%M}  {row.state:<8}  {event.kind:<25}  {what}")


COMMANDS = [watch_command, events_command]
