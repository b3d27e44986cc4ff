"""`newsletter send`: deliver one built issue to every subscriber, once, over SMTP.

Each worker thread owns one SMTP connection, reused for message after message and reopened when
dropped. For each recipient a worker renders the message, claims it in the ledger, sends it, and
records the outcome before it takes the next one; so after a crash at most one message per
connection has an unknown fate. Temporary failures go back in the queue with a growing delay and
stay `pending` for the next run once the attempts are used up; a permanent refusal of one
recipient is recorded and the rest go on; a refusal of the whole session stops the run.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import os
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
from newsletter.messages import IssueMessages, Letterhead, Recipient, load_issue
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

PASSWORD_VARIABLE = "NEWSLETTER_SMTP_PASSWORD"
DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}
CONSECUTIVE_REFUSALS = 25
"""A server that refuses this many messages in a row refuses the mailing, not the recipients."""


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
            raise PermanentFailure(reply, bounce=_is_bounce(code, text))
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


def _is_bounce(code: int, text: bytes) -> bool:
    """A mailbox that does not exist (RFC 3463 class 5.1.x), as opposed to a policy refusal."""
    enhanced = text.split(b" ", 1)[0]
    if enhanced[:2] == b"5." and enhanced.count(b".") == 2:
        return enhanced.startswith(b"5.1.")
    return code in (550, 551, 553)


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
    or the run stopped); `resent`: messages in flight when an earlier run died, sent again."""

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
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending

    @property
    def rate(self) -> float:
        handled = self.sent + self.failed + self.pending
        return handled / self.elapsed if self.elapsed > 0 else 0.0


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
        self._refusals = 0
        self._active = 0
        self._local_hostname = socket.getfqdn()

    def execute(self, progress: Callable[[Progress], None] | None, total: int) -> None:
        """Run the workers to the end. On Ctrl-C each finishes and records the message in
        hand, then KeyboardInterrupt goes on up."""
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
            self.work.stop()
            deadline = time.monotonic() + self.target.timeout + 5
            while self._running() and time.monotonic() < deadline:
                time.sleep(0.05)
            raise
        finally:
            self.report.elapsed = time.monotonic() - started
            self.report.pending += self.work.waiting()
        if progress:
            progress(self._progress(total, started))
        if self.work.error is not None:
            error = self.work.error
            if isinstance(error, NewsletterError):
                done = f"{self.report.sent} sent, {self.report.failed} failed before it stopped"
                raise NewsletterError(
                    [*error.problems, Problem(f"{done}; the same command resumes the mailing")]
                )
            raise error

    def _progress(self, total: int, started: float) -> Progress:
        r = self.report
        with self._lock:
            done = r.sent + r.failed + r.pending
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
        self.pacer.wait(self.work.stopping)
        try:
            connection.open()
        except BaseException:
            self.work.finish(job)
            raise
        self.ledger.claim(self.period, due.email, job.language, message_id)
        try:
            reply = connection.deliver(due.email, data)
        except NewsletterError as exc:
            self.ledger.settle(self.period, due.email, "pending", str(exc))
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
            self.ledger.settle(self.period, due.email, "failed", exc.reply)
            if exc.bounce:
                with self._lock:
                    self.mailing_list.set_status(due.email, "bounced", exc.reply)
            with self._lock:
                self.report.failed += 1
                self.report.failures.append((due.email, exc.reply))
                self._refusals = self._refusals + 1 if exc.content else 0
                refusals = self._refusals
            self.work.finish(job)
            if refusals >= CONSECUTIVE_REFUSALS:
                raise NewsletterError(
                    Problem(
                        f"the SMTP server {self.target} refused {refusals} messages in a row "
                        f"(last: {exc.reply}); stopping"
                    )
                ) from None
            return
        except BaseException:
            self.work.finish(job)
            raise
        self.ledger.settle(self.period, due.email, "sent", reply)
        with self._lock:
            self.report.sent += 1
            self.report.bytes += len(data)
            self._refusals = 0
        self.work.finish(job)


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

    Raises NewsletterError for bad input and for a session the server refuses; per-recipient
    outcomes are in the report (`ok` is False when anything failed or is left pending).
    """
    env = os.environ if env is None else env
    period = str(period)
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
    report = SendReport(period, selected, dry_run=dry_run, test_to=test_to)
    if dry_run and not env.get(SECRET_VARIABLE):
        secret = b"dry-run placeholder secret"
        report.warnings.append(
            Problem(f"{SECRET_VARIABLE} is not set; the links of this dry run are not valid")
        )
    else:
        secret = secret_from_env(env)
    target = None if dry_run else smtp_target(config.smtp, env)
    when = datetime.now(config.tz)
    envelope_from = config.mailing.return_path or config.sender.email

    if test_to is not None:
        assert target is not None
        return _send_test(project, config, period, selected, secret, when, target, test_to, report)

    with Ledger(project.state_dir / DB_NAME) as ledger:
        by_stored = ledger.due_languages(period)
        wanted: dict[str, int] = {}
        for stored, count in by_stored.items():
            language = effective_language(stored, configured, default)
            if language in selected:
                wanted[language] = wanted.get(language, 0) + count
        total = sum(wanted.values())
        if limit is not None:
            total = min(total, limit)
        done_before = ledger.counts(period, selected)
        report.skipped = done_before["sent"] + done_before["failed"]
        issues = compile_issues(project, config, period, sorted(wanted), secret, when)

        def jobs() -> Iterator[Job]:
            for due in ledger.due(period):
                language = effective_language(due.language, configured, default)
                if language in issues:  # (a subscriber added during the run may not be)
                    yield Job(due, language)

        source = itertools.islice(jobs(), limit)
        if dry_run:
            _dry_run(source, issues, report)
            report.remaining = sum(wanted.values()) - report.sent
            return report

        assert target is not None
        with MailingList(project.state_dir / DB_NAME) as mailing_list:
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
            )
            run.execute(progress, total)
        report.remaining = sum(wanted.values()) - run.work.taken
    return report


def _counting_resends(source: Iterator[Job], report: SendReport) -> Iterator[Job]:
    for job in source:
        if job.due.state == "sending":
            report.resent += 1
        yield job


def _dry_run(source: Iterator[Job], issues: dict[str, IssueMessages], report: SendReport) -> None:
    """Build every message that would go out, send none."""
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
