"""`newsletter send`: deliver one built issue to every subscriber, once, over SMTP.

Each worker thread owns one SMTP connection, reused for message after message and reopened when
dropped. For each recipient a worker renders the message, claims it in the ledger, sends it, and
records the outcome before it takes the next one; so after a crash at most one message per
connection has an unknown fate. Temporary failures go back in the queue with a growing delay and
stay `pending` for the next run once the attempts are used up; a permanent refusal of one
recipient is recorded and the rest go on; a refusal of the whole session stops the run.

Telling the two apart matters: charging a refusal of the mailing to each recipient would mark
the whole list failed (or bounced). So a refusal that names the session (relaying denied,
authentication required, 5xx to MAIL FROM or DATA) stops the run at once with the recipient
left pending; and a refusal of one recipient is only recorded as `failed` once the server has
shown it takes mail from us: refusals in a row are held as `pending` until a message goes
through, and `CONSECUTIVE_REFUSALS` of them in a row stop the run, left pending.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import heapq
import ipaddress
import itertools
import os
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import make_msgid
from pathlib import Path

from newsletter.config import Config, SmtpSettings, load_config
from newsletter.dates import Period
from newsletter.errors import NewsletterError, Problem
from newsletter.i18n import load_translator
from newsletter.ledger import Due, Ledger
from newsletter.messages import IssueMessages, Letterhead, Recipient, is_built, load_issue
from newsletter.outbox import mark_sent
from newsletter.project import Project
from newsletter.render import localized
from newsletter.subscribers import (
    DB_NAME,
    InvalidAddress,
    MailingList,
    effective_language,
    normalise_email,
)
from newsletter.tokens import SECRET_VARIABLE, secret_from_env

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no run lock
    fcntl = None  # type: ignore[assignment]

PASSWORD_VARIABLE = "NEWSLETTER_SMTP_PASSWORD"
DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}
CONSECUTIVE_REFUSALS = 10
"""A server that refuses this many recipients or messages in a row, with none accepted in
between, refuses the mailing, not the recipients: the run stops and they stay pending."""


@dataclass(frozen=True)
class SmtpTarget:
    """Where to deliver, with the password from the environment (never shown by repr)."""

    host: str
    port: int
    security: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def smtp_target(settings: SmtpSettings, env: Mapping[str, str] | None = None) -> SmtpTarget:
    """`[smtp]` overridden by NEWSLETTER_SMTP_HOST/PORT/USER/SECURITY; the password only from
    NEWSLETTER_SMTP_PASSWORD."""
    env = os.environ if env is None else env
    host = env.get("NEWSLETTER_SMTP_HOST") or settings.host
    security = (env.get("NEWSLETTER_SMTP_SECURITY") or settings.security).strip().lower()
    if security not in DEFAULT_PORTS:
        raise NewsletterError(
            Problem(f"NEWSLETTER_SMTP_SECURITY must be none, starttls or ssl, not {security!r}")
        )
    port_text = env.get("NEWSLETTER_SMTP_PORT")
    if port_text:
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise NewsletterError(
                Problem(f"NEWSLETTER_SMTP_PORT must be a port number, not {port_text!r}")
            ) from None
    else:
        port = settings.port or DEFAULT_PORTS[security]
    user = env.get("NEWSLETTER_SMTP_USER") or settings.user
    password = env.get(PASSWORD_VARIABLE) or None
    if user and not password:
        raise NewsletterError(Problem(f"smtp.user is set but {PASSWORD_VARIABLE} is not"))
    if password and security == "none" and not _loopback(host):
        raise NewsletterError(
            Problem(
                f"refusing to send the SMTP password unencrypted to {host}; "
                'set security = "starttls" or "ssl"',
                field="smtp.security",
            )
        )
    return SmtpTarget(host, port, security, user, password, settings.timeout)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# outcomes of one attempt


class TemporaryFailure(Exception):
    """4xx, a dropped connection or a timeout: worth another try."""

    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply


class PermanentFailure(Exception):
    """5xx for one recipient: recorded as failed; `bounce` when the mailbox does not exist."""

    def __init__(self, reply: str, *, bounce: bool = False, content: bool = False):
        super().__init__(reply)
        self.reply = reply
        self.bounce = bounce
        self.content = content


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


class Connection:
    """One SMTP session, opened on first use and reopened after a drop."""

    def __init__(
        self,
        target: SmtpTarget,
        envelope_from: str,
        *,
        local_hostname: str | None = None,
        connect_attempts: int = 3,
        retry_delay: float = 1.0,
        stopping: threading.Event | None = None,
    ):
        self.target = target
        self.envelope_from = envelope_from
        self.local_hostname = local_hostname
        self.connect_attempts = connect_attempts
        self.retry_delay = retry_delay
        self.stopping = stopping or threading.Event()
        self.smtp: smtplib.SMTP | None = None

    def open(self) -> smtplib.SMTP:
        """Connect (retrying a refused or dropped connection); NewsletterError when the server
        cannot be reached or refuses the session (TLS, authentication)."""
        if self.smtp is not None:
            return self.smtp
        for attempt in range(1, self.connect_attempts + 1):
            try:
                self.smtp = self._connect()
                return self.smtp
            except NewsletterError:
                raise
            except (OSError, smtplib.SMTPException) as exc:
                if attempt == self.connect_attempts or self.stopping.is_set():
                    raise NewsletterError(
                        Problem(f"cannot connect to the SMTP server {self.target}: {_why(exc)}")
                    ) from None
                self.stopping.wait(self.retry_delay * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _connect(self) -> smtplib.SMTP:
        target = self.target
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        try:
            if target.security == "ssl":
                smtp = smtplib.SMTP_SSL(
                    target.host,
                    target.port,
                    local_hostname=self.local_hostname,
                    timeout=target.timeout,
                    context=context,
                )
            else:
                smtp = smtplib.SMTP(
                    target.host,
                    target.port,
                    local_hostname=self.local_hostname,
                    timeout=target.timeout,
                )
        except ssl.SSLError as exc:
            raise NewsletterError(
                Problem(f"TLS with the SMTP server {target} failed: {_why(exc)}")
            ) from None
        try:
            smtp.ehlo()
            if target.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise NewsletterError(
                        Problem(f"the SMTP server {target} does not offer STARTTLS")
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if target.user:
                _login(smtp, target.user, target.password or "")
        except ssl.SSLError as exc:
            smtp.close()
            raise NewsletterError(
                Problem(f"TLS with the SMTP server {target} failed: {_why(exc)}")
            ) from None
        except smtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise NewsletterError(
                Problem(
                    f"the SMTP server {target} refused the login of {target.user!r}: "
                    f"{_reply(exc.smtp_code, exc.smtp_error)}"
                )
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            smtp.close()
            raise NewsletterError(Problem(f"the SMTP server {target}: {exc}")) from None
        except BaseException:
            smtp.close()
            raise
        return smtp

    def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()

    def deliver(self, recipient: str, data: bytes) -> str:
        """Send one message (CRLF, dot-safe) to one recipient; returns the server's reply."""
        smtp = self.open()
        try:
            code, text = smtp.docmd("MAIL", f"FROM:<{self.envelope_from}>")
            if code != 250:
                self._refused("MAIL", code, text)
            code, text = smtp.docmd("RCPT", f"TO:<{recipient}>")
            if code not in (250, 251):
                self._refused("RCPT", code, text)
            code, text = smtp.docmd("DATA")
            if code != 354:
                self._refused("DATA", code, text)
            smtp.send(data)
            smtp.send(b".\r\n")
            code, text = smtp.getreply()
            if code != 250:
                self._refused("END", code, text)
            return _reply(code, text)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise TemporaryFailure(f"connection lost: {_why(exc)}") from None

    def _refused(self, stage: str, code: int, text: bytes) -> None:
        reply = _reply(code, text)
        if code == 421 or code < 400:
            self._drop()
            raise TemporaryFailure(reply)
        if stage != "END":
            self._reset()
        if code < 500:
            raise TemporaryFailure(reply)
        if stage == "MAIL":
            raise NewsletterError(
                Problem(f"the SMTP server {self.target} refused the sender: {reply}")
            )
        if stage == "DATA":
            raise NewsletterError(Problem(f"the SMTP server {self.target} refused DATA: {reply}"))
        if stage == "RCPT":
            kind = rcpt_refusal(code, text)
            if kind == "session":
                raise NewsletterError(
                    Problem(
                        f"the SMTP server {self.target} refuses this mailing: it answered "
                        f"{reply} to a recipient (check smtp.host, the login and the sender "
                        "the relay allows); nobody was marked failed"
                    )
                )
            raise PermanentFailure(reply, bounce=kind == "mailbox")
        raise PermanentFailure(reply, content=True)

    def _reset(self) -> None:
        assert self.smtp is not None
        try:
            code, _text = self.smtp.docmd("RSET")
            if code != 250:
                self._drop()
        except (smtplib.SMTPServerDisconnected, OSError):
            self._drop()

    def _drop(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            smtp.close()


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH PLAIN when offered (one exchange, one clear answer), else smtplib's negotiation."""
    smtp.user, smtp.password = user, password
    if "PLAIN" in smtp.esmtp_features.get("auth", "").upper().split():
        smtp.auth("PLAIN", smtp.auth_plain)
        return
    smtp.login(user, password)


_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_NO_MAILBOX_CODES = ("5.1.0", "5.1.1")
"""RFC 3463: other address status, bad destination mailbox address."""
_NO_MAILBOX_WORDS = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|mailbox unavailable"
    r"|mailbox not found|unknown (?:mailbox|recipient)|recipient unknown",
    re.IGNORECASE,
)
_SESSION_WORDS = re.compile(
    r"\brelay|authenticat|\bauth(?:orization)? required|must (?:be )?(?:authenticated|log ?in)",
    re.IGNORECASE,
)


def rcpt_refusal(code: int, text: bytes | str) -> str:
    """What a 5xx reply to RCPT refuses: `mailbox` (the address does not exist: mark it
    bounced), `session` (relaying or authentication: the whole mailing is refused; stop), or
    `recipient` (anything else: this recipient fails, the others go on).

    Conservative about `mailbox`: only RFC 3463 codes 5.1.0/5.1.1, or, without an enhanced
    code, 550/551/553 with "user unknown", "no such user", "mailbox unavailable" or the like.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    first = text.split(None, 1)[0] if text.strip() else ""
    enhanced = first if _ENHANCED.fullmatch(first) else None
    if enhanced is not None:
        if enhanced in _NO_MAILBOX_CODES:
            return "mailbox"
    elif code in (550, 551, 553) and _NO_MAILBOX_WORDS.search(text):
        return "mailbox"
    if code == 530 or _SESSION_WORDS.search(text):
        return "session"
    return "recipient"


def _why(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text


# the run


@dataclass
class Job:
    due: Due
    language: str
    attempts: int = 0


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    sent: int
    failed: int
    pending: int
    elapsed: float


@dataclass
class SendReport:
    """What a run did. `skipped`: handled by an earlier run; `remaining`: not reached (--limit,
    or the run stopped; in a dry run, everyone due, since nothing was sent); `resent`: messages
    in flight when an earlier run died, sent again; `interrupted`: stopped by Ctrl-C;
    `in_doubt`: messages still in flight when an interrupted run gave up waiting for them (their
    rows say `sending`; the next run sends them again)."""

    period: str
    languages: list[str]
    sent: int = 0
    failed: int = 0
    pending: int = 0
    skipped: int = 0
    remaining: int = 0
    resent: int = 0
    bytes: int = 0
    elapsed: float = 0.0
    dry_run: bool = False
    test_to: str | None = None
    interrupted: bool = False
    in_doubt: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending and not self.interrupted

    @property
    def rate(self) -> float:
        handled = self.sent + self.failed + self.pending
        return handled / self.elapsed if self.elapsed > 0 else 0.0


class SendInterrupted(KeyboardInterrupt):
    """Ctrl-C during a send, after the workers recorded the messages in hand: a
    KeyboardInterrupt (whatever stops on Ctrl-C still stops) carrying the report so far."""

    def __init__(self, report: SendReport):
        super().__init__()
        self.report = report


class _Work:
    """The queue the workers share: due recipients read lazily, retries when their time comes."""

    def __init__(self, source: Iterator[Job]):
        self._cond = threading.Condition()
        self._source = source
        self._retries: list[tuple[float, int, Job]] = []
        self._sequence = itertools.count()
        self._busy = 0
        self._exhausted = False
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.taken = 0

    def take(self) -> Job | None:
        with self._cond:
            while True:
                if self.stopping.is_set():
                    return None
                now = time.monotonic()
                if self._retries and self._retries[0][0] <= now:
                    self._busy += 1
                    return heapq.heappop(self._retries)[2]
                if not self._exhausted:
                    job = next(self._source, None)
                    if job is not None:
                        self._busy += 1
                        self.taken += 1
                        return job
                    self._exhausted = True
                if not self._retries and not self._busy:
                    self._cond.notify_all()
                    return None
                timeout = self._retries[0][0] - now if self._retries else None
                self._cond.wait(timeout)

    def finish(self, job: Job, retry_after: float | None = None) -> None:
        with self._cond:
            self._busy -= 1
            if retry_after is not None and not self.stopping.is_set():
                due = time.monotonic() + retry_after
                heapq.heappush(self._retries, (due, next(self._sequence), job))
            self._cond.notify_all()

    def waiting(self) -> int:
        with self._cond:
            return len(self._retries)

    def busy(self) -> int:
        with self._cond:
            return self._busy

    def stop(self, error: BaseException | None = None) -> None:
        with self._cond:
            if error is not None and self.error is None:
                self.error = error
            self.stopping.set()
            self._cond.notify_all()


class _Pacer:
    """At most `rate` messages per second over all connections."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self, stopping: threading.Event) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            stopping.wait(slot - now)


@dataclass(frozen=True)
class _Refusal:
    """A permanent refusal held back until the server shows it takes mail from us."""

    email: str
    failure: PermanentFailure


class _Run:
    def __init__(
        self,
        *,
        period: str,
        issues: dict[str, IssueMessages],
        ledger: Ledger,
        mailing_list: MailingList,
        target: SmtpTarget,
        envelope_from: str,
        source: Iterator[Job],
        connections: int,
        rate: float | None,
        max_attempts: int,
        retry_delay: float,
        report: SendReport,
        accepted_before: bool = False,
    ):
        self.period = period
        self.issues = issues
        self.ledger = ledger
        self.mailing_list = mailing_list
        self.target = target
        self.envelope_from = envelope_from
        self.connections = connections
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.work = _Work(source)
        self.pacer = _Pacer(rate)
        self.report = report
        self._lock = threading.Lock()
        self._held: list[_Refusal] = []
        """Permanent refusals since the last accepted message, recorded `pending` for now."""
        self._accepted = accepted_before
        self._active = 0
        self._local_hostname = socket.getfqdn()

    def execute(self, progress: Callable[[Progress], None] | None, total: int) -> None:
        """Run the workers to the end. On Ctrl-C each finishes and records the message in
        hand; the report then says `interrupted` (and how many messages are still in doubt
        if a worker did not finish in time), and `send_issue` raises SendInterrupted."""
        started = time.monotonic()
        self._active = self.connections
        for index in range(self.connections):
            threading.Thread(target=self._worker, name=f"send-{index}", daemon=True).start()
        try:
            while self._running():
                time.sleep(0.1)
                if progress:
                    progress(self._progress(total, started))
        except KeyboardInterrupt:
            self.report.interrupted = True
            self.work.stop()
            deadline = time.monotonic() + self.target.timeout + 5
            while self._running() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.report.in_doubt = self.work.busy()
        finally:
            self.report.elapsed = time.monotonic() - started
            self.report.pending += self.work.waiting()
        if self.work.error is None and not self.report.interrupted:
            self._judge_held_at_end()
        else:
            self._leave_held_pending()
        if progress:
            progress(self._progress(total, started))
        if self.work.error is not None:
            error = self.work.error
            if isinstance(error, NewsletterError):
                r = self.report
                done = (
                    f"{r.sent} sent, {r.failed} failed before it stopped"
                    if r.sent or r.failed
                    else "nothing was sent"
                )
                *first, last = error.problems
                message = f"{last.message}; {done}; the same command resumes the mailing"
                raise NewsletterError([*first, dataclasses.replace(last, message=message)])
            raise error

    def _progress(self, total: int, started: float) -> Progress:
        r = self.report
        with self._lock:
            done = r.sent + r.failed + r.pending + len(self._held)
            return Progress(done, total, r.sent, r.failed, r.pending, time.monotonic() - started)

    def _worker(self) -> None:
        connection = Connection(
            self.target,
            self.envelope_from,
            local_hostname=self._local_hostname,
            connect_attempts=self.max_attempts,
            retry_delay=self.retry_delay,
            stopping=self.work.stopping,
        )
        try:
            while (job := self.work.take()) is not None:
                self._attempt(connection, job)
        except BaseException as exc:
            self.work.stop(exc)
        finally:
            connection.close()
            with self._lock:
                self._active -= 1

    def _running(self) -> bool:
        """Whether a worker is still at work (a counter, not Thread.join, which a Ctrl-C can
        interrupt half-way)."""
        with self._lock:
            return self._active > 0

    def _attempt(self, connection: Connection, job: Job) -> None:
        due = job.due
        issue = self.issues[job.language]
        message_id = issue.message_id(due.email)
        data = issue.render(Recipient(due.email, due.name), message_id=message_id)
        try:
            connection.open()
        except BaseException:
            self.work.finish(job)
            raise
        self.pacer.wait(self.work.stopping)
        if self.work.stopping.is_set():  # stopped while waiting for its turn: not sent
            self.work.finish(job)
            return
        if not self.ledger.claim(self.period, due.email, job.language, message_id):
            with self._lock:  # settled by another run meanwhile (only without the lock)
                self.report.skipped += 1
            self.work.finish(job)
            return
        try:
            reply = connection.deliver(due.email, data)
        except NewsletterError as exc:
            self.ledger.settle(self.period, due.email, "pending", str(exc))
            with self._lock:
                self.report.pending += 1
            self.work.finish(job)
            raise
        except TemporaryFailure as exc:
            job.attempts += 1
            self.ledger.settle(self.period, due.email, "pending", exc.reply)
            if job.attempts < self.max_attempts:
                self.work.finish(job, retry_after=self.retry_delay * 2 ** (job.attempts - 1))
            else:
                with self._lock:
                    self.report.pending += 1
                    self.report.failures.append((due.email, f"pending: {exc.reply}"))
                self.work.finish(job)
            return
        except PermanentFailure as exc:
            try:
                self._refused(due.email, exc)
            finally:
                self.work.finish(job)
            return
        except BaseException:
            self.work.finish(job)
            raise
        self.ledger.settle(self.period, due.email, "sent", reply)
        with self._lock:
            self.report.sent += 1
            self.report.bytes += len(data)
            self._accepted = True
            held, self._held = self._held, []
        self._confirm(held)
        self.work.finish(job)

    def _refused(self, email: str, failure: PermanentFailure) -> None:
        """Hold a permanent refusal as `pending` until a later message is accepted (then it
        is confirmed `failed`); too many in a row stop the run, leaving them pending."""
        self.ledger.settle(self.period, email, "pending", failure.reply)
        with self._lock:
            self._held.append(_Refusal(email, failure))
            if len(self._held) < CONSECUTIVE_REFUSALS:
                return
            held, self._held = self._held, []  # out of reach of a later `_confirm`
            count = len(held)
            self.report.pending += count
            for refusal in held:
                self.report.failures.append((refusal.email, f"pending: {refusal.failure.reply}"))
        raise NewsletterError(
            Problem(
                f"the SMTP server {self.target} refused {count} recipients in a row "
                f"(last: {failure.reply}): it is refusing the mailing, not them, so they "
                "are left pending, not failed"
            )
        )

    def _confirm(self, held: list[_Refusal]) -> None:
        """Record held refusals as what they are: failed, and bounced when the mailbox does
        not exist."""
        for refusal in held:
            reply = refusal.failure.reply
            self.ledger.settle(self.period, refusal.email, "failed", reply)
            with self._lock:
                if refusal.failure.bounce:
                    self.mailing_list.set_status(refusal.email, "bounced", reply)
                self.report.failed += 1
                self.report.failures.append((refusal.email, reply))

    def _leave_held_pending(self) -> None:
        with self._lock:
            held, self._held = self._held, []
            self.report.pending += len(held)
            for refusal in held:
                self.report.failures.append((refusal.email, f"pending: {refusal.failure.reply}"))

    def _judge_held_at_end(self) -> None:
        """The refusals after the last accepted message, when the run ran out of recipients:
        failed if this issue's mailing has been accepted for anyone (now or in an earlier
        run); else only the ones whose mailbox clearly does not exist, the others are left
        pending with a warning (nothing shows the server takes this mailing at all)."""
        with self._lock:
            held, self._held = self._held, []
        if self._accepted:
            self._confirm(held)
            return
        self._confirm([r for r in held if r.failure.bounce])
        unsure = [r for r in held if not r.failure.bounce]
        if not unsure:
            return
        with self._lock:
            self.report.pending += len(unsure)
            for refusal in unsure:
                self.report.failures.append((refusal.email, f"pending: {refusal.failure.reply}"))
            self.report.warnings.append(
                Problem(
                    f"the SMTP server {self.target} accepted no message of this issue and "
                    f"refused {len(unsure)} recipient(s) (last: {unsure[-1].failure.reply}); "
                    "they are left pending in case it refuses the mailing rather than them"
                )
            )


def _letterhead(config: Config, language: str) -> Letterhead:
    identity, sender = config.newsletter, config.sender
    return Letterhead(
        sender_name=sender.name,
        sender_email=sender.email,
        reply_to=sender.reply_to,
        list_id=list_id(config),
        list_name=localized(identity.title, language, identity.default_language),
        unsubscribe_url=unsubscribe_url(config),
        unsubscribe_mailto=config.mailing.unsubscribe_mailto or sender.reply_to or sender.email,
    )


def list_id(config: Config) -> str:
    """The List-Id, which also scopes unsubscribe tokens (same rule as the build's)."""
    return config.newsletter.list_id or f"digest.{config.sender.email.rpartition('@')[2]}"


def unsubscribe_url(config: Config) -> str:
    return str(config.mailing.unsubscribe_url or f"{config.newsletter.website}unsubscribe/")


def view_url(config: Config, period: str, language: str) -> str:
    identity = config.newsletter
    return f"{identity.archive_url or identity.website}{period}/{language}/"


def compile_issues(
    project: Project,
    config: Config,
    period: str,
    languages: Sequence[str],
    secret: bytes,
    when: datetime,
) -> dict[str, IssueMessages]:
    """Each language's issue compiled for sending (NewsletterError if one is not built)."""
    locale_dirs = [d / "locales" for d in project.template_dirs()]
    default = config.newsletter.default_language
    issues = {}
    for language in languages:
        translator = load_translator(language, default, locale_dirs)
        issues[language] = load_issue(
            project.outbox_dir / period / language,
            letterhead=_letterhead(config, language),
            view_url=view_url(config, period, language),
            gettext=translator.gettext,
            secret=secret,
            when=when,
        )
    return issues


def send_issue(
    project: Project,
    period: Period | str,
    *,
    languages: Sequence[str] = (),
    dry_run: bool = False,
    test_to: str | None = None,
    limit: int | None = None,
    connections: int | None = None,
    rate: float | None = None,
    progress: Callable[[Progress], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> SendReport:
    """Send (or with `dry_run`, only build) the period's issue to every due subscriber.

    Raises NewsletterError for bad input, for an issue that is not built, for another send of
    the same issue running, and for a session the server refuses; SendInterrupted (a
    KeyboardInterrupt with the report so far) on Ctrl-C. Per-recipient outcomes are in the
    report (`ok` is False when anything failed or is left pending).
    """
    env = os.environ if env is None else env
    period = str(period)
    if dry_run and test_to is not None:
        raise NewsletterError(Problem("--dry-run and --test-to cannot be used together"))
    config = load_config(project.root)
    configured = list(config.newsletter.languages)
    default = config.newsletter.default_language
    selected = list(languages) or configured
    for language in selected:
        if language not in configured:
            raise NewsletterError(
                Problem(
                    f"language {language!r} is not in newsletter.languages "
                    f"({', '.join(configured)})",
                    project.config_path,
                )
            )
    _check_built(project, period, selected)
    report = SendReport(period, selected, dry_run=dry_run, test_to=test_to)
    if dry_run and not env.get(SECRET_VARIABLE):
        secret = b"dry-run placeholder secret"
        report.warnings.append(
            Problem(f"{SECRET_VARIABLE} is not set; the links of this dry run are not valid")
        )
    else:
        secret = secret_from_env(env)
    when = datetime.now(config.tz)
    envelope_from = config.mailing.return_path or config.sender.email

    if test_to is not None:
        target = smtp_target(config.smtp, env)
        return _send_test(project, config, period, selected, secret, when, target, test_to, report)

    with contextlib.ExitStack() as stack:
        target = None
        if not dry_run:
            target = smtp_target(config.smtp, env)
            stack.enter_context(send_lock(project.state_dir, period))
        ledger = stack.enter_context(Ledger(project.state_dir / DB_NAME))
        by_stored = ledger.due_languages(period)
        wanted: dict[str, int] = {}
        for stored, count in by_stored.items():
            language = effective_language(stored, configured, default)
            if language in selected:
                wanted[language] = wanted.get(language, 0) + count
        due_total = sum(wanted.values())
        total = due_total if limit is None else min(due_total, limit)
        done_before = ledger.counts(period, selected)
        report.skipped = skipped_before = done_before["sent"] + done_before["failed"]
        issues = compile_issues(project, config, period, sorted(wanted), secret, when)

        def jobs() -> Iterator[Job]:
            for due in ledger.due(period):
                language = effective_language(due.language, configured, default)
                if language in issues:  # (a subscriber added during the run may not be)
                    yield Job(due, language)

        source = itertools.islice(jobs(), limit)
        if target is None:
            _dry_run(source, issues, report)
            report.remaining = due_total  # nothing was sent: a real run still has them all
            return report

        mark_sent(project.outbox_dir / period, when)  # builds leave a sent issue alone
        mailing_list = stack.enter_context(MailingList(project.state_dir / DB_NAME))
        run = _Run(
            period=period,
            issues=issues,
            ledger=ledger,
            mailing_list=mailing_list,
            target=target,
            envelope_from=envelope_from,
            source=_counting_resends(source, report),
            connections=connections or config.mailing.connections,
            rate=rate if rate is not None else config.mailing.rate,
            max_attempts=config.mailing.max_attempts,
            retry_delay=config.mailing.retry_delay,
            report=report,
            accepted_before=done_before["sent"] > 0,
        )
        run.execute(progress, total)
        handled = report.sent + report.failed + report.pending + report.in_doubt
        report.remaining = max(0, due_total - handled - (report.skipped - skipped_before))
        if report.interrupted:
            raise SendInterrupted(report)
    return report


def _check_built(project: Project, period: str, languages: Sequence[str]) -> None:
    """Every selected language must be built before anything else is looked at: otherwise a
    run with nobody due would succeed without the issue existing."""
    try:
        shown = project.outbox_dir.relative_to(project.root)
    except ValueError:
        shown = project.outbox_dir
    missing = [
        language for language in languages if not is_built(project.outbox_dir / period / language)
    ]
    if missing:
        paths = " and ".join(str(shown / period / language) for language in missing)
        verb = "is" if len(missing) == 1 else "are"
        raise NewsletterError(
            Problem(f"{paths} {verb} not built; run `newsletter build --period {period}`")
        )


@contextlib.contextmanager
def send_lock(state_dir: Path, period: str) -> Iterator[None]:
    """Hold the lock of `period`'s send for the duration: a second `newsletter send` of the
    same issue fails at once, naming the process that holds it. An exclusive `flock` on a file
    in the state directory, so a run that dies (even by SIGKILL) releases it with its process.
    """
    if fcntl is None:  # pragma: no cover - not POSIX
        yield
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"send-{period}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            raise NewsletterError(
                Problem(
                    f"another send of {period} is running (pid {holder}); "
                    "wait for it to end, or stop it, before sending again"
                )
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def _counting_resends(source: Iterator[Job], report: SendReport) -> Iterator[Job]:
    for job in source:
        if job.due.state == "sending":
            report.resent += 1
        yield job


def _dry_run(source: Iterator[Job], issues: dict[str, IssueMessages], report: SendReport) -> None:
    """Build every message that would go out, send none (`report.sent` counts those built)."""
    started = time.monotonic()
    for job in source:
        issue = issues[job.language]
        data = issue.render(Recipient(job.due.email, job.due.name))
        report.sent += 1
        report.bytes += len(data)
    report.elapsed = time.monotonic() - started


def _send_test(
    project: Project,
    config: Config,
    period: str,
    languages: list[str],
    secret: bytes,
    when: datetime,
    target: SmtpTarget,
    address: str,
    report: SendReport,
) -> SendReport:
    """One copy per language to `address`; nothing goes in the ledger."""
    try:
        email = normalise_email(address)
    except InvalidAddress as exc:
        raise NewsletterError(Problem(f"--test-to {address!r} is not valid: {exc}")) from None
    issues = compile_issues(project, config, period, languages, secret, when)
    connection = Connection(
        target,
        config.mailing.return_path or config.sender.email,
        connect_attempts=config.mailing.max_attempts,
        retry_delay=config.mailing.retry_delay,
    )
    started = time.monotonic()
    try:
        for language, issue in issues.items():
            domain = config.sender.email.rpartition("@")[2]
            data = issue.render(Recipient(email), message_id=make_msgid("test", domain))
            try:
                connection.deliver(email, data)
            except (TemporaryFailure, PermanentFailure) as exc:
                raise NewsletterError(
                    Problem(f"the {language} test copy to {email} was refused: {exc.reply}")
                ) from None
            report.sent += 1
            report.bytes += len(data)
    finally:
        connection.close()
    report.elapsed = time.monotonic() - started
    return report


def mailing_db(project: Project) -> Path:
    return project.state_dir / DB_NAME
