"""The event engine: timeline, rules, exactly-once actions, restarts, and the real `watch`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import date, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import console_script, copy_project, invoke, run_script
from feedserver import FeedServer
from smtpserver import SmtpServer

from newsletter.content import load_content
from newsletter.dates import BRUSSELS
from newsletter.events import EVENT_LOG_NAME, EventLog
from newsletter.project import Project
from newsletter.subscribers import MailingList
from newsletter.watch import ManualClock, Watcher

SUBSCRIBERS = [
    ("ada@example.org", "Ada", "en"),
    ("kenji@example.jp", "Kenji", "ja"),
    ("marie@example.eu", None, "en"),
]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BRUSSELS)


def configure_watch(project: Project, *settings: str) -> None:
    """Set keys of the shipped config's [watch] table (the keys given replace their defaults)."""
    text = project.config_path.read_text(encoding="utf-8")
    for setting in settings:
        key = setting.split("=")[0].strip()
        text = re.sub(rf"^{key} = .*\n", "", text, flags=re.MULTILINE)
        text = text.replace("[watch]\n", f"[watch]\n{setting}\n", 1)
    assert "[watch]" in text
    project.config_path.write_text(text, encoding="utf-8")


def events_log(project: Project) -> EventLog:
    return EventLog(project.state_dir / EVENT_LOG_NAME)


def subscribe(project: Project) -> None:
    from newsletter.send import mailing_db

    with MailingList(mailing_db(project)) as mailing_list:
        for email, name, language in SUBSCRIBERS:
            mailing_list.add(email, name=name, language=language)


@pytest.fixture
def sending(project: Project, monkeypatch: pytest.MonkeyPatch):
    """The project with auto_send on, three subscribers and a real SMTP server."""
    configure_watch(project, "auto_send = true")
    subscribe(project)
    with SmtpServer() as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        yield server


def test_a_year_of_events_once_each_with_a_restart(project: Project, sending: SmtpServer) -> None:
    """Twelve digests and every 14-day deadline alert, each sent once to each subscriber,
    though the watcher is replaced by a new one (a restart) half way through the year."""
    clock = ManualClock(at("2026-01-01T06:00:00"))
    watcher = Watcher(project, clock)
    for day in range(366):
        if day == 180:
            watcher = Watcher(project, clock)
        watcher.tick()
        clock.advance(timedelta(days=1))
    actions = events_log(project).actions()
    digests = sorted(a.key for a in actions if a.action == "digest")
    assert digests == [f"digest:2026-{month:02d}" for month in range(1, 13)]
    content = load_content(project.content_dir, ["en", "ja"], "en")
    first, last = date(2026, 1, 1), date(2027, 1, 1)
    expected_alerts = {
        f"alert:{call.deadline.date() - timedelta(days=lead)}:{lead}d"
        for call in content.calls
        for lead in (14, 3)
        if first < call.deadline.date() - timedelta(days=lead) <= last
    }
    alerts = [a for a in actions if a.action == "alert"]
    assert {a.key for a in alerts} == expected_alerts and len(expected_alerts) >= 4
    assert all(a.status == "done" for a in actions if a.action in ("digest", "alert")), [
        (a.key, a.status, a.outcome) for a in actions if a.status != "done"
    ]
    sent_editions = 12 + len(alerts)
    assert sending.counts == Counter({email: sent_editions for email, _n, _l in SUBSCRIBERS})
    subjects = Counter()
    for _sender, recipients, data in sending.recorder.messages:
        message = message_from_bytes(data, policy=default_policy)
        subjects[(recipients[0], message["Subject"], message["Date"][:16])] += 1
    assert max(subjects.values()) == 1
    japanese = [
        message_from_bytes(d, policy=default_policy)["Subject"]
        for _s, r, d in sending.recorder.messages
        if r == ["kenji@example.jp"]
    ]
    assert "日EU研究・イノベーション ダイジェスト — 2026年11月号" in japanese


def test_restart_after_downtime_catches_up_without_repeating(
    project: Project, sending: SmtpServer
) -> None:
    clock = ManualClock(at("2026-10-30T08:00:00"))
    Watcher(project, clock).tick()
    clock.current = at("2026-12-02T08:00:00")  # down through the end of October and November
    report = Watcher(project, clock).tick()
    ran = {key: status for key, status, _outcome in report.ran}
    assert ran["digest:2026-10"] == "done" and ran["digest:2026-11"] == "done"
    # 14-day alerts that fell in the downtime are not sent days late with wrong "days left".
    assert ran["alert:2026-11-19:14d"] == "expired"
    assert ran["alert:2026-11-20:14d"] == "expired"
    assert Watcher(project, clock).tick().ran == []
    assert sending.counts == Counter({email: 2 for email, _n, _l in SUBSCRIBERS})


def test_two_triggers_in_one_tick_run_the_action_once(project: Project) -> None:
    clock = ManualClock(at("2026-11-25T09:00:00"))
    watcher = Watcher(project, clock)
    watcher.tick()
    item = project.content_dir / "news" / "2026-11-24-moonshot-call-questions-answered.md"
    item.write_text(item.read_text().replace('title: "', 'title: "Updated — ', 1))
    feed = project.content_dir / "feeds" / "cooperation-bulletin.rdf"
    feed.write_text(feed.read_text().replace("</rdf:RDF>", NEW_RDF_ITEM + "</rdf:RDF>"))
    clock.advance(timedelta(hours=1))
    report = watcher.tick()
    kinds = Counter(event.kind for event in report.events)
    assert kinds["content.changed"] == 2 and kinds["feed.entry_new"] == 1
    assert [key.split(":")[0] for key, _s, _o in report.ran] == ["draft"]
    html = (project.outbox_dir / "2026-11" / "en" / "index.html").read_text()
    assert "Updated —" in html and "Bulletin: a brand-new entry" in html


NEW_RDF_ITEM = """<item rdf:about="https://bulletin.example.org/new-entry">
<title>Bulletin: a brand-new entry</title><link>https://bulletin.example.org/new-entry</link>
<description>Fresh</description><dc:date>2026-11-25T07:00:00+00:00</dc:date></item>
"""


def test_editing_a_watched_file_causes_one_rebuild(project: Project) -> None:
    clock = ManualClock(at("2026-11-25T09:00:00"))
    watcher = Watcher(project, clock)
    watcher.tick()
    template = project.templates_dir / "partials" / "contacts.html"
    template.write_text(template.read_text() + "<!-- edited -->\n")
    clock.advance(timedelta(minutes=1))
    report = watcher.tick()
    assert [e.kind for e in report.events] == ["content.changed"]
    assert report.events[0].payload == {
        "path": "templates/partials/contacts.html",
        "area": "templates",
    }
    assert len(report.ran) == 1 and report.ran[0][1] == "done"
    assert "<!-- edited -->" in (project.outbox_dir / "2026-11" / "en" / "index.html").read_text()
    clock.advance(timedelta(minutes=1))
    assert watcher.tick().ran == []


def test_failed_action_is_retried_with_backoff(project: Project) -> None:
    clock = ManualClock(at("2026-11-25T09:00:00"))
    watcher = Watcher(project, clock)
    watcher.tick()
    template = project.templates_dir / "partials" / "news.html"
    good = template.read_text()
    template.write_text(good + "{{ no_such_variable }}\n")
    clock.advance(timedelta(minutes=1))
    ((key, status, outcome),) = watcher.tick().ran
    assert status == "failed" and "news.html" in outcome
    (record,) = [a for a in events_log(project).actions() if a.key == key]
    assert record.next_attempt == clock.now() + timedelta(minutes=5)
    clock.advance(timedelta(minutes=2))
    assert watcher.tick().ran == []  # backing off
    clock.advance(timedelta(minutes=4))
    assert watcher.tick().ran == [(key, "failed", outcome)]  # retried, next in 10 minutes
    (record,) = [a for a in events_log(project).actions() if a.key == key]
    assert record.attempts == 2 and record.next_attempt == clock.now() + timedelta(minutes=10)
    template.write_text(good)  # the fix is an edit too: a new draft, and the old one retires
    clock.advance(timedelta(minutes=1))
    ((fixed, status, _outcome),) = watcher.tick().ran
    assert fixed != key and status == "done"
    statuses = {a.key: a.status for a in events_log(project).actions()}
    assert statuses[key] == "superseded"


def test_an_action_gives_up_after_max_attempts(project: Project) -> None:
    configure_watch(project, "max_attempts = 2", "retry_minutes = 1")
    clock = ManualClock(at("2026-11-25T09:00:00"))
    watcher = Watcher(project, clock)
    watcher.tick()
    (project.templates_dir / "digest.txt").write_text("{% broken %}\n")
    clock.advance(timedelta(minutes=1))
    assert watcher.tick().ran[0][1] == "failed"
    clock.advance(timedelta(minutes=2))
    assert watcher.tick().ran[0][1] == "gave_up"
    clock.advance(timedelta(hours=1))
    assert watcher.tick().ran == []


def test_watch_once_is_idempotent_at_the_same_now(project: Project) -> None:
    first = invoke(project, "watch", "--once", "--now", "2026-11-01T08:00:00+01:00")
    # A new watcher takes the feeds' current entries as seen, and announces none of them.
    assert first.exit_code == 0 and first.output == ""
    assert len(events_log(project).events(kinds=["feed.entry_new"])) >= 20
    again = invoke(project, "watch", "--once", "--now", "2026-11-25T09:00:00+01:00")
    assert "alert:2026-11-19:14d" in again.output
    before = {p: p.read_bytes() for p in project.outbox_dir.rglob("*") if p.is_file()}
    repeat = run_script(
        "-C", str(project.root), "watch", "--once", "--now", "2026-11-25T09:00:00+01:00"
    )
    assert repeat.returncode == 0 and repeat.stdout == "", repeat.stdout
    after = {p: p.read_bytes() for p in project.outbox_dir.rglob("*") if p.is_file()}
    assert after == before


def test_events_lists_the_timeline(project: Project) -> None:
    result = invoke(
        project,
        "events",
        "--now",
        "2026-11-25T09:00:00+01:00",
        "--to",
        "2027-01-24",
        "--kind",
        "call.deadline_approaching",
    )
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["time", "state", "kind", "what"]
    assert any(
        line.startswith("2026-11-30 00:00  upcoming")
        and "Quantum sensing" in line
        and "deadline in 3 days" in line
        for line in lines
    )
    as_json = invoke(project, "events", "--now", "2026-11-25T09:00:00+01:00", "--json")
    rows = [json.loads(line) for line in as_json.output.splitlines()]
    assert {"id", "kind", "time", "source", "payload", "state"} <= set(rows[0])
    closed = [r for r in rows if r["kind"] == "period.closed"]
    assert [r["payload"]["period"] for r in closed] == ["2026-10", "2026-11", "2026-12"]
    assert [r["state"] for r in closed] == ["past", "upcoming", "upcoming"]  # no watcher yet


def test_events_due_are_those_a_running_watcher_will_handle(project: Project) -> None:
    assert invoke(project, "watch", "--once", "--now", "2026-11-15T09:00:00+01:00").exit_code == 0
    result = invoke(project, "events", "--now", "2026-11-25T09:00:00+01:00", "--json")
    states = {row["id"]: row["state"] for row in map(json.loads, result.output.splitlines())}
    assert states["period.closed:2026-10"] == "past"  # before the watcher started
    assert states["milestone.reached:2026-11-18-joint-committee-tokyo:2026-11-18"] == "due"
    assert states["period.closed:2026-11"] == "upcoming"


def test_deadline_day_is_counted_in_the_calls_time_zone(project: Project) -> None:
    result = invoke(
        project,
        "events",
        "--now",
        "2026-11-25T09:00:00+01:00",
        "--from",
        "2026-11-01",
        "--json",
        "--kind",
        "call.deadline_approaching",
    )
    rows = [json.loads(line) for line in result.output.splitlines()]
    jsps = next(
        r
        for r in rows
        if r["payload"]["call"] == "jsps-postdoctoral-fellowship-fy2027"
        and r["payload"]["lead_days"] == 14
    )
    # Deadline 4 December 17:00 in Tokyo: 14 days before is 20 November there.
    assert jsps["time"] == "2026-11-20T00:00:00+01:00"


def test_rules_are_validated(project: Project) -> None:
    with project.config_path.open("a") as config:
        config.write('\n[[rules]]\non = "call.closing"\ndo = "alert"\n')
    result = invoke(project, "check")
    assert result.exit_code == 1
    assert "rules.0.on: unknown event kind 'call.closing'" in result.output


def test_real_watch_process_reacts_to_a_feed_entry_and_stops_on_sigterm(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    now = datetime.now(ZoneInfo("Europe/Brussels"))
    with FeedServer() as server:
        server.set("/live.xml", live_feed([]), etag='"1"')
        with project.config_path.open("a") as config:
            config.write(
                f'\n[[feeds]]\nname = "Live"\nurl = "{server.url("/live.xml")}"\ntimeout = 2\n'
            )
        configure_watch(project, "feed_interval_minutes = 0.005")
        process = subprocess.Popen(
            [console_script(), "-C", str(project.root), "watch", "--interval", "0.2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        try:
            log_path = project.state_dir / EVENT_LOG_NAME
            assert wait_until(lambda: log_path.exists() and EventLog(log_path).mark("feeds_polled"))
            title = f"Live entry {now:%H%M%S}"
            server.set("/live.xml", live_feed([(title, now)]), etag='"2"')
            index = project.outbox_dir / f"{now:%Y-%m}" / "en" / "index.html"
            assert wait_until(lambda: EventLog(log_path).known("feed.entry_new:guid:live-1"))
            assert wait_until(lambda: index.exists() and title in index.read_text())
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "stopped" in err and "Traceback" not in err
        assert "feed.entry_new:guid:live-1" in out


def live_feed(entries: list[tuple[str, datetime]]) -> str:
    items = "".join(
        f"<item><title>{title}</title><link>https://live.example.org/{i}</link>"
        f'<guid isPermaLink="false">live-{i}</guid>'
        f"<pubDate>{format_datetime(when)}</pubDate>"
        "</item>"
        for i, (title, when) in enumerate(entries, start=1)
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Live</title>'
        f"<link>https://live.example.org/</link>{items}</channel></rss>"
    )


def wait_until(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    return False


def test_an_invalid_file_delays_events_but_loses_none(project: Project) -> None:
    clock = ManualClock(at("2026-11-20T09:00:00"))
    watcher = Watcher(project, clock)
    watcher.tick()
    item = project.content_dir / "news" / "2026-11-24-moonshot-call-questions-answered.md"
    good = item.read_text()
    item.write_text(good.replace("title:", "titel:", 1))
    clock.current = at("2026-12-01T08:00:00")
    broken = watcher.tick()
    assert not [e for e in broken.events if e.kind == "period.closed"]
    item.write_text(good)
    clock.current = at("2026-12-01T09:00:00")
    fixed = watcher.tick()
    assert "period.closed:2026-11" in [e.id for e in fixed.events]
    assert ("digest:2026-11", "done") in [(k, s) for k, s, _o in fixed.ran]


def test_a_call_added_later_in_the_day_still_gets_its_alert(project: Project) -> None:
    clock = ManualClock(at("2026-11-20T08:00:00"))
    watcher = Watcher(project, clock)
    watcher.tick()
    clock.current = at("2026-11-21T06:00:00")  # the day's alerts were due at 00:00
    watcher.tick()
    clock.current = at("2026-11-21T10:00:00")
    (project.content_dir / "calls" / "late-addition.md").write_text(
        '---\ntitle: "A call added at ten"\nprogramme: "ERC"\nopens: "2026-11-01"\n'
        'deadline: "2026-12-05"\n---\n'
    )
    report = watcher.tick()
    assert "alert:2026-11-21:14d" in [key for key, _s, _o in report.ran]
    alert = project.outbox_dir / "alert-2026-11-21-14d" / "en" / "digest.txt"
    assert "A call added at ten" in alert.read_text()


def test_sigkill_during_an_auto_send_then_restart_delivers_each_once(
    project: Project, tmp_path: Path
) -> None:
    """The real console script is killed in the middle of sending the month's digest; the next
    `watch --once` finishes the job: every subscriber has exactly one copy."""
    from smtpserver import Faults

    configure_watch(project, "auto_send = true")
    from newsletter.send import mailing_db

    addresses = [f"reader{i:03d}@example.org" for i in range(120)]
    with MailingList(mailing_db(project)) as mailing_list:
        for address in addresses:
            mailing_list.add(address, language="en")
    slow = Faults(slow_rcpt={address: 0.05 for address in addresses})
    with SmtpServer(slow) as server:
        env = {**os.environ, **server.env()}
        command = [console_script(), "-C", str(project.root), "watch", "--once", "--now"]
        subprocess.run(
            [*command, "2026-11-30T09:00:00+01:00"], env=env, check=True, capture_output=True
        )
        process = subprocess.Popen(
            [*command, "2026-12-01T09:00:00+01:00"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert wait_until(lambda: sum(server.counts.values()) >= 20)
        process.kill()
        process.wait(timeout=30)
        assert 0 < sum(server.counts.values()) < len(addresses)
        again = subprocess.run(
            [*command, "2026-12-01T09:05:00+01:00"], env=env, capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr
        assert "digest:2026-11" in again.stdout
        copies = Counter()
        for _sender, recipients, data in server.recorder.messages:
            subject = message_from_bytes(data, policy=default_policy)["Subject"]
            copies[(recipients[0], subject)] += 1
        editions = {subject for _r, subject in copies}
        assert any(s.endswith("November 2026") for s in editions)
        # Everyone has every edition (the digest, and the alert due that night) and at most the
        # one message in flight at the kill went out twice.
        assert {(r, s) for r in addresses for s in editions} == set(copies)
        assert sum(copies.values()) - len(copies) <= 1


def test_every_configured_action_has_an_implementation() -> None:
    from newsletter.actions import ACTIONS
    from newsletter.config import ACTIONS as CONFIGURABLE

    assert set(CONFIGURABLE) == set(ACTIONS)


def test_sigterm_during_a_long_send_stops_cleanly_and_the_next_start_resumes(
    project: Project,
) -> None:
    from smtpserver import Faults

    from newsletter.send import mailing_db

    configure_watch(project, "auto_send = true")
    addresses = [f"member{i:03d}@example.org" for i in range(150)]
    with MailingList(mailing_db(project)) as mailing_list:
        for address in addresses:
            mailing_list.add(address, language="en")
    with SmtpServer(Faults(slow_rcpt={a: 0.05 for a in addresses})) as server:
        env = {**os.environ, **server.env()}
        base = [console_script(), "-C", str(project.root), "watch"]
        subprocess.run(
            [*base, "--once", "--now", "2026-11-30T09:00:00+01:00"],
            env=env,
            check=True,
            capture_output=True,
        )
        process = subprocess.Popen(
            [*base, "--now", "2026-12-01T09:00:00+01:00"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert wait_until(lambda: sum(server.counts.values()) >= 10)
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "left to resume at the next start" in err and "Traceback" not in err
        delivered = sum(server.counts.values())
        assert delivered < 2 * len(addresses)  # it stopped; it did not finish first
        pending = [a for a in events_log(project).actions() if a.status == "pending"]
        assert pending, "the interrupted action stays pending"
        resumed = subprocess.run(
            [*base, "--once", "--now", "2026-12-01T09:10:00+01:00"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert resumed.returncode == 0, resumed.stderr
        copies = Counter()
        for _sender, recipients, data in server.recorder.messages:
            subject = message_from_bytes(data, policy=default_policy)["Subject"]
            copies[(recipients[0], subject)] += 1
        editions = {subject for _r, subject in copies}
        assert {(r, s) for r in addresses for s in editions} == set(copies)
        assert all(n == 1 for n in copies.values())  # nothing was in doubt at a clean stop
