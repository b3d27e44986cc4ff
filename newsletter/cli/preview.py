"""The `preview` command: a local server showing the issue live while you edit."""

from __future__ import annotations

import webbrowser
from typing import Any

import click

from newsletter.cli import Context, issue_options
from newsletter.config import load_config
from newsletter.dates import Period
from newsletter.preview import DEFAULT_HOST, DEFAULT_PORT, LivePreview, PreviewServer, is_loopback


@click.command("preview")
@issue_options("preview")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to listen on. Anything but loopback exposes your drafts to the network.",
)
@click.option("--no-open", is_flag=True, help="Do not open a browser.")
@click.pass_obj
def preview_command(
    obj: Context,
    period: Period | None,
    languages: tuple[str, ...],
    now: str | None,
    offline: bool,
    port: int,
    host: str,
    no_open: bool,
) -> None:
    """Serve the issue on 127.0.0.1 and rebuild it live when content, templates or config change.

    The page shows the email at desktop and mobile width, its plain-text version and headers,
    and a checks panel. Stop with Ctrl-C.
    """
    if not obj.project.config_path.is_file():
        load_config(obj.project.root)  # raises the "not a newsletter project" error
    if host != DEFAULT_HOST:
        reach = (
            "another loopback address"
            if is_loopback(host)
            else "anyone who can reach this machine can read your drafts"
        )
        click.echo(f"warning: serving on {host} ({reach}); the default is {DEFAULT_HOST}", err=True)
    live = LivePreview(
        obj.project,
        period=period,
        languages=languages,
        now=now,
        offline=offline,
        on_build=_report,
    )
    server = PreviewServer(live, host, port)  # a taken port: one error line, exit 1
    try:
        click.echo("building…")
        live.build_now()
        live.start()
        click.echo(f"preview: {server.url}  (Ctrl-C to stop)")
        if not no_open:
            webbrowser.open(server.url)
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        live.close()
        server.server_close()


def _report(state: dict[str, Any]) -> None:
    """One line per build on the console, so the terminal tells the same story as the page."""
    changed = f" after {', '.join(state['changed'][:3])}" if state["changed"] else ""
    took = f" in {state['duration_ms'] / 1000:.1f} s" if state["duration_ms"] is not None else ""
    if state["ok"]:
        unchanged = set(state["live"]["unchanged"])
        languages = ", ".join(
            f"{code} unchanged" if code in unchanged else code
            for code in state["live"]["languages"]
        )
        click.echo(f"built {state['live']['period']} ({languages}){took}{changed}")
    else:
        click.echo(f"build failed{changed}; showing the last good render:", err=True)
        for problem in state["problems"]:
            click.echo(f"  error: {problem['text']}", err=True)


COMMANDS = [preview_command]
