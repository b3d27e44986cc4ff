"""`newsletter preview`: the server, its safety rules, live rebuilds, and the page in a real
headless Chromium (Debian's package, driven by playwright)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from browser import (
    ARTIFACTS,
    WAIT_MS,
    chromium,
    frame_text,
    running_preview,
)
from click.testing import CliRunner
from conftest import NOW, REPO, copy_project

from newsletter.build import build
from newsletter.cli import cli
from newsletter.dates import Period
from newsletter.errors import NewsletterError
from newsletter.preview import LivePreview, PreviewServer, message_headers
from newsletter.project import Project

KIND_FOLDERS = {
    "milestone": "milestones",
    "call": "calls",
    "project": "projects",
    "event": "events",
    "news": "news",
}


# --- helpers ---


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return copy_project(tmp_path / "digest")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # The page's CSP forbids eval, which playwright's string predicates need.
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, bypass_csp=True)
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    try:
        yield opened
    finally:
        context.close()


def first_content_item(project: Project, language: str = "en") -> tuple[dict[str, Any], Path]:
    """The first item of the built issue that comes from a content file, and that file."""
    manifest = json.loads(
        (project.outbox_dir / "2026-11" / language / "manifest.json").read_text("utf-8")
    )
    for item in manifest["items"]:
        folder = KIND_FOLDERS.get(item["kind"])
        if folder:
            path = project.content_dir / folder / f"{item['id']}.md"
            if path.is_file():
                return item, path
    raise AssertionError("no content item in the built issue")


def retitle(path: Path, title: str) -> None:
    text = path.read_text("utf-8")
    path.write_text(re.sub(r"(?m)^title:.*$", f'title: "{title}"', text, count=1), "utf-8")


def wait_for_frame(page: Any, frame_id: str, text: str) -> None:
    page.wait_for_function(
        f"{frame_text(frame_id)}.includes({json.dumps(text)})", timeout=WAIT_MS, polling=100
    )


def request(url: str, raw_path: str, host: str | None = None) -> tuple[int, bytes]:
    """One GET with the path sent byte for byte (no client-side normalising)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.putrequest("GET", raw_path, skip_host=True)
        connection.putheader("Host", host or parts.netloc)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_until(condition: Any, timeout: float = WAIT_MS / 1000) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def save_screenshots(page: Any, url: str) -> None:
    """Test artefacts (tests/artifacts/, not committed): the page, and the email alone at
    desktop and mobile width, whole, as a person reviewing the issue would look at it."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "preview-page.png"))
    email = page.context.new_page()
    try:
        for language in ("en", "ja"):
            for view, width in (("desktop", 720), ("mobile", 375)):
                email.set_viewport_size({"width": width, "height": 900})
                email.goto(f"{url}outbox/2026-11/{language}/index.html")
                name = f"email-{view}.png" if language == "en" else f"email-{view}-{language}.png"
                email.screenshot(path=str(ARTIFACTS / name), full_page=True)
    finally:
        email.close()


# --- the page in Chromium ---


@pytest.mark.browser
def test_page_shows_the_shipped_digest_with_headers_text_and_checks(
    project: Project, page: Any
) -> None:
    with running_preview(project) as (_live, url):
        item, _path = first_content_item(project)
        page.goto(url)
        wait_for_frame(page, "frame-desktop", item["title"])
        wait_for_frame(page, "frame-mobile", item["title"])

        page.wait_for_selector("#headers dd[data-header='Subject']")
        headers = page.eval_on_selector_all("#headers dt", "nodes => nodes.map(n => n.textContent)")
        assert headers[:4] == ["Subject", "From", "Reply-To", "List-Id"]
        assert "Research & Innovation Digest" in page.inner_text("#headers")

        checks = page.eval_on_selector_all(
            "#checks > li", "nodes => nodes.map(n => [n.dataset.check, n.dataset.status])"
        )
        assert [c[0] for c in checks] == [
            "size",
            "alt",
            "links",
            "sections",
            "placeholders",
            "text",
            "build",
        ]
        assert dict(checks)["size"] == "ok"
        assert dict(checks)["links"] == "ok"
        assert dict(checks)["placeholders"] == "ok"

        assert page.locator("#index a[data-issue]").count() == 2
        assert page.is_visible("#frame-desktop") and page.is_visible("#frame-mobile")
        assert page.is_hidden("#problems")
        base = "document.getElementById('frame-desktop').contentDocument.querySelector('base')"
        assert page.evaluate(f"{base}.target") == "_blank"  # links open a tab, not in the frame

        save_screenshots(page, url)

        page.click("button[data-view='text']")
        page.wait_for_selector("#text", state="visible")
        assert item["title"] in " ".join(page.inner_text("#text").split())
        assert page.is_hidden("#frame-desktop")

        japanese, _ = first_content_item(project, "ja")
        page.click("button[data-view='desktop']")
        page.click("#index a[data-issue='2026-11/ja']")
        wait_for_frame(page, "frame-desktop", japanese["title"])
        page.wait_for_function("document.querySelector('#current').textContent.includes('ja')")


@pytest.mark.browser
def test_mobile_view_is_375_px_wide_with_no_horizontal_scroll(project: Project, page: Any) -> None:
    with running_preview(project) as (_live, url):
        item, _path = first_content_item(project)
        page.goto(url)
        page.click("button[data-view='mobile']")
        wait_for_frame(page, "frame-mobile", item["title"])
        assert page.is_hidden("#frame-desktop")
        frame = page.frame_locator("#frame-mobile")
        size = frame.locator("html").evaluate(
            "html => [window.innerWidth, html.clientWidth, html.scrollWidth,"
            " document.body.scrollWidth]"
        )
        inner_width, client_width, scroll_width, body_width = size
        assert inner_width == 375
        assert client_width == 375
        assert scroll_width <= client_width
        assert body_width <= client_width


@pytest.mark.browser
def test_an_edit_shows_up_without_a_manual_reload(project: Project, page: Any) -> None:
    with running_preview(project) as (_live, url):
        item, path = first_content_item(project)
        page.goto(url)
        wait_for_frame(page, "frame-desktop", item["title"])
        page.evaluate("window.__sameDocument = true")

        retitle(path, "Edited live: a brand-new headline")

        wait_for_frame(page, "frame-desktop", "Edited live: a brand-new headline")
        wait_for_frame(page, "frame-mobile", "Edited live: a brand-new headline")
        assert page.evaluate("window.__sameDocument") is True  # no reload of the page itself
        page.wait_for_function(
            "document.querySelector('#text').textContent.includes('Edited live')", timeout=WAIT_MS
        )


@pytest.mark.browser
def test_a_broken_edit_shows_file_and_line_keeps_the_render_and_clears_when_fixed(
    project: Project, page: Any
) -> None:
    with running_preview(project) as (_live, url):
        item, path = first_content_item(project)
        good = path.read_text("utf-8")
        page.goto(url)
        wait_for_frame(page, "frame-desktop", item["title"])

        path.write_text(good.replace("title:", 'title: "never closed\nsummary: [', 1), "utf-8")
        relative = path.relative_to(project.root).as_posix()
        page.wait_for_selector("#problems", state="visible")
        page.wait_for_function(
            f"document.querySelector('#problem-list').textContent.includes({relative!r} + ':')"
        )
        problem = page.inner_text("#problem-list")
        assert re.search(rf"{re.escape(relative)}:\d+", problem), problem
        assert "front matter" in problem
        assert page.get_attribute("#status", "data-state") == "failed"
        assert item["title"] in page.evaluate(frame_text("frame-desktop"))  # last good render

        path.write_text(good, "utf-8")
        page.wait_for_selector("#problems", state="hidden")
        assert page.get_attribute("#status", "data-state") == "ok"

        partial = project.templates_dir / "partials" / f"{item['section']}.html"
        template = partial.read_text("utf-8")
        partial.write_text("{% if %}\n" + template, "utf-8")
        page.wait_for_selector("#problems", state="visible")
        page.wait_for_function(
            "document.querySelector('#problem-list').textContent"
            f".includes('templates/partials/{item['section']}.html:1')"
        )
        assert "template syntax error" in page.inner_text("#problem-list")
        assert item["title"] in page.evaluate(frame_text("frame-desktop"))

        partial.write_text(template, "utf-8")
        retitle(path, "Fixed and rebuilt")
        page.wait_for_selector("#problems", state="hidden")
        wait_for_frame(page, "frame-desktop", "Fixed and rebuilt")


@pytest.mark.browser
def test_the_index_switches_between_periods(project: Project, page: Any) -> None:
    build(project, period=Period(2026, 10), now=NOW, offline=True)
    with running_preview(project) as (_live, url):
        page.goto(url)
        page.wait_for_selector("#index a[data-issue='2026-10/en']")
        assert page.locator("#index a[data-issue]").count() == 4
        assert page.get_attribute("#index a[data-issue='2026-11/en']", "aria-current") == "true"
        page.click("#index a[data-issue='2026-10/en']")
        page.wait_for_function("location.hash === '#2026-10/en'")
        page.wait_for_function(
            "document.getElementById('frame-desktop').dataset.loaded"
            ".startsWith('/outbox/2026-10/en/')"
        )
        assert "October 2026" in page.evaluate(frame_text("frame-desktop"))


# --- the server without a browser ---


def test_traversal_and_everything_outside_the_allow_list_get_404(project: Project) -> None:
    (project.root / "secret.txt").write_text("do not serve", "utf-8")
    with running_preview(project) as (_live, url):
        for allowed in (
            "/",
            "/assets/preview.js",
            "/outbox/2026-11/en/index.html",
            "/outbox/2026-11/ja/digest.txt?v=3",
            "/api/issues/2026-11/en",
        ):
            assert request(url, allowed)[0] == 200, allowed
        for refused in (
            "/outbox/2026-11/en/../../../secret.txt",
            "/outbox/2026-11/en/%2e%2e/%2e%2e/%2e%2e/secret.txt",
            "/outbox/2026-11/en/%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt",
            "/outbox/..%2f..%2fsecret.txt",
            "/assets/../secret.txt",
            "/secret.txt",
            "/newsletter.toml",
            "//etc/passwd",
            "/outbox//etc/passwd",
            "/outbox/2026-11/en/personal.html",
            "/outbox/2026-11/en/..%5c..%5csecret.txt",
            "/outbox/2026-11/en/index.html%00.txt",
            "/etc/passwd",
            "/%ff%fe",
            "http://127.0.0.1/secret.txt",
            "/api/issues/../../secret",
        ):
            status, body = request(url, refused)
            assert status == 404, refused
            assert b"do not serve" not in body


def test_a_foreign_host_header_is_refused_on_loopback(project: Project) -> None:
    with running_preview(project) as (_live, url):
        assert request(url, "/", host="attacker.example:80")[0] == 403
        assert request(url, "/", host=f"localhost:{urlsplit(url).port}")[0] == 200


def test_the_email_gets_a_policy_that_runs_no_script(project: Project) -> None:
    with running_preview(project) as (_live, url):
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        connection.request("GET", "/outbox/2026-11/en/index.html")
        response = connection.getresponse()
        policy = response.getheader("Content-Security-Policy")
        connection.close()
        assert "script-src 'none'" in policy
        assert "sandbox" in policy


def test_events_stream_the_state(project: Project) -> None:
    with running_preview(project) as (_live, url):
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        connection.request("GET", "/events")
        response = connection.getresponse()
        assert response.getheader("Content-Type").startswith("text/event-stream")
        lines = []
        while not any(line.startswith(b"data: ") for line in lines):
            lines.append(response.fp.readline())
        connection.close()
        assert b"event: state\n" in lines
        state = json.loads(lines[-1][len(b"data: ") :])
        assert state["ok"] is True
        assert state["live"]["period"] == "2026-11"
        assert state["live"]["languages"] == ["en", "ja"]


def test_a_bad_edit_keeps_the_last_good_files_and_the_server_up(project: Project) -> None:
    with running_preview(project) as (live, url):
        item, path = first_content_item(project)
        good = path.read_text("utf-8")
        index = project.outbox_dir / "2026-11" / "en" / "index.html"
        before = index.read_bytes()
        path.write_text("---\ntitle: [unclosed\n---\nbody\n", "utf-8")
        wait_until(lambda: bool(live.problems))
        assert str(live.problems[0]).startswith(str(path))
        assert index.read_bytes() == before
        assert request(url, "/")[0] == 200
        assert request(url, "/outbox/2026-11/en/index.html")[1] == before
        path.write_text(good, "utf-8")
        retitle(path, f"{item['title']} (fixed)")
        wait_until(lambda: not live.problems and b"(fixed)" in index.read_bytes())


def test_only_the_language_that_changed_is_written_again(project: Project) -> None:
    with running_preview(project) as (live, _url):
        _item, path = first_content_item(project)
        japanese = project.outbox_dir / "2026-11" / "ja" / "index.html"
        written = japanese.stat().st_mtime_ns
        version = live.snapshot()["version"]
        retitle(path, "Only the English title changes")
        wait_until(lambda: live.snapshot()["version"] > version)
        assert live.snapshot()["live"]["unchanged"] == ["ja"]
        assert japanese.stat().st_mtime_ns == written


def test_config_edits_rebuild_too(project: Project) -> None:
    with running_preview(project) as (live, _url):
        version = live.snapshot()["version"]
        config = project.config_path
        text = config.read_text("utf-8")
        config.write_text(text.replace("Rue de la Loi 200", "Rue de la Loi 201"), "utf-8")
        index = project.outbox_dir / "2026-11" / "en" / "index.html"
        wait_until(lambda: live.snapshot()["version"] > version)
        assert "Rue de la Loi 201" in index.read_text("utf-8")


def test_headers_come_from_message_eml(project: Project) -> None:
    build(project, now=NOW, offline=True)
    headers = dict(message_headers(project.outbox_dir / "2026-11" / "en" / "message.eml"))
    assert headers["From"].endswith("<digest@eu-japan-rni.example.org>")
    assert headers["Subject"].startswith("EU–Japan Research & Innovation Digest")
    assert "List-Unsubscribe" not in headers  # absent from the archive copy: not shown


def test_a_taken_port_is_one_clear_error(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(NewsletterError, match=rf"port {port} on 127.0.0.1 is already in use"):
            PreviewServer(LivePreview(project), "127.0.0.1", port)
        result = CliRunner().invoke(
            cli, ["-C", str(project.root), "preview", "--port", str(port), "--no-open"]
        )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == [
        f"error: port {port} on 127.0.0.1 is already in use; "
        "pick another with --port N, or --port 0 for a free one"
    ]


def test_another_host_prints_a_warning(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli,
            ["-C", str(project.root), "preview", "--host", "0.0.0.0", "--port", str(port)],
        )
    assert result.exit_code == 1
    assert "warning: serving on 0.0.0.0" in result.output
    assert "already in use" in result.output


def test_the_command_serves_until_interrupted(project: Project) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter",
            "-C",
            str(project.root),
            "preview",
            "--port",
            "0",
            "--no-open",
            "--now",
            "2026-11-25",
            "--offline",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        lines = []
        while not any("preview: http://" in line for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        url = re.search(r"http://\S+", lines[-1]).group(0)  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        assert any(line.startswith("built 2026-11 (en") for line in lines)
        assert request(url, "/outbox/2026-11/en/index.html")[0] == 200
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
        assert process.returncode == 0, output
        assert "stopped" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
