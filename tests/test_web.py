"""`newsletter serve`: unsubscribe confirmation (GET), one-click unsubscribe (POST, RFC 8058),
refusal of forged tokens, and the archive of sent issues."""

from __future__ import annotations

import io
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from conftest import run_script
from smtpserver import PERIOD, SECRET, SmtpServer, built_project

from newsletter import tokens
from newsletter.config import load_config
from newsletter.errors import NewsletterError
from newsletter.project import Project
from newsletter.send import list_id, send_issue
from newsletter.subscribers import MailingList
from newsletter.web import WebApp, serve

ONE_CLICK = b"List-Unsubscribe=One-Click"


@pytest.fixture
def site(tmp_path: Path) -> Project:
    project = built_project(tmp_path / "project")
    with MailingList(project.state_dir / "mailing.sqlite3") as mailing_list:
        mailing_list.add("jane@example.org", name="Jane", language="en")
        mailing_list.add("taro@example.jp", name="太郎", language="ja")
    return project


@pytest.fixture
def app(site: Project) -> WebApp:
    return WebApp(site, secret=SECRET.encode())


def _call(
    app: WebApp, method: str, path: str, query: str = "", body: bytes = b"", **headers: str
) -> tuple[str, dict[str, str], str]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        **headers,
    }
    setup_testing_defaults(environ)
    captured: dict[str, Any] = {}

    def start_response(status: str, header_list: list[tuple[str, str]]) -> None:
        captured["status"], captured["headers"] = status, dict(header_list)

    content = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], content.decode()


def _token(site: Project, email: str) -> str:
    return tokens.sign(SECRET.encode(), list_id(load_config(site.root)), email)


def _status(site: Project, email: str) -> str:
    with MailingList(site.state_dir / "mailing.sqlite3") as mailing_list:
        subscriber = mailing_list.get(email)
        assert subscriber is not None
        return subscriber.status


def test_get_only_asks_for_confirmation(site: Project, app: WebApp) -> None:
    token = _token(site, "jane@example.org")
    status, headers, page = _call(app, "GET", "/unsubscribe/", f"token={token}")
    assert status == "200 OK"
    assert "jane@example.org" in page and '<form method="post"' in page
    assert f'action="/unsubscribe/?token={token}"' in page
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert _status(site, "jane@example.org") == "subscribed"


def test_one_click_post_unsubscribes(site: Project, app: WebApp) -> None:
    token = _token(site, "jane@example.org")
    status, _headers, page = _call(
        app,
        "POST",
        "/unsubscribe/",
        f"token={token}",
        ONE_CLICK,
        CONTENT_TYPE="application/x-www-form-urlencoded",
    )
    assert status == "200 OK" and "unsubscribed" in page
    with MailingList(site.state_dir / "mailing.sqlite3") as mailing_list:
        jane = mailing_list.get("jane@example.org")
    assert jane is not None
    assert (jane.status, jane.status_reason) == ("unsubscribed", "one-click unsubscribe")
    again = _call(app, "POST", "/unsubscribe", f"token={token}", ONE_CLICK)
    assert again[0] == "200 OK"


def test_the_confirmation_page_speaks_the_subscribers_language(site: Project, app: WebApp) -> None:
    token = _token(site, "taro@example.jp")
    _status_line, _headers, page = _call(app, "GET", "/unsubscribe/", f"token={token}")
    assert '<html lang="ja">' in page and "配信停止" in page
    _status_line, _headers, done = _call(app, "POST", "/unsubscribe/", f"token={token}")
    assert "配信を停止しました" in done
    assert _status(site, "taro@example.jp") == "unsubscribed"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_forged_or_tampered_tokens_are_refused(site: Project, app: WebApp, method: str) -> None:
    good = _token(site, "jane@example.org")
    payload, mac = good.split(".")
    other = _token(site, "taro@example.jp").split(".")[0]
    wrong_secret = tokens.sign(
        b"not the secret 1234567", "digest.eu-japan-rni.example.org", "jane@example.org"
    )
    # the same bytes spelled with other unused bits in the last character, and junk inside
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same_bits = alphabet[alphabet.index(mac[-1]) ^ 1]
    tampered = [f"{payload}.{mac[:-1]}{same_bits}", f"{payload}.{mac[:5]}!*.{mac[5:]}"]
    for token in [f"{other}.{mac}", f"{payload}.{mac[::-1]}", wrong_secret, payload, "", *tampered]:
        status, _headers, page = _call(app, method, "/unsubscribe/", f"token={token}", ONE_CLICK)
        assert status == "400 Bad Request", token
        assert "not valid" in page
    assert _status(site, "jane@example.org") == "subscribed"
    assert _status(site, "taro@example.jp") == "subscribed"


def test_the_archive_copys_link_without_a_token_explains_how_to_unsubscribe(
    site: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    archived = (site.outbox_dir / PERIOD / "en" / "index.html").read_text()
    link = re.search(r'href="(https://[^"]*/unsubscribe/[^"]*)"', archived)
    assert link is not None and "token" not in link[1]
    reply_to = load_config(site.root).sender.reply_to
    assert reply_to
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    server = serve(site, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        path = urllib.parse.urlsplit(link[1]).path
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}{path}") as response:
            assert response.status == 200
            page = response.read().decode()
            assert response.headers["Cache-Control"] == "no-store"
    finally:
        server.shutdown()
        server.server_close()
    assert "not valid" not in page and "<form" not in page
    assert "link in your own copy of the email" in page
    assert f'<a href="mailto:{reply_to}?subject=unsubscribe">{reply_to}</a>' in page
    assert _status(site, "jane@example.org") == "subscribed"


def test_an_empty_or_forged_token_is_still_refused_and_a_post_needs_one(app: WebApp) -> None:
    assert _call(app, "GET", "/unsubscribe/", "token=")[0] == "400 Bad Request"
    assert _call(app, "GET", "/unsubscribe/", "token=forged.mac")[0] == "400 Bad Request"
    assert _call(app, "POST", "/unsubscribe/", "", ONE_CLICK)[0] == "400 Bad Request"


def test_a_link_of_an_address_already_unsubscribed_says_so(site: Project, app: WebApp) -> None:
    token = _token(site, "jane@example.org")
    with MailingList(site.state_dir / "mailing.sqlite3") as mailing_list:
        mailing_list.remove("jane@example.org")
    status, _headers, page = _call(app, "GET", "/unsubscribe/", f"token={token}")
    assert status == "200 OK"
    assert "already unsubscribed" in page and "jane@example.org" in page
    assert "<form" not in page and "Stop sending" not in page
    again = _call(app, "POST", "/unsubscribe/", f"token={token}", ONE_CLICK)
    assert again[0] == "200 OK"
    assert _status(site, "jane@example.org") == "unsubscribed"


def test_other_methods_and_paths(app: WebApp) -> None:
    assert _call(app, "DELETE", "/unsubscribe/")[0].startswith("405")
    assert _call(app, "GET", "/nowhere")[0].startswith("404")
    status, headers, _page = _call(app, "GET", "/")
    assert status == "302 Found" and headers["Location"] == "/archive/"


def test_archive_shows_only_sent_issues(site: Project, app: WebApp) -> None:
    status, _headers, page = _call(app, "GET", "/archive/")
    assert status == "200 OK" and "2026-11/en/" not in page
    assert _call(app, "GET", f"/archive/{PERIOD}/en/")[0].startswith("404")
    with SmtpServer() as server:
        send_issue(site, PERIOD, languages=["en"], env=server.env())
    status, _headers, page = _call(app, "GET", "/archive/")
    assert f'href="{PERIOD}/en/"' in page and f"{PERIOD}/ja/" not in page
    assert "EU–Japan Research &amp; Innovation Digest — November 2026" in page
    status, headers, issue = _call(app, "GET", f"/archive/{PERIOD}/en/")
    assert status == "200 OK" and headers["Content-Type"].startswith("text/html")
    assert issue == (site.outbox_dir / PERIOD / "en" / "index.html").read_text()
    assert "nl-personal:" not in issue
    assert _call(app, "GET", f"/archive/{PERIOD}/en")[0].startswith("301")
    assert _call(app, "GET", f"/archive/{PERIOD}/ja/")[0].startswith("404")
    assert _call(app, "GET", "/archive/../newsletter.toml")[0].startswith("404")
    assert _call(app, "GET", f"/archive/{PERIOD}/en/../../../newsletter.toml")[0].startswith("404")
    assert _call(app, "POST", "/archive/")[0].startswith("405")


def test_serve_needs_the_secret(site: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    with pytest.raises(NewsletterError, match="NEWSLETTER_SECRET"):
        WebApp(site)


def test_one_click_over_real_http(site: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    server = serve(site, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        token = _token(site, "jane@example.org")
        request = urllib.request.Request(
            f"{base}/unsubscribe/?token={token}",
            data=ONE_CLICK,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{base}/unsubscribe/?token={tampered}", data=ONE_CLICK, method="POST"
                ),
                timeout=10,
            )
        assert refused.value.code == 400
    finally:
        server.shutdown()
        server.server_close()
    assert _status(site, "jane@example.org") == "unsubscribed"


def test_serve_on_a_port_in_use_is_one_clear_error(site: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_script(
            "-C", str(site.root), "serve", "--port", str(port), env={"NEWSLETTER_SECRET": SECRET}
        )
    assert result.returncode == 1
    assert result.stderr == (
        f"error: port {port} on 127.0.0.1 is already in use; pick another with --port N\n"
    )


def test_a_sent_deadline_alert_is_in_the_archive_where_its_link_points(
    site: Project, app: WebApp
) -> None:
    from datetime import date, datetime

    from newsletter.build import build_alert
    from newsletter.dates import BRUSSELS

    issue_id, _issues = build_alert(
        site,
        call_ids=["horizon-cl4-2026-quantum-sensing"],
        lead_days=14,
        day=date(2026, 11, 19),
        now=datetime(2026, 11, 19, tzinfo=BRUSSELS),
    )
    with SmtpServer() as server:
        send_issue(site, issue_id, languages=["en"], env=server.env())
        (_sender, _to, data), *_ = server.recorder.messages
    link = f"/archive/{issue_id}/en/"
    assert link.encode() in data.replace(b"=\r\n", b"")  # the email's view-in-browser link
    status, _headers, page = _call(app, "GET", link)
    assert status == "200 OK" and "Quantum sensing" in page
