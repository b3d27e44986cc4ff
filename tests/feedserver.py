"""A real HTTP server on 127.0.0.1 for tests, with programmable routes.

    with FeedServer() as server:
        server.set("/feed.xml", RSS, etag='"v1"')
        url = server.url("/feed.xml")
        ...
        assert server.downloads("/feed.xml") == 1

Each route returns a body with optional ETag/Last-Modified (and answers 304 to a matching
If-None-Match or If-Modified-Since), a status, a delay, gzip, or no Content-Length. Every request
is recorded (path, headers, the status sent) so tests can assert what the client sent.
"""

from __future__ import annotations

import contextlib
import gzip as gziplib
import socket
import threading
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    etag: str | None = None
    last_modified: str | None = None
    delay: float = 0.0
    gzip: bool = False
    content_length: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float = 0.0
    """Seconds between single bytes of the body: a server that answers, but too slowly."""


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    status: int

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


class FeedServer:
    """Threaded test server; use as a context manager so it always stops."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.trickled: dict[str, int] = {}
        """Bytes of a trickled body written before the client hung up, by path."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True  # a sleeping handler must never block the test run
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def set(self, path: str, body: bytes | str = b"", **options: object) -> Route:
        """Program `path`; options are the fields of Route (status, etag, delay, gzip …)."""
        data = body.encode() if isinstance(body, str) else body
        route = Route(body=data, **options)  # type: ignore[arg-type]
        with self._lock:
            self.routes[path] = route
        return route

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def downloads(self, path: str) -> int:
        """How many times the body of `path` was actually sent (200 responses)."""
        return sum(1 for r in self.requests_to(path) if r.status == 200)

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- used by the handler ---

    def _route(self, path: str) -> Route | None:
        with self._lock:
            return self.routes.get(path)

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


def _not_modified(route: Route, headers: dict[str, str]) -> bool:
    """RFC 9110: If-None-Match wins; otherwise compare If-Modified-Since with Last-Modified."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        tags = [t.strip() for t in if_none_match.split(",")]
        return route.etag is not None and (route.etag in tags or "*" in tags)
    since = headers.get("if-modified-since")
    if since and route.last_modified:
        try:
            return parsedate_to_datetime(route.last_modified) <= parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
    return False


def _handler_for(server: FeedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            headers = {k.lower(): v for k, v in self.headers.items()}
            route = server._route(path) or Route(body=b"not found", status=404)
            if route.delay and server._stopping.wait(route.delay):
                return
            status = route.status
            if status == 200 and _not_modified(route, headers):
                status = 304
            server._record(Request(self.path, dict(self.headers.items()), status))
            # The client may have given up (e.g. timed out); nothing to do then.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._respond(route, status, headers)

        def _respond(self, route: Route, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            if route.etag:
                self.send_header("ETag", route.etag)
            if route.last_modified:
                self.send_header("Last-Modified", route.last_modified)
            for name, value in route.headers.items():
                self.send_header(name, value)
            if status == 304:
                self.end_headers()
                return
            body = route.body
            if route.gzip and "gzip" in headers.get("accept-encoding", ""):
                body = gziplib.compress(body)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Type", route.content_type)
            if route.content_length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not route.trickle:
                self.wfile.write(body)
                return
            path = self.path.split("?")[0]
            for index in range(len(body)):
                if server._stopping.wait(route.trickle):
                    return
                try:
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
                except OSError:
                    return  # the client gave up, as it should
                server.trickled[path] = index + 1

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    return Handler


def free_port() -> int:
    """A port nothing listens on (for connection-refused tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
