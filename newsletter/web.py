"""`newsletter serve`: the public side of the list as a WSGI app (wsgiref here, or any server).

- `<unsubscribe path>?token=…` GET: a confirmation page with one button (link scanners that
  fetch every URL in a message must not unsubscribe anyone), or "already unsubscribed"; POST:
  unsubscribe, from that button or from a mailbox provider's RFC 8058 one-click request. A
  forged or altered token is refused with 400. GET without a token (the archive copy's link):
  how to unsubscribe, with the list's reply address.
- `<archive path>`: the issues that went out, newest first; `<archive path><period>/<lang>/`:
  the issue as archived (`index.html`, neutral greeting and links).

Paths are those of the public URLs in `newsletter.toml` (`mailing.unsubscribe_url`,
`newsletter.archive_url`), so a reverse proxy passes requests through unchanged.
"""

from __future__ import annotations

import errno
import html
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from newsletter.config import Config, load_config
from newsletter.errors import NewsletterError, Problem
from newsletter.i18n import Translator, load_translator
from newsletter.ledger import Ledger
from newsletter.outbox import read_manifest
from newsletter.project import Project
from newsletter.render import localized
from newsletter.send import list_id, unsubscribe_url
from newsletter.subscribers import DB_NAME, MailingList, effective_language
from newsletter.tokens import secret_from_env, verify

StartResponse = Callable[..., Any]
_ISSUE = re.compile(
    r"^(\d{4}-\d{2}|alert-\d{4}-\d{2}-\d{2}-\d{1,3}d)"  # a monthly digest or a deadline alert
    r"/([a-z]{2,3}(?:-[A-Za-z0-9]{2,8})?)/?(index\.html)?$"
)
_MAX_BODY = 64 * 1024

_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;
color:#1d2330}}
h1{{font-size:1.4rem}} button{{font:inherit;padding:.5rem 1.2rem;cursor:pointer}}
li{{margin:.3rem 0}} .muted{{color:#5b6474}}
</style></head>
<body><p class="muted">{list_name}</p>
{body}
</body></html>
"""

_UNSUBSCRIBE_HEADERS = [
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    ),
]


class WebApp:
    """The WSGI application. Reads the config once; the database and outbox on each request."""

    def __init__(self, project: Project, *, secret: bytes | None = None):
        self.project = project
        self.config: Config = load_config(project.root)
        self.secret = secret if secret is not None else secret_from_env()
        self.scope = list_id(self.config)
        identity = self.config.newsletter
        self.unsubscribe_path = urlsplit(unsubscribe_url(self.config)).path or "/"
        self.archive_path = urlsplit(str(identity.archive_url or identity.website)).path or "/"
        self.db_path = project.state_dir / DB_NAME
        locale_dirs = [d / "locales" for d in project.template_dirs()]
        self.translators = {
            lang: load_translator(lang, identity.default_language, locale_dirs)
            for lang in identity.languages
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if path.rstrip("/") == self.unsubscribe_path.rstrip("/"):
            return self._unsubscribe(environ, method, start_response)
        if path.startswith(self.archive_path):
            if method not in ("GET", "HEAD"):
                return _respond(start_response, "405 Method Not Allowed", b"", [("Allow", "GET")])
            return self._archive(path[len(self.archive_path) :], start_response)
        if path == "/" and method in ("GET", "HEAD"):
            return _respond(start_response, "302 Found", b"", [("Location", self.archive_path)])
        return self._page(start_response, "404 Not Found", self._default(), "Not found", "")

    # unsubscribe

    def _unsubscribe(
        self, environ: dict[str, Any], method: str, start_response: StartResponse
    ) -> Iterable[bytes]:
        if method not in ("GET", "HEAD", "POST"):
            return _respond(start_response, "405 Method Not Allowed", b"", [("Allow", "GET, POST")])
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if method == "POST":
            _drain(environ)
        elif "token" not in query:  # a link without a token, such as the archive copy's
            return self._how_to_unsubscribe(start_response)
        token = (query.get("token") or [""])[0]
        email = verify(self.secret, self.scope, token) if token else None
        if email is None:
            translator = self._default()
            _ = translator.gettext
            body = (
                f"<h1>{_e(_('This unsubscribe link is not valid'))}</h1>"
                f"<p>{_e(_('The link may be incomplete or altered. Use the whole link from the email, or reply to the email and ask us to remove you.'))}</p>"  # noqa: E501
            )
            return self._page(start_response, "400 Bad Request", translator, _("Unsubscribe"), body)
        with MailingList(self.db_path) as mailing_list:
            subscriber = mailing_list.get(email)
            translator = self._translator(subscriber.language if subscriber else "")
            _ = translator.gettext
            title = localized(
                self.config.newsletter.title,
                translator.language,
                self.config.newsletter.default_language,
            )
            if method == "POST":
                if subscriber is not None:
                    reason = "one-click unsubscribe" if _one_click(environ) else "web form"
                    mailing_list.set_status(subscriber.email, "unsubscribed", reason)
                body = (
                    f"<h1>{_e(_('You are unsubscribed'))}</h1>"
                    f"<p>{_e(_('%(email)s will receive no more issues of %(title)s.', email=email, title=title))}</p>"  # noqa: E501
                )
                return self._page(start_response, "200 OK", translator, _("Unsubscribe"), body)
            if subscriber is not None and subscriber.status != "subscribed":
                body = (
                    f"<h1>{_e(_('You are already unsubscribed'))}</h1>"
                    f"<p>{_e(_('%(email)s receives no more issues of %(title)s.', email=email, title=title))}</p>"  # noqa: E501
                )
                return self._page(start_response, "200 OK", translator, _("Unsubscribe"), body)
        action = html.escape(f"{self.unsubscribe_path}?token={token}", quote=True)
        body = (
            f"<h1>{_e(_('Unsubscribe'))}</h1>"
            f"<p>{_e(_('Stop sending %(title)s to %(email)s?', title=title, email=email))}</p>"
            f'<form method="post" action="{action}">'
            f"<button type=submit>{_e(_('Unsubscribe'))}</button></form>"
        )
        return self._page(start_response, "200 OK", translator, _("Unsubscribe"), body)

    def _how_to_unsubscribe(self, start_response: StartResponse) -> Iterable[bytes]:
        """The page behind an unsubscribe link without a token (the archive copy of an issue
        has one: it is not addressed to anyone): how to unsubscribe instead."""
        translator = self._default()
        _ = translator.gettext
        sender = self.config.sender
        address = self.config.mailing.unsubscribe_mailto or sender.reply_to or sender.email
        mailto = _e(f"mailto:{address}?subject=unsubscribe")
        body = (
            f"<h1>{_e(_('How to unsubscribe'))}</h1>"
            f"<p>{_e(_('Every issue we email you has an unsubscribe link of its own at the end: use the link in your own copy of the email.'))}</p>"  # noqa: E501
            f"<p>{_e(_('Or reply to that email, or write to us, and ask us to remove your address:'))} "  # noqa: E501
            f'<a href="{mailto}">{_e(address)}</a></p>'
        )
        return self._page(start_response, "200 OK", translator, _("Unsubscribe"), body)

    # archive

    def _archive(self, rest: str, start_response: StartResponse) -> Iterable[bytes]:
        with Ledger(self.db_path) as ledger:
            sent = {(s.issue, s.language) for s in ledger.sent_issues()}
        if rest in ("", "index.html"):
            return self._archive_index(sorted(sent, reverse=True), start_response)
        match = _ISSUE.match(rest)
        if match is None or (match[1], match[2]) not in sent:
            return self._page(start_response, "404 Not Found", self._default(), "Not found", "")
        if not rest.endswith(("/", ".html")):
            return _respond(
                start_response, "301 Moved Permanently", b"", [("Location", rest + "/")]
            )
        path = self.project.outbox_dir / match[1] / match[2] / "index.html"
        try:
            data = path.read_bytes()
        except OSError:
            return self._page(start_response, "404 Not Found", self._default(), "Not found", "")
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Cache-Control", "public, max-age=300"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        return _respond(start_response, "200 OK", data, headers)

    def _archive_index(
        self, sent: list[tuple[str, str]], start_response: StartResponse
    ) -> Iterable[bytes]:
        translator = self._default()
        items = []
        for period, language in sent:
            manifest = read_manifest(self.project.outbox_dir / period / language) or {}
            subject = manifest.get("subject") or f"{period} ({language})"
            items.append(
                f'<li><a href="{_e(f"{period}/{language}/")}" hreflang="{_e(language)}">'
                f"{_e(subject)}</a></li>"
            )
        archive = translator.gettext("Archive")
        body = f"<h1>{_e(archive)}</h1><ul>{''.join(items)}</ul>"
        return self._page(start_response, "200 OK", translator, archive, body, cache=True)

    # helpers

    def _default(self) -> Translator:
        return self.translators[self.config.newsletter.default_language]

    def _translator(self, language: str) -> Translator:
        identity = self.config.newsletter
        lang = effective_language(language, identity.languages, identity.default_language)
        return self.translators[lang]

    def _page(
        self,
        start_response: StartResponse,
        status: str,
        translator: Translator,
        title: str,
        body: str,
        *,
        cache: bool = False,
    ) -> Iterable[bytes]:
        identity = self.config.newsletter
        list_name = localized(identity.title, translator.language, identity.default_language)
        page = _PAGE.format(
            lang=_e(translator.language), title=_e(title), list_name=_e(list_name), body=body
        )
        headers = [("Content-Type", "text/html; charset=utf-8")]
        if cache:
            headers += [
                ("Cache-Control", "public, max-age=300"),
                ("X-Content-Type-Options", "nosniff"),
            ]
        else:
            headers += _UNSUBSCRIBE_HEADERS
        return _respond(start_response, status, page.encode(), headers)


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _respond(
    start_response: StartResponse, status: str, body: bytes, headers: list[tuple[str, str]]
) -> Iterable[bytes]:
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [body]


def _drain(environ: dict[str, Any]) -> bytes:
    """Read (and discard) a bounded request body, so the connection stays usable."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= 0:
        return b""
    data = environ["wsgi.input"].read(min(length, _MAX_BODY))
    environ["newsletter.body"] = data
    return data


def _one_click(environ: dict[str, Any]) -> bool:
    return b"List-Unsubscribe=One-Click" in environ.get("newsletter.body", b"")


class _QuietHandler(WSGIRequestHandler):
    """Logs requests without their query strings: tokens identify subscribers."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = self.path.split("?", 1)[0]
        self.log_message('"%s %s" %s %s', self.command, path, code, size)


def make_app(project: Project) -> WebApp:
    return WebApp(project)


def serve(project: Project, host: str = "127.0.0.1", port: int = 8080) -> WSGIServer:
    """A wsgiref server for the app; the caller runs `serve_forever()`. NewsletterError (one
    line) when the address cannot be listened on, a port in use above all."""
    app = make_app(project)
    try:
        return make_server(host, port, app, handler_class=_QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is already in use; pick another with --port N"
        elif exc.errno == errno.EACCES:
            message = f"not allowed to listen on port {port}; use a port above 1023"
        else:
            message = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        raise NewsletterError(Problem(message)) from None


def wsgi_application(root: str | Path = ".") -> WebApp:
    """For other WSGI servers: `gunicorn 'newsletter.web:wsgi_application("/path/to/project")'`."""
    return make_app(Project.at(root))
