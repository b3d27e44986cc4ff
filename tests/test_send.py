"""`newsletter send` against a real SMTP server (aiosmtpd on 127.0.0.1), with and without faults."""

from __future__ import annotations

import sqlite3
import ssl
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from smtpserver import (
    PERIOD,
    SECRET,
    Faults,
    SmtpServer,
    built_project,
    self_signed_certificate,
)

from newsletter import tokens
from newsletter.cli import cli
from newsletter.config import SmtpSettings, load_config
from newsletter.errors import NewsletterError
from newsletter.project import Project
from newsletter.send import list_id, send_issue, smtp_target
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
        japanese = send_issue(mailing_project, PERIOD, languages=["ja"], env=server.env())
        assert japanese.sent == 10
        limited = send_issue(mailing_project, PERIOD, limit=5, connections=3, env=server.env())
        assert (limited.sent, limited.remaining, limited.ok) == (5, 15, True)
        rest = send_issue(mailing_project, PERIOD, connections=3, rate=200, env=server.env())
        assert rest.sent == 15
    assert len(server.counts) == 30 and set(server.counts.values()) == {1}
    assert server.recorder.connections >= 3


def test_dry_run_builds_everything_and_sends_nothing(mailing_project: Project) -> None:
    _subscribe(mailing_project, _people(12))
    env = {"NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": "9"}
    report = send_issue(mailing_project, PERIOD, dry_run=True, env=env)
    assert (report.sent, report.dry_run) == (12, True)
    assert report.bytes > 12 * 40_000
    assert any("NEWSLETTER_SECRET" in str(w) for w in report.warnings)
    assert _ledger(mailing_project) == {}


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


def test_faults_end_with_every_deliverable_recipient_delivered_once(
    mailing_project: Project,
) -> None:
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
        mail_421_every=13,
    )
    _subscribe(mailing_project, people)
    with SmtpServer(faults) as server:
        report = send_issue(mailing_project, PERIOD, connections=2, env=server.env())
        counts = Counter(server.counts)
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
