"""`newsletter send` against a real SMTP server (aiosmtpd on 127.0.0.1), with and without faults."""

from __future__ import annotations

import os
import pty
import sqlite3
import ssl
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import console_script, run_script
from smtpserver import (
    FAST_RETRIES,
    NOW,
    PERIOD,
    SECRET,
    Faults,
    SmtpServer,
    built_project,
    self_signed_certificate,
)

from newsletter import tokens
from newsletter.cli import cli
from newsletter.cli.mailing import format_progress
from newsletter.config import SmtpSettings, load_config
from newsletter.errors import NewsletterError
from newsletter.ledger import Ledger
from newsletter.project import Project
from newsletter.send import (
    CONSECUTIVE_REFUSALS,
    Progress,
    list_id,
    rcpt_refusal,
    send_issue,
    send_lock,
    smtp_target,
)
from newsletter.subscribers import MailingList


@pytest.fixture
def mailing_project(tmp_path: Path) -> Project:
    return built_project(tmp_path / "project")


def _subscribe(project: Project, rows: list[tuple[str, str, str]]) -> None:
    with MailingList(project.state_dir / "mailing.sqlite3") as mailing_list:
        for email, name, language in rows:
            mailing_list.add(email, name=name, language=language)


def _people(count: int, *, domain: str = "example.org") -> list[tuple[str, str, str]]:
    return [
        (f"reader{i:04d}@{domain}", f"Reader {i}", "ja" if i % 3 == 0 else "en")
        for i in range(count)
    ]


def _ledger(project: Project) -> dict[str, str]:
    with sqlite3.connect(project.state_dir / "mailing.sqlite3") as db:
        try:
            rows = db.execute("SELECT email, state FROM deliveries WHERE issue = ?", (PERIOD,))
        except sqlite3.OperationalError:  # no send has created the ledger yet
            return {}
        return dict(rows)


# the happy path


def test_every_subscriber_gets_one_message_with_their_own_parts(mailing_project: Project) -> None:
    _subscribe(
        mailing_project,
        [
            ("jane@example.org", "Jane Doe", "en"),
            ("taro@example.jp", "佐藤 太郎", "ja"),
            ("anon@example.org", "", ""),
            ("gone@example.org", "Gone", "en"),
            ("pt@example.org", "Zé", "pt-BR"),
        ],
    )
    with MailingList(mailing_project.state_dir / "mailing.sqlite3") as mailing_list:
        mailing_list.remove("gone@example.org")
    with SmtpServer() as server:
        report = send_issue(mailing_project, PERIOD, env=server.env())
        messages = server.recorder.parsed()
    assert (report.sent, report.failed, report.pending, report.ok) == (4, 0, 0, True)
    assert server.counts == Counter(
        {"jane@example.org": 1, "taro@example.jp": 1, "anon@example.org": 1, "pt@example.org": 1}
    )
    config = load_config(mailing_project.root)
    by_address = {m["To"].addresses[0].addr_spec: m for m in messages}
    expected = {
        "jane@example.org": ("en", "Dear Jane Doe,"),
        "taro@example.jp": ("ja", "佐藤 太郎 様"),
        "anon@example.org": ("en", "Dear reader,"),
        "pt@example.org": ("en", "Dear Zé,"),
    }
    message_ids = set()
    for address, (language, greeting) in expected.items():
        message = by_address[address]
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert greeting in text and greeting in html
        assert message["Content-Language"] == language
        token = tokens.sign(SECRET.encode(), list_id(config), address)
        link = f"https://digest.eu-japan-rni.example.org/unsubscribe/?token={token}"
        assert link in text and link in html
        assert message["List-Unsubscribe"].startswith(f"<{link}>, <mailto:")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert f"/archive/{PERIOD}/{language}/" in text
        assert message["From"].addresses[0].addr_spec == "digest@eu-japan-rni.example.org"
        assert message["Date"] is not None and message["List-Id"] is not None
        message_ids.add(message["Message-ID"])
    assert len(message_ids) == 4
    assert set(_ledger(mailing_project).values()) == {"sent"}
    assert all(m[0] == "digest@eu-japan-rni.example.org" for m in server.recorder.messages)


def test_a_second_run_sends_nothing_and_new_subscribers_only_once(
    mailing_project: Project,
) -> None:
    _subscribe(mailing_project, _people(10))
    with SmtpServer() as server:
        first = send_issue(mailing_project, PERIOD, env=server.env())
        second = send_issue(mailing_project, PERIOD, env=server.env())
        _subscribe(mailing_project, [("late@example.org", "Late", "en")])
        third = send_issue(mailing_project, PERIOD, env=server.env())
    assert (first.sent, second.sent, second.skipped, third.sent, third.skipped) == (
        10,
        0,
        10,
        1,
        10,
    )
    assert set(server.counts.values()) == {1} and len(server.counts) == 11


def test_limit_lang_connections_and_rate(mailing_project: Project) -> None:
    _subscribe(mailing_project, _people(30))
    with SmtpServer() as server:
        recorder = server.recorder
        japanese = send_issue(mailing_project, PERIOD, languages=["ja"], env=server.env())
        assert japanese.sent == 10
        assert recorder.sessions == 1  # ten messages, one connection
        limited = send_issue(mailing_project, PERIOD, limit=5, connections=3, env=server.env())
        assert (limited.sent, limited.remaining, limited.ok) == (5, 15, True)
        assert 2 <= recorder.sessions <= 1 + 3
        before = recorder.sessions
        rest = send_issue(mailing_project, PERIOD, connections=3, rate=200, env=server.env())
        assert rest.sent == 15
        assert 1 <= recorder.sessions - before <= 3
    assert len(server.counts) == 30 and set(server.counts.values()) == {1}
    assert recorder.drops == 0 and recorder.connections == recorder.sessions


def test_one_connection_is_reused_and_reopened_only_after_a_drop(mailing_project: Project) -> None:
    people = _people(20)
    faults = Faults(mail_421_at={5, 12}, drop_in_data={people[15][0]})
    _subscribe(mailing_project, people)
    with SmtpServer(faults) as server:
        report = send_issue(mailing_project, PERIOD, env=server.env())
        recorder = server.recorder
        assert (report.sent, report.ok) == (20, True)
        assert recorder.drops == 3
        assert recorder.sessions == 1 + recorder.drops
    assert set(server.counts.values()) == {1} and len(server.counts) == 20


def test_rate_limits_the_pace_of_the_whole_run(
    mailing_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N messages at R per second cannot all be accepted in less than (N - 1) / R seconds
    after the first connection (a lower bound on behaviour, not a performance timing)."""
    count, rate = 6, 20.0
    _subscribe(mailing_project, _people(count))
    with SmtpServer() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        result = CliRunner().invoke(
            cli,
            ["-C", str(mailing_project.root), "send", PERIOD, "--rate", str(rate)],
            catch_exceptions=False,
        )
        recorder = server.recorder
    assert result.exit_code == 0, result.output
    assert len(recorder.accepted_at) == count
    assert recorder.accepted_at[-1] - recorder.connected_at[0] >= (count - 1) / rate


def test_dry_run_builds_everything_and_sends_nothing(mailing_project: Project) -> None:
    _subscribe(mailing_project, _people(12))
    env = {"NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": "9"}
    report = send_issue(mailing_project, PERIOD, dry_run=True, env=env)
    assert (report.sent, report.dry_run) == (12, True)
    assert report.bytes > 12 * 40_000
    assert any("NEWSLETTER_SECRET" in str(w) for w in report.warnings)
    assert _ledger(mailing_project) == {}


def test_the_dry_run_summary_counts_the_due_and_leaves_them_remaining(
    mailing_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    _subscribe(mailing_project, [*_people(3), ("gone@example.org", "Gone", "en")])
    with MailingList(mailing_project.state_dir / "mailing.sqlite3") as mailing_list:
        mailing_list.remove("gone@example.org")

    def run(*args: str):
        return CliRunner().invoke(cli, ["-C", str(mailing_project.root), "send", *args])

    with SmtpServer() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        dry = run(PERIOD, "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert f"dry run {PERIOD} (en, ja): 3 messages built, " in dry.output
        assert "skipped 0 (done earlier), remaining 3 (still to send)" in dry.output
        limited = run(PERIOD, "--dry-run", "--limit", "1")
        assert ": 1 message built, " in limited.output and "remaining 3 " in limited.output
        assert server.counts == Counter()
        done = run(PERIOD, "--lang", "en", "--limit", "1")
        assert done.exit_code == 0 and "sent 1," in done.output
        after = run(PERIOD, "--dry-run")
        assert ": 2 messages built, " in after.output
        assert "skipped 1 (done earlier), remaining 2 (still to send)" in after.output
        real = run(PERIOD)
        assert "sent 2, failed 0, pending 0, skipped 1" in real.output
    assert sum(server.counts.values()) == 3 and "gone@example.org" not in server.counts


def test_test_copy_is_sent_per_language_and_not_recorded(mailing_project: Project) -> None:
    _subscribe(mailing_project, _people(3))
    with SmtpServer() as server:
        report = send_issue(mailing_project, PERIOD, test_to="editor@example.org", env=server.env())
        assert report.sent == 2
        assert server.counts == Counter({"editor@example.org": 2})
        languages = {m["Content-Language"] for m in server.recorder.parsed()}
        assert languages == {"en", "ja"}
        assert _ledger(mailing_project) == {}
        real = send_issue(mailing_project, PERIOD, env=server.env())
    assert real.sent == 3


def test_an_issue_that_is_not_built_is_an_error(mailing_project: Project) -> None:
    _subscribe(mailing_project, _people(2))
    with SmtpServer() as server, pytest.raises(NewsletterError, match="newsletter build"):
        send_issue(mailing_project, "2026-12", env=server.env())


def test_login_over_the_session(mailing_project: Project) -> None:
    _subscribe(mailing_project, _people(2))
    with SmtpServer(credentials=("mailer", "s3cret-pass")) as server:
        env = server.env(NEWSLETTER_SMTP_USER="mailer", NEWSLETTER_SMTP_PASSWORD="s3cret-pass")
        report = send_issue(mailing_project, PERIOD, env=env)
        assert report.sent == 2 and "mailer" in server.recorder.logins
        env["NEWSLETTER_SMTP_PASSWORD"] = "wrong-password"
        _subscribe(mailing_project, [("more@example.org", "", "en")])
        with pytest.raises(NewsletterError) as caught:
            send_issue(mailing_project, PERIOD, env=env)
    message = str(caught.value)
    assert "refused the login" in message and "wrong-password" not in message


# faults


def test_faults_end_with_every_deliverable_recipient_delivered_once(tmp_path: Path) -> None:
    # Five tries: a recipient with a fault of its own can also meet all three 421s to MAIL.
    mailing_project = built_project(
        tmp_path / "project",
        extra_config=FAST_RETRIES.replace("max_attempts = 3", "max_attempts = 5"),
    )
    people = _people(40)
    addresses = [p[0] for p in people]
    faults = Faults(
        refuse_rcpt={addresses[3], addresses[17]},
        refuse_content={addresses[5]},
        greylist={addresses[1], addresses[8], addresses[30]},
        always_451={addresses[11]},
        close_after_data={addresses[2], addresses[20]},
        drop_in_data={addresses[4], addresses[25]},
        slow_rcpt={addresses[6]: 0.3, addresses[7]: 8.0},
        mail_421_at={13, 26, 39},
    )
    _subscribe(mailing_project, people)
    with SmtpServer(faults) as server:
        report = send_issue(mailing_project, PERIOD, connections=2, env=server.env())
        counts = Counter(server.counts)
        recorder = server.recorder
    # Two connections, reopened only after the server's drops and the one reply (8 s) that
    # outlasted the client's 5 s timeout; never more.
    reconnects = recorder.drops + 1
    assert recorder.drops == 3 + 2 + 2  # the 421s to MAIL, after DATA, and the cuts in DATA
    assert recorder.sessions <= 2 + reconnects
    undeliverable = {addresses[3], addresses[17], addresses[5], addresses[11]}
    assert all(counts[a] == 1 for a in addresses if a not in undeliverable)
    assert all(counts[a] == 0 for a in undeliverable)
    assert (report.sent, report.failed, report.pending) == (36, 3, 1)
    assert not report.ok
    failures = dict(report.failures)
    assert failures[addresses[3]].startswith("550 5.1.1")
    assert failures[addresses[5]].startswith("554")
    assert failures[addresses[11]].startswith("pending: 451")
    ledger = _ledger(mailing_project)
    assert ledger[addresses[3]] == "failed" and ledger[addresses[11]] == "pending"
    with MailingList(mailing_project.state_dir / "mailing.sqlite3") as mailing_list:
        bounced = mailing_list.get(addresses[3])
        refused = mailing_list.get(addresses[5])
    assert bounced is not None and bounced.status == "bounced"
    assert bounced.status_reason.startswith("550 5.1.1")
    assert refused is not None and refused.status == "subscribed"


def test_pending_recipients_are_sent_by_the_next_run(mailing_project: Project) -> None:
    people = _people(6)
    stuck = people[2][0]
    _subscribe(mailing_project, people)
    with SmtpServer(Faults(always_451={stuck})) as server:
        first = send_issue(mailing_project, PERIOD, env=server.env())
        assert (first.sent, first.pending) == (5, 1)
        server.recorder.faults.always_451.clear()
        second = send_issue(mailing_project, PERIOD, env=server.env())
    assert (second.sent, second.pending, second.skipped, second.ok) == (1, 0, 5, True)
    assert set(server.counts.values()) == {1} and len(server.counts) == 6


def test_a_refused_session_stops_with_a_clear_error(mailing_project: Project) -> None:
    _subscribe(mailing_project, _people(5))
    with SmtpServer(Faults(refuse_mail=True)) as server:
        with pytest.raises(NewsletterError) as caught:
            send_issue(mailing_project, PERIOD, env=server.env())
        assert not server.counts
    assert "refused the sender: 550 5.7.1" in str(caught.value)
    assert "resumes" in str(caught.value)
    assert "sent" not in set(_ledger(mailing_project).values())


def test_an_unreachable_server_is_an_error(mailing_project: Project) -> None:
    _subscribe(mailing_project, _people(1))
    with SmtpServer() as server:
        env = server.env()
    with pytest.raises(NewsletterError, match="cannot connect"):
        send_issue(mailing_project, PERIOD, env=env)


# settings and secrets


def test_environment_overrides_the_smtp_table() -> None:
    settings = SmtpSettings(host="mail.example.org", security="starttls", user="u")
    target = smtp_target(settings, {"NEWSLETTER_SMTP_PASSWORD": "pw"})
    assert (target.host, target.port, target.security, target.user) == (
        "mail.example.org",
        587,
        "starttls",
        "u",
    )
    env = {
        "NEWSLETTER_SMTP_HOST": "relay.example.org",
        "NEWSLETTER_SMTP_PORT": "2525",
        "NEWSLETTER_SMTP_SECURITY": "ssl",
        "NEWSLETTER_SMTP_USER": "other",
        "NEWSLETTER_SMTP_PASSWORD": "pw",
    }
    target = smtp_target(settings, env)
    assert (target.host, target.port, target.security, target.user) == (
        "relay.example.org",
        2525,
        "ssl",
        "other",
    )
    assert "pw" not in repr(target) and "pw" not in str(target)
    assert smtp_target(SmtpSettings(security="ssl"), {}).port == 465


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NEWSLETTER_SMTP_SECURITY": "tls"}, "none, starttls or ssl"),
        ({"NEWSLETTER_SMTP_PORT": "smtp"}, "port number"),
        ({"NEWSLETTER_SMTP_USER": "u"}, "NEWSLETTER_SMTP_PASSWORD is not"),
        (
            {"NEWSLETTER_SMTP_HOST": "mail.example.org", "NEWSLETTER_SMTP_PASSWORD": "pw"},
            "unencrypted",
        ),
    ],
)
def test_bad_smtp_settings_are_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(NewsletterError, match=message):
        smtp_target(SmtpSettings(), env)


def test_secrets_never_reach_the_outbox_ledger_or_output(
    mailing_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    _subscribe(mailing_project, _people(4))
    password = "very-secret-smtp-password"
    with SmtpServer(Faults(refuse_rcpt={"reader0001@example.org"})) as server:
        for name, value in server.env(NEWSLETTER_SMTP_PASSWORD=password).items():
            monkeypatch.setenv(name, value)
        result = CliRunner().invoke(
            cli, ["-C", str(mailing_project.root), "-v", "send", PERIOD], catch_exceptions=False
        )
    assert result.exit_code == 1, result.output
    assert "failed 1" in result.output
    for secret in (SECRET, password):
        assert secret not in result.output
        for path in [*mailing_project.outbox_dir.rglob("*"), *mailing_project.state_dir.rglob("*")]:
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def test_cli_send_exit_codes_and_summary(
    mailing_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    _subscribe(mailing_project, _people(3))

    def run(*args: str):
        return CliRunner().invoke(cli, ["-C", str(mailing_project.root), "send", *args])

    assert run("2026-13").exit_code == 2
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    missing = run(PERIOD)
    assert missing.exit_code == 1 and "NEWSLETTER_SECRET is not set" in missing.output
    with SmtpServer() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        dry = run(PERIOD, "--dry-run")
        assert dry.exit_code == 0 and "3 messages built" in dry.output
        done = run(PERIOD, "--lang", "en")
        assert done.exit_code == 0 and "sent 2, failed 0, pending 0, skipped 0" in done.output
        again = run(PERIOD)
        assert again.exit_code == 0 and "sent 1, failed 0, pending 0, skipped 2" in again.output
        test = run(PERIOD, "--test-to", "me@example.org", "--lang", "ja")
        assert test.exit_code == 0 and "1 copy sent to me@example.org" in test.output
        unknown = run(PERIOD, "--lang", "fr")
        assert unknown.exit_code == 1 and "not in newsletter.languages" in unknown.output
    assert sum(server.counts.values()) == 4


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_with_certificate_verification(
    mailing_project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, security: str
) -> None:
    files = self_signed_certificate(tmp_path)
    if files is None:
        pytest.skip("no openssl command to make a certificate")
    cert, key = files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    _subscribe(mailing_project, _people(3))
    tls = {"starttls": context} if security == "starttls" else {"implicit_tls": context}
    with SmtpServer(**tls) as server:
        env = server.env(NEWSLETTER_SMTP_SECURITY=security)
        with pytest.raises(NewsletterError, match=r"TLS|certificate|cannot connect"):
            send_issue(mailing_project, PERIOD, env=env)  # the certificate is not trusted yet
        assert not server.counts
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        report = send_issue(mailing_project, PERIOD, env=env)
    assert report.sent == 3 and len(server.counts) == 3


# refusals of the whole mailing are not charged to the recipients


def _statuses(project: Project) -> Counter[str]:
    with MailingList(project.state_dir / "mailing.sqlite3") as mailing_list:
        return Counter(s.status for s in mailing_list.subscribers())


@pytest.mark.parametrize(
    "reply", ["550 relay not permitted", "554 5.7.1 <x@example.org>: Relay access denied"]
)
def test_relay_denied_stops_at_once_and_the_fixed_relay_delivers_to_everyone(
    mailing_project: Project, monkeypatch: pytest.MonkeyPatch, reply: str
) -> None:
    _subscribe(mailing_project, _people(30))
    with SmtpServer(Faults(rcpt_reply=reply)) as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        refused = CliRunner().invoke(cli, ["-C", str(mailing_project.root), "send", PERIOD])
        assert refused.exit_code == 1
        errors = [line for line in refused.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and refused.output.strip() == errors[0], refused.output
        assert "refuses this mailing" in errors[0] and reply.split(" ", 1)[1] in errors[0]
        assert "resumes" in errors[0]
        assert server.recorder.rcpts == 1  # stopped at the first refusal
        assert set(_ledger(mailing_project).values()) <= {"pending"}
        assert _statuses(mailing_project) == Counter({"subscribed": 30})

        server.recorder.faults.rcpt_reply = None  # the operator fixes the relay
        fixed = CliRunner().invoke(cli, ["-C", str(mailing_project.root), "send", PERIOD])
    assert fixed.exit_code == 0, fixed.output
    assert "sent 30, failed 0, pending 0, skipped 0" in fixed.output
    assert len(server.counts) == 30 and set(server.counts.values()) == {1}


def test_refusals_of_everyone_in_a_row_are_left_pending(mailing_project: Project) -> None:
    people = _people(30)
    _subscribe(mailing_project, people)
    reply = "550 5.7.1 Recipient address rejected: Access denied"
    with SmtpServer(Faults(rcpt_reply=reply)) as server:
        with pytest.raises(NewsletterError) as caught:
            send_issue(mailing_project, PERIOD, env=server.env())
        message = str(caught.value)
        assert f"refused {CONSECUTIVE_REFUSALS} recipients in a row" in message
        assert "left pending" in message and "\n" not in message
        assert server.recorder.rcpts == CONSECUTIVE_REFUSALS
        ledger = _ledger(mailing_project)
        assert len(ledger) == CONSECUTIVE_REFUSALS and set(ledger.values()) == {"pending"}
        assert _statuses(mailing_project) == Counter({"subscribed": 30})

        server.recorder.faults.rcpt_reply = None
        report = send_issue(mailing_project, PERIOD, env=server.env())
    assert (report.sent, report.failed, report.pending) == (30, 0, 0)
    assert set(server.counts.values()) == {1} and len(server.counts) == 30


def test_one_refused_recipient_fails_alone_and_bounces_only_when_the_mailbox_is_gone(
    mailing_project: Project,
) -> None:
    people = _people(12)
    addresses = [p[0] for p in people]
    replies = {
        addresses[1]: "550 5.7.1 Recipient not authorized to receive from this sender",
        addresses[3]: "550 Requested action not taken: mailbox unavailable",
        addresses[5]: "550 5.1.1 <x>: Recipient address rejected: User unknown in relay "
        "recipient table",
        addresses[7]: "553 sorry, that domain isn't in my list of allowed rcpthosts",
    }
    _subscribe(mailing_project, people)
    with SmtpServer(Faults(rcpt_replies=replies)) as server:
        report = send_issue(mailing_project, PERIOD, env=server.env())
    assert (report.sent, report.failed, report.pending) == (8, 4, 0)
    assert dict(report.failures) == replies
    ledger = _ledger(mailing_project)
    assert {a for a, state in ledger.items() if state == "failed"} == set(replies)
    with MailingList(mailing_project.state_dir / "mailing.sqlite3") as mailing_list:
        status = {a: mailing_list.get(a).status for a in replies}  # type: ignore[union-attr]
    assert status == {
        addresses[1]: "subscribed",
        addresses[3]: "bounced",
        addresses[5]: "bounced",
        addresses[7]: "subscribed",
    }


def test_when_nothing_is_ever_accepted_only_clear_bounces_are_final(
    mailing_project: Project,
) -> None:
    people = _people(3)
    addresses = [p[0] for p in people]
    replies = {
        addresses[0]: "550 5.1.1 no such user",
        addresses[1]: "550 5.7.1 access denied",
        addresses[2]: "554 refused",
    }
    _subscribe(mailing_project, people)
    with SmtpServer(Faults(rcpt_replies=replies)) as server:
        report = send_issue(mailing_project, PERIOD, env=server.env())
    assert (report.sent, report.failed, report.pending) == (0, 1, 2)
    assert any("accepted no message" in str(w) for w in report.warnings)
    ledger = _ledger(mailing_project)
    assert ledger == {addresses[0]: "failed", addresses[1]: "pending", addresses[2]: "pending"}


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (550, "5.1.1 no such user", "mailbox"),
        (550, "5.1.0 Address rejected", "mailbox"),
        (550, "5.1.1 <a@b>: Recipient address rejected: User unknown in relay recipient table",
         "mailbox"),
        (550, "Requested action not taken: mailbox unavailable", "mailbox"),
        (550, "No such user here", "mailbox"),
        (553, "user unknown", "mailbox"),
        (550, "relay not permitted", "session"),
        (554, "5.7.1 <a@b>: Relay access denied", "session"),
        (550, "5.7.1 Unable to relay", "session"),
        (530, "5.7.0 Authentication required", "session"),
        (550, "5.7.1 Recipient not authorized", "recipient"),
        (550, "5.2.1 mailbox disabled", "recipient"),
        (552, "5.2.2 mailbox full", "recipient"),
        (550, "5.7.1 mailbox unavailable", "recipient"),
        (550, "Administrative prohibition", "recipient"),
        (554, "Transaction failed", "recipient"),
    ],
)  # fmt: skip
def test_rcpt_refusals_are_classified_conservatively(code: int, text: str, kind: str) -> None:
    assert rcpt_refusal(code, text.encode()) == kind


# one send of an issue at a time


def test_a_final_ledger_row_cannot_be_claimed_again(tmp_path: Path) -> None:
    with Ledger(tmp_path / "mailing.sqlite3") as ledger:
        assert ledger.claim(PERIOD, "a@example.org", "en", "<1@x>")
        ledger.settle(PERIOD, "a@example.org", "sent", "250 ok")
        assert not ledger.claim(PERIOD, "a@example.org", "en", "<2@x>")
        ledger.settle(PERIOD, "a@example.org", "pending", "451 later")
        assert ledger.state(PERIOD, "a@example.org") == "sent"
        assert ledger.claim(PERIOD, "b@example.org", "en", "<3@x>")
        ledger.settle(PERIOD, "b@example.org", "failed", "550 no")
        assert not ledger.claim(PERIOD, "b@example.org", "en", "<4@x>")
        assert ledger.claim(PERIOD, "c@example.org", "en", "<5@x>")
        ledger.settle(PERIOD, "c@example.org", "pending", "451 later")
        assert ledger.claim(PERIOD, "c@example.org", "en", "<6@x>")  # pending: due again
        assert ledger.claim(PERIOD, "c@example.org", "en", "<7@x>")  # a dead run's `sending`


def test_the_send_lock_admits_one_run_per_issue(tmp_path: Path) -> None:
    with send_lock(tmp_path, PERIOD):
        with pytest.raises(NewsletterError) as caught, send_lock(tmp_path, PERIOD):
            pass
        assert f"another send of {PERIOD} is running (pid {os.getpid()})" in str(caught.value)
        with send_lock(tmp_path, "2026-12"):
            pass
    with send_lock(tmp_path, PERIOD):
        pass


def test_two_sends_at_once_deliver_each_message_once(tmp_path: Path) -> None:
    project = built_project(tmp_path / "project")
    _subscribe(project, _people(20))
    base = [console_script(), "-C", str(project.root), "send", PERIOD]
    hold = threading.Event()
    with SmtpServer(Faults(hold_rcpt=hold)) as server:
        env = {**os.environ, **server.env()}
        first = subprocess.Popen(base, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert server.recorder.wait_rcpt(1), "the first run never reached the server"
            second = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
        finally:
            hold.set()
            out, err = first.communicate(timeout=120)
        # Two more started together on 200 new subscribers, free to overlap or not.
        _subscribe(project, _people(200, domain="example.net"))
        racing = [subprocess.Popen(base, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                  for _ in range(2)]  # fmt: skip
        outputs = [process.communicate(timeout=120) for process in racing]
        counts = dict(server.counts)
    assert second.returncode == 1
    assert (
        second.stderr == f"error: another send of {PERIOD} is running (pid {first.pid}); "
        "wait for it to end, or stop it, before sending again\n"
    )
    assert first.returncode == 0, err
    assert "sent 20, failed 0" in out.decode()
    assert len(counts) == 220 and set(counts.values()) == {1}
    for process, (_out, race_err) in zip(racing, outputs, strict=True):
        assert process.returncode == 0 or b"another send of" in race_err, race_err


# the command line


def test_an_issue_never_built_is_an_error_even_with_nobody_due(
    mailing_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    for args, paths in [
        ([], "outbox/2031-05/en and outbox/2031-05/ja are"),
        (["--dry-run"], "outbox/2031-05/en and outbox/2031-05/ja are"),
        (["--lang", "ja"], "outbox/2031-05/ja is"),
    ]:
        result = CliRunner().invoke(
            cli, ["-C", str(mailing_project.root), "send", "2031-05", *args]
        )
        assert result.exit_code == 1, result.output
        assert result.output == (
            f"error: {paths} not built; run `newsletter build --period 2031-05`\n"
        )


def test_dry_run_with_a_test_address_is_a_usage_error(mailing_project: Project) -> None:
    result = CliRunner().invoke(
        cli,
        ["-C", str(mailing_project.root), "send", PERIOD, "--dry-run", "--test-to", "a@b.org"],
    )
    assert result.exit_code == 2
    assert "--dry-run and --test-to cannot be used together" in result.output
    assert "unexpected" not in result.output


def test_a_server_that_is_down_is_one_error_line(mailing_project: Project) -> None:
    _subscribe(mailing_project, _people(2))
    with SmtpServer() as server:
        env = server.env()
    result = run_script("-C", str(mailing_project.root), "send", PERIOD, env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"error: cannot connect to the SMTP server 127.0.0.1:{env['NEWSLETTER_SMTP_PORT']}"
    )
    assert lines[0].endswith("nothing was sent; the same command resumes the mailing")


def test_progress_is_drawn_on_a_terminal(mailing_project: Project) -> None:
    _subscribe(mailing_project, _people(10))
    primary, secondary = pty.openpty()
    try:
        with SmtpServer() as server:
            process = subprocess.Popen(
                [console_script(), "-C", str(mailing_project.root), "send", PERIOD],
                env={**os.environ, **server.env()},
                stdout=subprocess.PIPE,
                stderr=secondary,
            )
            os.close(secondary)
            screen = b""
            while True:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # EIO: the terminal's other side is closed
                    break
                if not chunk:
                    break
                screen += chunk
            out, _ = process.communicate(timeout=120)
    finally:
        os.close(primary)
    assert process.returncode == 0
    text = screen.decode()
    assert "\r[" + "#" * 30 + "] 10/10 " in text
    assert "msg/s ETA 00:00:00 (failed 0, pending 0)" in text
    assert b"sent 10" in out and b"msg/s ETA" not in out


def test_the_progress_line_says_count_rate_and_time_left() -> None:
    line = format_progress(Progress(done=25, total=100, sent=24, failed=1, pending=0, elapsed=5))
    assert line == (
        "[#######-----------------------] 25/100 5 msg/s ETA 00:00:15 (failed 1, pending 0)"
    )
    start = format_progress(Progress(0, 10, 0, 0, 0, 0.0))
    assert start.endswith("0/10 0 msg/s ETA --:--:-- (failed 0, pending 0)")


def test_a_sent_issue_is_frozen_against_rebuilds(tmp_path: Path) -> None:
    """Once subscribers have an issue, a rebuild (draft, preview, a stray build) would make the
    archive and any resumed send differ from what they got: build refuses unless --force."""
    project = built_project(tmp_path / "project")
    with MailingList(project.state_dir / "mailing.sqlite3") as mailing_list:
        mailing_list.add("ada@example.org", name="Ada", language="en")
    with SmtpServer() as server:
        result = run_script("-C", str(project.root), "send", PERIOD, env=server.env())
        assert result.returncode == 0, result.stderr
    index = project.outbox_dir / PERIOD / "en" / "index.html"
    before = index.read_bytes()
    item = project.content_dir / "calls" / "horizon-cl4-2026-quantum-sensing.md"
    item.write_text(item.read_text().replace('title: "', 'title: "Changed — ', 1))
    refused = run_script("-C", str(project.root), "build", "--now", NOW)
    assert refused.returncode == 1
    assert f"{PERIOD} was sent on" in refused.stderr and "--force" in refused.stderr
    assert index.read_bytes() == before
    forced = run_script("-C", str(project.root), "build", "--now", NOW, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Changed — " in index.read_text()
