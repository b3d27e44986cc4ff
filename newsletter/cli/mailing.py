"""Commands of the mailing stage: `subscribers …`, `send`, `serve`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from newsletter.cli import Context, period_option
from newsletter.dates import Period
from newsletter.send import Progress, SendInterrupted, SendReport, mailing_db, send_issue
from newsletter.subscribers import STATUSES, MailingList
from newsletter.web import serve


@click.group("subscribers")
def subscribers_group() -> None:
    """The mailing list (SQLite in .newsletter/): import, add, remove, list, count, export."""


@subscribers_group.command("import")
@click.argument("csv_file", metavar="FILE.csv", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def subscribers_import(obj: Context, csv_file: Path) -> None:
    """Add and update subscribers from a CSV file with a header row.

    Columns `email` (required), `name`, `language`; any others are kept as attributes.
    Unsubscribed addresses stay unsubscribed. Bad rows are reported and skipped (exit 1).
    """
    with MailingList(mailing_db(obj.project)) as mailing_list:
        report = mailing_list.import_csv(csv_file)
    click.echo(
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"duplicates merged {report.merged}, kept unsubscribed {report.kept_unsubscribed}, "
        f"skipped {len(report.problems)}"
    )
    for problem in report.problems:
        click.echo(f"error: {problem}", err=True)
    if report.problems:
        sys.exit(1)


@subscribers_group.command("add")
@click.argument("email")
@click.option("--name", help="How to greet them.")
@click.option("--lang", "language", metavar="CODE", help="Their language; default: the list's.")
@click.option(
    "--resubscribe", is_flag=True, help="Subscribe again an address that unsubscribed or bounced."
)
@click.pass_obj
def subscribers_add(
    obj: Context, email: str, name: str | None, language: str | None, resubscribe: bool
) -> None:
    """Add one subscriber (or update their name and language)."""
    with MailingList(mailing_db(obj.project)) as mailing_list:
        subscriber, outcome = mailing_list.add(
            email, name=name, language=language, resubscribe=resubscribe
        )
    click.echo(f"{outcome}: {subscriber.email}")


@subscribers_group.command("remove")
@click.argument("email")
@click.pass_obj
def subscribers_remove(obj: Context, email: str) -> None:
    """Unsubscribe an address; it stays listed as unsubscribed so no import brings it back."""
    with MailingList(mailing_db(obj.project)) as mailing_list:
        subscriber = mailing_list.remove(email)
    click.echo(f"unsubscribed: {subscriber.email}")


@subscribers_group.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only subscribers with this status.")
@click.pass_obj
def subscribers_list(obj: Context, status: str | None) -> None:
    """One line per subscriber: address, name, language, status (with date and reason)."""
    with MailingList(mailing_db(obj.project)) as mailing_list:
        for s in mailing_list.subscribers(status):
            state = s.status
            if s.status != "subscribed":
                state += f" {s.status_changed} ({s.status_reason})"
            click.echo(f"{s.email}\t{s.name}\t{s.language or '-'}\t{state}")


@subscribers_group.command("count")
@click.pass_obj
def subscribers_count(obj: Context) -> None:
    """How many subscribers have each status."""
    with MailingList(mailing_db(obj.project)) as mailing_list:
        counts = mailing_list.counts()
    for status, count in counts.items():
        click.echo(f"{status} {count}")
    click.echo(f"total {sum(counts.values())}")


@subscribers_group.command("export")
@click.option("--status", type=click.Choice(STATUSES), help="Only subscribers with this status.")
@click.pass_obj
def subscribers_export(obj: Context, status: str | None) -> None:
    """The list as CSV on standard output (the columns `import` reads, then attributes)."""
    stream = sys.stdout
    with MailingList(mailing_db(obj.project)) as mailing_list:
        mailing_list.export_csv(stream, status)
    stream.flush()  # a reader that went away is noticed here, not at interpreter exit


@click.command("send")
@click.argument("period", metavar="PERIOD", callback=period_option)
@click.option(
    "--lang",
    "languages",
    multiple=True,
    metavar="CODE",
    help="Send only this language (repeatable); default: all configured.",
)
@click.option("--dry-run", is_flag=True, help="Build every message and report; send none.")
@click.option("--test-to", metavar="ADDR", help="Send one copy to ADDR; nothing is recorded.")
@click.option("--limit", type=click.IntRange(min=0), help="Send to at most N recipients.")
@click.option(
    "--connections",
    type=click.IntRange(1, 32),
    help="Parallel SMTP connections (mailing.connections).",
)
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), help="At most R messages per second."
)
@click.pass_obj
def send_command(
    obj: Context,
    period: Period,
    languages: tuple[str, ...],
    dry_run: bool,
    test_to: str | None,
    limit: int | None,
    connections: int | None,
    rate: float | None,
) -> None:
    """Send the built issue of PERIOD (YYYY-MM) to every subscriber not yet reached.

    Every delivery is recorded as it happens: after an interruption or crash, the same command
    resumes. Exit 1 when any recipient failed or is left pending; 130 after Ctrl-C.
    """
    if dry_run and test_to:
        raise click.UsageError("--dry-run and --test-to cannot be used together")
    bar = _ProgressLine() if sys.stderr.isatty() and not dry_run and not test_to else None
    try:
        report = send_issue(
            obj.project,
            period,
            languages=languages,
            dry_run=dry_run,
            test_to=test_to,
            limit=limit,
            connections=connections,
            rate=rate,
            progress=bar.update if bar else None,
        )
    except SendInterrupted as stop:  # Ctrl-C: the summary so far, then exit 130
        report = stop.report
    finally:
        if bar:
            bar.close()
    _print_report(report, obj.verbose)
    if report.interrupted:
        click.echo("interrupted", err=True)
        sys.exit(130)
    if not report.ok:
        sys.exit(1)


def _print_report(report: SendReport, verbose: bool) -> None:
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    languages = ", ".join(report.languages)
    size = f"{report.bytes / 1e6:.1f} MB"
    if report.test_to:
        click.echo(
            f"test: {report.sent} cop{'y' if report.sent == 1 else 'ies'} sent to {report.test_to}"
        )
        return
    if report.dry_run:
        rate = report.sent / report.elapsed if report.elapsed else 0.0
        click.echo(
            f"dry run {report.period} ({languages}): {report.sent} "
            f"message{'' if report.sent == 1 else 's'} built, {size}, "
            f"{rate:,.0f} per second; nothing sent"
        )
        click.echo(
            f"skipped {report.skipped} (done earlier), remaining {report.remaining} (still to send)"
        )
        return
    click.echo(
        f"{report.period} ({languages}): sent {report.sent}, failed {report.failed}, "
        f"pending {report.pending}, skipped {report.skipped}"
        + (f", not reached {report.remaining}" if report.remaining else "")
        + f"  [{report.elapsed:.1f} s, {report.rate:,.0f} msg/s, {size}]"
    )
    if report.in_doubt:
        click.echo(
            f"note: {report.in_doubt} message(s) were still in flight when the run stopped; "
            "the server may have taken them, and the next run sends them again",
            err=True,
        )
    if report.resent:
        click.echo(
            f"note: {report.resent} message(s) in flight when an earlier run stopped were sent "
            "again (see docs/sending.md)",
            err=True,
        )
    shown = report.failures if verbose else report.failures[:20]
    for email, reply in shown:
        click.echo(f"  {email}: {reply}", err=True)
    if len(shown) < len(report.failures):
        click.echo(f"  … and {len(report.failures) - len(shown)} more (-v shows all)", err=True)
    if report.pending:
        click.echo("pending recipients are tried again by the same command", err=True)


def format_progress(progress: Progress) -> str:
    """The progress line: a bar, the count, the rate and the time left."""
    total = max(progress.total, 1)
    share = min(progress.done / total, 1.0)
    filled = int(share * 30)
    rate = progress.done / progress.elapsed if progress.elapsed > 0 else 0.0
    left = max(progress.total - progress.done, 0) / rate if rate > 0 else 0.0
    eta = time.strftime("%H:%M:%S", time.gmtime(left)) if rate > 0 else "--:--:--"
    return (
        f"[{'#' * filled}{'-' * (30 - filled)}] {progress.done}/{progress.total} "
        f"{rate:,.0f} msg/s ETA {eta} (failed {progress.failed}, pending {progress.pending})"
    )


class _ProgressLine:
    """A one-line progress bar on stderr with rate and ETA, redrawn at most 5 times a second."""

    def __init__(self) -> None:
        self._drawn = 0.0
        self._shown = False

    def update(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._drawn < 0.2 and progress.done < progress.total:
            return
        self._drawn = now
        self._shown = True
        click.echo(f"\r{format_progress(progress)}\x1b[K", nl=False, err=True)

    def close(self) -> None:
        if self._shown:
            click.echo("", err=True)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.pass_obj
def serve_command(obj: Context, host: str, port: int) -> None:
    """Serve unsubscribe links (GET confirms, POST unsubscribes) and the archive of sent issues.

    Needs NEWSLETTER_SECRET. Put it behind an HTTPS reverse proxy; see docs/sending.md.
    """
    server = serve(obj.project, host, port)  # a taken port: one error line, exit 1
    click.echo(f"serving on http://{host}:{server.server_port}/ (Ctrl-C stops)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.server_close()


COMMANDS = [subscribers_group, send_command, serve_command]
