"""A real SMTP server for the tests (aiosmtpd on 127.0.0.1), recording what it accepts and
injecting faults on request: 421/451/550 replies, a connection dropped in the middle of DATA,
slow replies, refused logins, a reply held until the test releases it.

Only messages the server answered 250 to at the end of DATA count as received. The recorder
also counts the TCP connections the server accepted and the ones it cut on purpose, and keeps
(monotonic) times of connections and accepted messages for lower-bound checks of `--rate`.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from conftest import REPO

from newsletter.build import build
from newsletter.dates import Period
from newsletter.project import Project

PERIOD = "2026-11"
NOW = "2026-11-25T09:00:00+01:00"
SECRET = "test-secret-0123456789abcdef"
FAST_RETRIES = """
[mailing]
max_attempts = 3
retry_delay = 0.05

[smtp]
timeout = 5
"""
_built: list[Path] = []


def built_project(destination: Path, *, extra_config: str = FAST_RETRIES) -> Project:
    """A private copy of the shipped project with the 2026-11 issue in its outbox.

    The issue is built once per test session and copied; `extra_config` is appended to
    newsletter.toml (by default: fast retries and a short SMTP timeout for tests).
    """
    if not _built:
        source = Path(tempfile.mkdtemp(prefix="newsletter-mailing-")) / "project"
        source.mkdir()
        shutil.copy(REPO / "newsletter.toml", source / "newsletter.toml")
        shutil.copytree(REPO / "content", source / "content")
        shutil.copytree(REPO / "templates", source / "templates")
        project = Project.at(source)
        build(project, period=Period.parse(PERIOD), now=datetime.fromisoformat(NOW), offline=True)
        shutil.rmtree(project.state_dir, ignore_errors=True)
        _built.append(source)
    shutil.copytree(_built[0], destination, ignore=shutil.ignore_patterns(".newsletter"))
    config = destination / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    tables = tomllib.loads(text)
    extra = tomllib.loads(extra_config)
    if any(name in tables for name in extra):
        raise AssertionError(f"newsletter.toml already has one of {list(extra)}")
    config.write_text(text + "\n" + extra_config, encoding="utf-8")
    return Project.at(destination)


def self_signed_certificate(directory: Path) -> tuple[Path, Path] | None:
    """A certificate for 127.0.0.1 (made with the openssl command); None without openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Faults:
    """What goes wrong, and for whom. Sets of addresses fail the first time (or always)."""

    refuse_rcpt: set[str] = field(default_factory=set)
    """550 5.1.1 at RCPT, every time: the mailbox does not exist."""
    refuse_content: set[str] = field(default_factory=set)
    """554 after the content, every time."""
    greylist: set[str] = field(default_factory=set)
    """451 4.7.1 at RCPT on the first try."""
    always_451: set[str] = field(default_factory=set)
    """451 at RCPT every time: stays pending."""
    close_after_data: set[str] = field(default_factory=set)
    """421 after the content on the first try (not accepted), then the server hangs up."""
    drop_in_data: set[str] = field(default_factory=set)
    """The connection is cut after the first line of content, on the first try."""
    slow_rcpt: dict[str, float] = field(default_factory=dict)
    """Seconds to wait before answering RCPT, on the first try."""
    mail_421_every: int = 0
    """Every n-th MAIL FROM of the server's life is answered 421 and the connection closed."""
    mail_421_at: set[int] = field(default_factory=set)
    """These MAIL FROMs of the server's life (1 is the first) are answered 421, then it hangs up."""
    refuse_mail: bool = False
    """550 to MAIL FROM: the whole session is refused."""
    rcpt_reply: str | None = None
    """Answer every RCPT with this (e.g. `550 relay not permitted`) while it is set."""
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    """Answer RCPT for these addresses with these replies, every time."""
    hold_rcpt: threading.Event | None = None
    """Answer no RCPT until this event is set (the test sees `Recorder.wait_rcpt`)."""


class Recorder:
    """The aiosmtpd handler: applies the faults, keeps every accepted message."""

    def __init__(self, faults: Faults | None = None):
        self.faults = faults or Faults()
        self.lock = threading.Lock()
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.counts: Counter[str] = Counter()
        self.tries: Counter[tuple[str, str]] = Counter()
        self.mails = 0
        self.connections = 0
        """EHLOs (one per session, two with STARTTLS)."""
        self.sessions = 0
        """TCP connections accepted."""
        self.drops = 0
        """Connections the server closed or cut on purpose (421 and hang up, cut in DATA)."""
        self.rcpts = 0
        self.connected_at: list[float] = []
        self.accepted_at: list[float] = []
        self.logins: list[str] = []
        self.accepted = threading.Condition(self.lock)

    def _first(self, stage: str, address: str) -> bool:
        with self.lock:
            self.tries[stage, address] += 1
            return self.tries[stage, address] == 1

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.lock:
            self.connections += 1
        return responses

    def connected(self) -> None:
        with self.lock:
            self.sessions += 1
            self.connected_at.append(time.monotonic())

    def dropped(self) -> None:
        with self.lock:
            self.drops += 1

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        faults = self.faults
        if faults.refuse_mail:
            return "550 5.7.1 sender not allowed"
        with self.lock:
            self.mails += 1
            count = self.mails
        if (faults.mail_421_every and count % faults.mail_421_every == 0) or (
            count in faults.mail_421_at
        ):
            self.dropped()
            _close_soon(server)
            return "421 4.3.2 service shutting down"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        faults = self.faults
        with self.accepted:
            self.rcpts += 1
            self.accepted.notify_all()
        if faults.hold_rcpt is not None:
            while not faults.hold_rcpt.is_set():
                await asyncio.sleep(0.01)
        if faults.rcpt_reply is not None:
            return faults.rcpt_reply
        if address in faults.rcpt_replies:
            return faults.rcpt_replies[address]
        if address in faults.refuse_rcpt:
            return "550 5.1.1 no such user"
        if address in faults.always_451:
            return "451 4.7.1 try again later"
        if address in faults.greylist and self._first("greylist", address):
            return "451 4.7.1 greylisted, try again later"
        if address in faults.slow_rcpt and self._first("slow", address):
            await asyncio.sleep(faults.slow_rcpt[address])
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        faults = self.faults
        (rcpt,) = envelope.rcpt_tos
        if rcpt in faults.refuse_content:
            return "554 5.7.1 message refused"
        if rcpt in faults.close_after_data and self._first("close", rcpt):
            self.dropped()
            _close_soon(server)
            return "421 4.4.2 closing connection"
        with self.accepted:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            self.counts[rcpt] += 1
            self.accepted_at.append(time.monotonic())
            self.accepted.notify_all()
        return "250 2.0.0 accepted"

    def should_drop(self, envelope) -> bool:
        rcpts = envelope.rcpt_tos or []
        return any(r in self.faults.drop_in_data and self._first("drop", r) for r in rcpts)

    def parsed(self) -> list[EmailMessage]:
        with self.lock:
            return [message_from_bytes(m, policy=default_policy) for _f, _r, m in self.messages]

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        with self.accepted:
            return self.accepted.wait_for(lambda: len(self.messages) >= count, timeout)

    def wait_rcpt(self, count: int = 1, timeout: float = 60.0) -> bool:
        """Until `count` RCPT commands have arrived (answered or held)."""
        with self.accepted:
            return self.accepted.wait_for(lambda: self.rcpts >= count, timeout)


def _close_soon(server: SMTP) -> None:
    """Hang up just after the reply is written (as a server answering 421 does)."""
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, lambda: server.transport and server.transport.close())


class _FaultySMTP(SMTP):
    def connection_made(self, transport) -> None:
        self.event_handler.connected()
        super().connection_made(transport)

    async def smtp_DATA(self, arg: str) -> None:
        handler = self.event_handler
        if self.envelope is not None and handler.should_drop(self.envelope):
            handler.dropped()
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readuntil(b"\r\n")
            self.transport.abort()
            return
        await super().smtp_DATA(arg)


class _Controller(Controller):
    def factory(self):
        return _FaultySMTP(self.handler, **self.SMTP_kwargs)


class SmtpServer:
    """`with SmtpServer(faults) as server:` — a server on 127.0.0.1:`server.port`."""

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        credentials: tuple[str, str] | None = None,
        timeout: float = 30,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ):
        self.recorder = Recorder(faults)
        self.port = free_port()
        kwargs: dict[str, object] = {"decode_data": False, "timeout": timeout}
        if starttls is not None:
            kwargs.update(tls_context=starttls, require_starttls=True)
        if implicit_tls is not None:
            kwargs["ssl_context"] = implicit_tls
        if credentials:
            user, password = credentials

            def authenticate(server, session, envelope, mechanism, auth_data):
                ok = isinstance(auth_data, LoginPassword) and (
                    auth_data.login.decode(),
                    auth_data.password.decode(),
                ) == (user, password)
                if isinstance(auth_data, LoginPassword):
                    self.recorder.logins.append(auth_data.login.decode())
                return AuthResult(success=ok, handled=False)

            kwargs.update(auth_require_tls=False, authenticator=authenticate)
        self.controller = _Controller(self.recorder, hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        with self.recorder.lock:  # aiosmtpd's own start-up probe is not a client's connection
            self.recorder.sessions = 0
            self.recorder.connected_at.clear()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.controller.stop()

    @property
    def counts(self) -> Counter[str]:
        return self.recorder.counts

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for `newsletter send` to reach this server."""
        return {
            "NEWSLETTER_SMTP_HOST": "127.0.0.1",
            "NEWSLETTER_SMTP_PORT": str(self.port),
            "NEWSLETTER_SMTP_SECURITY": "none",
            "NEWSLETTER_SECRET": SECRET,
            **extra,
        }
