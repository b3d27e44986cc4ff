"""Helpers for the preview tests: a project copy, a running preview, and a real headless Chromium.

The browser is Debian's `chromium` (scripts/test installs it when missing), driven by the
`playwright` package without any browser download of its own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import NOW

from newsletter.preview import LivePreview, PreviewServer
from newsletter.project import Project

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 15_000
"""Generous: these waits poll, so a fast machine never waits this long."""


@contextmanager
def running_preview(project: Project, **options: Any) -> Iterator[tuple[LivePreview, str]]:
    """A built, watching preview on a free loopback port; yields it and its base URL."""
    options.setdefault("now", NOW)
    options.setdefault("offline", True)
    live = LivePreview(project, **options)
    server = PreviewServer(live, "127.0.0.1", 0)
    try:
        live.build_now()
        live.start()
        server.start()
        yield live, server.url
    finally:
        live.close()
        server.close()


def chromium_path() -> str:
    found = os.environ.get("NEWSLETTER_CHROMIUM") or shutil.which("chromium")
    if found:
        return found
    message = (
        "Debian's chromium is not installed: run scripts/test (it installs it) or "
        "`apt-get install chromium`"
    )
    if os.environ.get("NEWSLETTER_SKIP_BROWSER"):
        pytest.skip(message)
    pytest.fail(message)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (playwright's Browser)."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def frame_text(frame_id: str) -> str:
    """JavaScript: the text of the email in the page's frame `frame_id` ('' until loaded)."""
    return (
        f"(() => {{ const f = document.getElementById({frame_id!r});"
        " const d = f && f.contentDocument;"
        " return d && d.body ? d.body.innerText : ''; })()"
    )
