"""Local preview server with live reload: the issue as subscribers will see it, while editing.

`LivePreview` owns the build side: it builds one period through `newsletter.build.build`, watches
`content/`, `templates/` and the config with watchfiles, and rebuilds on a background thread
(debounced). A build that raises keeps the last good files in outbox/ and publishes its
problems instead; the next good build clears them. Nothing a user edits can stop it.

`PreviewServer` is the HTTP side (stdlib ThreadingHTTPServer): the preview page, a JSON view of
each issue (headers, checks), the issue files under an allow-list, and server-sent events that
tell the page when to reload. It binds to loopback unless told otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import watchfiles

from newsletter.build import BuildResult, build
from newsletter.checks import check_issue, worst
from newsletter.config import load_config
from newsletter.dates import Period, parse_now
from newsletter.errors import NewsletterError, Problem
from newsletter.project import Project

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
HEADERS = ("Subject", "From", "Reply-To", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post")
"""The message headers the page shows, each only when message.eml has it."""

PERIOD_PATTERN = r"\d{4}-(?:0[1-9]|1[0-2])"
LANGUAGE_PATTERN = r"[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})*"
ISSUE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "digest.txt": "text/plain; charset=utf-8",
    "message.eml": "text/plain; charset=utf-8",
    "manifest.json": "application/json; charset=utf-8",
}
"""What the server hands out of outbox/ (personal.* hold per-recipient markers: not for show)."""
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/assets/preview.css": ("preview.css", "text/css; charset=utf-8"),
    "/assets/preview.js": ("preview.js", "text/javascript; charset=utf-8"),
}
_ISSUE_FILE = re.compile(
    rf"/outbox/({PERIOD_PATTERN})/({LANGUAGE_PATTERN})/({'|'.join(map(re.escape, ISSUE_FILES))})"
)
_ISSUE_API = re.compile(rf"/api/issues/({PERIOD_PATTERN})/({LANGUAGE_PATTERN})")
_PERIOD = re.compile(PERIOD_PATTERN)
_LANGUAGE = re.compile(LANGUAGE_PATTERN)

EMAIL_POLICY = (
    "default-src 'none'; img-src http: https: data: cid:; style-src 'unsafe-inline'; "
    "font-src http: https: data:; script-src 'none'; form-action 'none'; frame-ancestors 'self'; "
    "sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox"
)
"""The email runs no script and submits no form, even when opened outside the page's frame."""
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; frame-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
KEEPALIVE_SECONDS = 15.0


class LivePreview:
    """Builds one period's issue, rebuilds it when its sources change, and reports each outcome.

    The clock is read once (`now`, default the system clock when the first build runs), so an
    unchanged language is recognised and not inlined again. `now` may be a datetime, or the
    text of `--now`, which is read in the project's time zone once the config loads.
    """

    def __init__(
        self,
        project: Project,
        *,
        period: Period | None = None,
        languages: Iterable[str] = (),
        now: datetime | str | None = None,
        offline: bool = False,
        debounce: float = 0.15,
        on_build: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.project = project
        self.period = period
        self.languages = tuple(languages)
        self.offline = offline
        self.debounce = debounce
        self.on_build = on_build
        self._now = now if isinstance(now, datetime) else None
        self._now_text = now if isinstance(now, str) else None
        self._changed = threading.Condition()
        self._generation = 0  # any change of state: the event stream sends one per bump
        self._version = 0  # good builds only: the page reloads the email when it moves
        self._building = False
        self._problems: list[Problem] = []
        self._result: BuildResult | None = None
        self._built_at: datetime | None = None
        self._duration: float | None = None
        self._trigger: list[str] = []
        self._pending: set[Path] = set()
        self._online_wanted = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._build_lock = threading.Lock()

    # --- building ---

    def build_now(self, *, changed: Iterable[Path] = (), online: bool = False) -> bool:
        """Build once, in this thread; True when it succeeded. Never raises for bad input."""
        with self._build_lock:
            with self._changed:
                self._building = True
                self._generation += 1
                self._changed.notify_all()
            started = time.perf_counter()
            offline = self.offline or (self._result is not None and not online)
            problems: list[Problem] = []
            result = None
            try:
                now = self._clock()
                result = build(
                    self.project,
                    period=self.period,
                    languages=self.languages,
                    now=now,
                    offline=offline,
                )
            except NewsletterError as exc:
                problems = exc.problems
            except Exception as exc:  # a bug must not take the preview down with it
                log.exception("preview build crashed")
                problems = [Problem(f"unexpected {type(exc).__name__}: {exc}")]
            duration = time.perf_counter() - started
            with self._changed:
                self._building = False
                self._problems = problems
                self._duration = duration
                self._trigger = sorted(self._relative(p) for p in changed)
                if result is not None:
                    self._result = result
                    self.period = result.period
                    self._version += 1
                    self._built_at = datetime.now().astimezone()
                self._generation += 1
                self._changed.notify_all()
            if self.on_build is not None:
                try:
                    self.on_build(self.snapshot())
                except Exception:
                    log.exception("on_build listener failed")
            return result is not None

    def _clock(self) -> datetime:
        if self._now is None:
            tz = load_config(self.project.root).tz
            self._now = parse_now(self._now_text, tz)
        return self._now

    @property
    def last_result(self) -> BuildResult | None:
        return self._result

    @property
    def problems(self) -> list[Problem]:
        return list(self._problems)

    # --- watching ---

    def start(self) -> None:
        """Start the rebuild thread and the file watchers (daemon threads; `close` stops them)."""
        self._spawn(self._rebuild_loop, "preview-build")
        sources = [d for d in (self.project.content_dir, self.project.templates_dir) if d.is_dir()]
        if sources:
            self._spawn(lambda: self._watch(sources, True, watchfiles.DefaultFilter()), "watch")
        config_name = self.project.config_path.name
        self._spawn(
            lambda: self._watch(
                [self.project.root], False, lambda _change, path: Path(path).name == config_name
            ),
            "watch-config",
        )

    def request_rebuild(self, changed: Iterable[Path] = (), *, online: bool = False) -> None:
        """Ask for a rebuild soon; requests within the debounce time make one build."""
        with self._changed:
            self._pending.update(changed)
            self._online_wanted |= online
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _rebuild_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            # Debounce: an editor's save is often several events; wait for a quiet moment.
            while self._wake.is_set() and not self._stop.is_set():
                self._wake.clear()
                self._stop.wait(self.debounce)
            if self._stop.is_set():
                return
            with self._changed:
                changed, self._pending = self._pending, set()
                online, self._online_wanted = self._online_wanted, False
            self.build_now(changed=changed, online=online)

    def _watch(self, paths: list[Path], recursive: bool, watch_filter: Any) -> None:
        try:
            for changes in watchfiles.watch(
                *paths,
                watch_filter=watch_filter,
                recursive=recursive,
                stop_event=self._stop,
                debounce=1000,
                step=50,
                rust_timeout=1000,
                raise_interrupt=False,
            ):
                changed = {Path(path) for _change, path in changes}
                config = self.project.config_path
                self.request_rebuild(changed, online=any(p.name == config.name for p in changed))
        except Exception:
            log.exception("watching %s failed; live reload is off for it", paths)

    # --- what the page sees ---

    def snapshot(self) -> dict[str, Any]:
        """The state the page renders: build status, problems, and the index of issues."""
        with self._changed:
            problems = [self._describe(p) for p in self._problems]
            built_at = self._built_at.isoformat(timespec="seconds") if self._built_at else None
            duration = round(self._duration * 1000) if self._duration is not None else None
            state = {
                "generation": self._generation,
                "version": self._version,
                "building": self._building,
                "ok": not self._problems,
                "problems": problems,
                "built_at": built_at,
                "duration_ms": duration,
                "changed": list(self._trigger),
                "live": {
                    "period": str(self.period) if self.period else None,
                    "languages": [i.language for i in self._result.issues] if self._result else [],
                    "unchanged": [i.language for i in self._result.issues if i.unchanged]
                    if self._result
                    else [],
                },
            }
        state["issues"] = self.index()
        return state

    def wait_for_change(self, seen: int, timeout: float) -> dict[str, Any] | None:
        """The snapshot once the state moved past generation `seen`; None on timeout or close."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._generation != seen or self._stop.is_set(), timeout=timeout
            )
            if self._generation == seen or self._stop.is_set():
                return None
        return self.snapshot()

    def index(self) -> list[dict[str, Any]]:
        """Every issue in outbox/, newest period first: period, language, subject, live."""
        found = []
        outbox = self.project.outbox_dir
        periods = sorted(
            (p for p in _subdirs(outbox) if _PERIOD.fullmatch(p.name)),
            key=lambda p: p.name,
            reverse=True,
        )
        live_period = str(self.period) if self.period else None
        for period_dir in periods:
            for language_dir in sorted(_subdirs(period_dir), key=lambda p: p.name):
                if not _LANGUAGE.fullmatch(language_dir.name):
                    continue
                manifest = _read_json(language_dir / "manifest.json")
                if manifest is None:
                    continue
                found.append(
                    {
                        "period": period_dir.name,
                        "language": language_dir.name,
                        "subject": manifest.get("subject", ""),
                        "live": period_dir.name == live_period,
                    }
                )
        return found

    def issue(self, period: str, language: str) -> dict[str, Any] | None:
        """What the page shows beside one issue's email: headers, checks, size, preheader."""
        directory = self.project.outbox_dir / period / language
        manifest = _read_json(directory / "manifest.json")
        if manifest is None:
            return None
        checks = check_issue(directory, root=self.project.root)
        return {
            "period": period,
            "language": language,
            "subject": manifest.get("subject", ""),
            "preheader": manifest.get("preheader", ""),
            "generated_for": manifest.get("generated_for"),
            "size_bytes": manifest.get("size_bytes"),
            "headers": message_headers(directory / "message.eml"),
            "checks": [c.to_json() for c in checks],
            "status": worst(checks),
            "live": period == (str(self.period) if self.period else None),
        }

    def _describe(self, problem: Problem) -> dict[str, Any]:
        path = self._relative(problem.path) if problem.path is not None else None
        return {
            "text": str(Problem(problem.message, path, problem.line, problem.field)),
            "path": path,
            "line": problem.line,
            "message": problem.message,
        }

    def _relative(self, path: Path | str) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.project.root))
        except (ValueError, OSError):
            return str(path)


def message_headers(path: Path) -> list[list[str]]:
    """The headers of `message.eml` the page shows, decoded, in HEADERS order."""
    try:
        with path.open("rb") as stream:
            message = BytesHeaderParser(policy=default_policy).parse(stream)
    except OSError:
        return []
    return [[name, str(message[name])] for name in HEADERS if message[name] is not None]


class PreviewServer(ThreadingHTTPServer):
    """The preview's HTTP server. Binding happens in the constructor, so a taken port raises
    NewsletterError at once, with one clear line."""

    daemon_threads = True

    def __init__(self, preview: LivePreview, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
        self.preview = preview
        self.host = host
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.loopback = is_loopback(host)
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise NewsletterError(
                    f"port {port} on {host} is already in use; "
                    "pick another with --port N, or --port 0 for a free one"
                ) from None
            if exc.errno == errno.EACCES:
                raise NewsletterError(
                    f"not allowed to listen on port {port}; use a port above 1023"
                ) from None
            raise NewsletterError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """Where to point a browser; for a wildcard address (all interfaces), this machine."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Serve on a daemon thread (tests, embedding); `serve_forever` blocks instead."""
        self._thread = threading.Thread(target=self.serve_forever, name="preview-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: PreviewServer
    server_version = "newsletter-preview"
    sys_version = ""

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _route(self, *, head: bool) -> None:
        if not self._host_allowed():
            self._send(HTTPStatus.FORBIDDEN, b"forbidden\n", "text/plain; charset=utf-8", head=head)
            return
        raw = urlsplit(self.path).path if self.path.startswith("/") else ""
        try:
            path = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            path = ""
        preview = self.server.preview
        if not (_safe(raw) and _safe(path)):
            self._not_found(head)
        elif path in ASSETS:
            name, content_type = ASSETS[path]
            headers = {"Content-Security-Policy": PAGE_POLICY} if name.endswith(".html") else {}
            self._send(HTTPStatus.OK, _asset(name), content_type, head=head, headers=headers)
        elif path == "/events":
            self._events(head)
        elif path == "/api/state":
            self._json(preview.snapshot(), head)
        elif match := _ISSUE_API.fullmatch(path):
            info = preview.issue(match.group(1), match.group(2))
            if info is None:
                self._not_found(head)
            else:
                self._json(info, head)
        elif match := _ISSUE_FILE.fullmatch(path):
            self._issue_file(*match.groups(), head=head)
        else:
            self._not_found(head)

    def _host_allowed(self) -> bool:
        """Against DNS rebinding: on loopback, only requests addressed to loopback names."""
        if not self.server.loopback:
            return True
        host = (self.headers.get("Host") or "").strip()
        if not host:
            return True  # not a browser: DNS rebinding needs one
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.strip("[]") in {"localhost", "127.0.0.1", "::1", self.server.host.strip("[]")}

    def _issue_file(self, period: str, language: str, name: str, *, head: bool) -> None:
        outbox = self.server.preview.project.outbox_dir.resolve()
        path = (outbox / period / language / name).resolve()
        if not path.is_relative_to(outbox) or not path.is_file():
            self._not_found(head)
            return
        try:
            data = path.read_bytes()
        except OSError:
            self._not_found(head)
            return
        headers = {"Content-Security-Policy": EMAIL_POLICY} if name == "index.html" else {}
        self._send(HTTPStatus.OK, data, ISSUE_FILES[name], head=head, headers=headers)

    def _events(self, head: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if head:
            return
        preview = self.server.preview
        seen: int | None = None
        try:
            self.wfile.write(b"retry: 1000\n\n")
            while not preview.closed:
                if seen is None:
                    state: dict[str, Any] | None = preview.snapshot()
                else:
                    state = preview.wait_for_change(seen, KEEPALIVE_SECONDS)
                if state is None:
                    self.wfile.write(b": keep-alive\n\n")
                else:
                    seen = state["generation"]
                    payload = json.dumps(state, ensure_ascii=False)
                    self.wfile.write(f"event: state\ndata: {payload}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return

    def _json(self, value: Any, head: bool) -> None:
        body = json.dumps(value, ensure_ascii=False).encode()
        self._send(HTTPStatus.OK, body, "application/json; charset=utf-8", head=head)

    def _not_found(self, head: bool) -> None:
        self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", head=head)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        *,
        head: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)


def _safe(path: str) -> bool:
    """No traversal, no backslashes, no NULs, no empty segments: such requests get a 404."""
    if "\\" in path or "\0" in path or "//" in path:
        return False
    return not any(segment in ("..", ".") for segment in path.split("/"))


def _asset(name: str) -> bytes:
    return (resources.files("newsletter") / "preview_assets" / name).read_bytes()


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "LivePreview",
    "PreviewServer",
    "is_loopback",
    "message_headers",
]
