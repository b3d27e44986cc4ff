"""What belongs in one period's issue, as seen at a fixed issue time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from conftest import NOW, REPO

from newsletter.config import load_config
from newsletter.content import ContentSet, Event, FundingCall, Milestone, NewsItem, Project
from newsletter.dates import BRUSSELS, PartialDate, Period
from newsletter.feeds import FeedEntry
from newsletter.select import (
    anniversaries,
    calls_as_of,
    featured_projects,
    milestones_in,
    news_for,
    select_issue,
    upcoming_events,
)

NOVEMBER = Period(2026, 11)


def milestone(item_id: str, when: str) -> Milestone:
    return Milestone(id=item_id, title=item_id, date=when)


def call(item_id: str, deadline: str, opens: str | None = None) -> FundingCall:
    return FundingCall(id=item_id, title=item_id, programme="ERC", deadline=deadline, opens=opens)


def entry(key: str, published: datetime | None, link: str | None = None) -> FeedEntry:
    return FeedEntry(
        key=key,
        guid=key,
        title=key,
        link=link,
        normalised_link=link,
        published=published,
        body="",
        body_base=None,
        source="feed",
    )


def test_milestones_dated_in_the_period_only() -> None:
    found = milestones_in(
        [
            milestone("a", "2026-11-10"),
            milestone("b", "2026-11"),
            milestone("c", "2026"),
            milestone("d", "2026-12-01"),
            milestone("e", "2025-11-10"),
            milestone("later", "2026-11-26"),
        ],
        NOVEMBER,
        date(2026, 11, 25),
    )
    assert [m.id for m in found] == ["b", "a"]  # month-only sorts before its days


def test_a_draft_mid_month_has_nothing_from_later_in_the_month() -> None:
    items = [
        NewsItem(id="early", title="E", date="2026-11-04"),
        NewsItem(id="later", title="L", date="2026-11-27"),
    ]
    entries = [entry("guid:future", datetime(2026, 11, 28, 8, 0, tzinfo=UTC))]
    found = news_for(items, entries, NOVEMBER, BRUSSELS, frozenset(), date(2026, 11, 25))
    assert [s.key for s in found] == ["item:early"]


def test_this_month_in_history_counts_years() -> None:
    found = anniversaries(
        [
            milestone("joint-committee", "2017-11-24"),
            milestone("roadmap", "2018-11-23"),
            milestone("year-only", "2011"),
            milestone("this-year", "2026-11-10"),
            milestone("may", "2020-05"),
        ],
        NOVEMBER,
        min_years=1,
    )
    assert [(a.milestone.id, a.years) for a in found] == [("joint-committee", 9), ("roadmap", 8)]


def test_calls_open_or_opening_soon_sorted_by_deadline() -> None:
    now = datetime(2026, 11, 25, 9, 0, tzinfo=BRUSSELS)
    calls = [
        call("closed", "2026-10-14"),
        call("late", "2027-03-01", opens="2026-09-01"),
        call("urgent", "2026-12-03", opens="2026-06-01"),
        call("today", "2026-11-25"),  # 17:00 Brussels, still open at 09:00
        call("soon", "2027-02-10", opens="2026-12-09"),
        call("far-future", "2027-09-01", opens="2027-04-01"),
    ]
    found = calls_as_of(calls, now, opening_within_days=30, closing_soon_days=14)
    assert [(c.call.id, c.status, c.days_left, c.closing_soon) for c in found] == [
        ("today", "open", 0, True),
        ("urgent", "open", 8, True),
        ("soon", "opening_soon", 77, False),
        ("late", "open", 96, False),
    ]


def test_days_left_counted_in_the_deadline_time_zone() -> None:
    # 23:30 in Brussels on 25 Nov is already 26 Nov in Tokyo: one day fewer is left there.
    now = datetime(2026, 11, 25, 23, 30, tzinfo=BRUSSELS)
    (listing,) = calls_as_of([call("tokyo", "2026-11-28T17:00:00+09:00")], now, 30, 14)
    assert listing.days_left == 2


def test_featured_projects_only() -> None:
    projects = [
        Project(id="a", title="A", acronym="A", featured=True, start="2013"),
        Project(id="b", title="B", acronym="B", featured=False),
        Project(id="c", title="C", acronym="C", featured=True, start="2023"),
    ]
    assert [p.id for p in featured_projects(projects)] == ["c", "a"]


def test_upcoming_events_within_horizon_including_ongoing() -> None:
    today = date(2026, 11, 25)
    events = [
        Event(id="past", title="P", date="2026-11-20"),
        Event(id="ongoing", title="O", date="2026-11-24", end_date="2026-11-26"),
        Event(id="next", title="N", date="2026-12-02"),
        Event(id="far", title="F", date="2027-06-01"),
    ]
    assert [e.id for e in upcoming_events(events, today, 90)] == ["ongoing", "next"]


def test_news_in_period_newest_first_never_repeated() -> None:
    items = [
        NewsItem(id="mine", title="Mine", date="2026-11-04"),
        NewsItem(id="october", title="Old", date="2026-10-30"),
    ]
    entries = [
        entry("guid:late-utc", datetime(2026, 11, 30, 23, 30, tzinfo=UTC)),  # 1 Dec in Brussels
        entry("guid:fresh", datetime(2026, 11, 12, 8, 0, tzinfo=UTC)),
        entry("guid:sent", datetime(2026, 11, 13, 8, 0, tzinfo=UTC)),
        entry("guid:undated", None),
    ]
    found = news_for(
        items, entries, NOVEMBER, BRUSSELS, frozenset({"guid:sent"}), date(2026, 11, 30)
    )
    assert [s.key for s in found] == ["guid:fresh", "item:mine"]


def test_shipped_issue_fills_every_section_for_this_month() -> None:
    from newsletter.content import load_content

    config = load_config(REPO)
    content = load_content(REPO / "content", config.newsletter.languages, "en")
    selection = select_issue(config, content, [], NOVEMBER, NOW)
    for section in selection.sections:
        if section.id != "news":  # news also comes from feeds, checked in test_build
            assert section.entries, f"section {section.id} is empty"
    assert not [w for w in selection.warnings if "news" not in str(w)]


def test_section_limits_cut_and_count(tmp_path: Path) -> None:
    config = load_config(REPO)
    content = ContentSet(milestones=[milestone(f"m{i}", f"2026-11-{i + 1:02d}") for i in range(9)])
    selection = select_issue(config, content, [], NOVEMBER, NOW)
    section = selection.section("milestones")
    assert section is not None and section.total == 9 and len(section.entries) == 5
    assert any("'contacts' is empty" in str(w) for w in selection.warnings)


def test_period_arithmetic() -> None:
    assert Period.parse("2026-12").next() == Period(2027, 1)
    assert Period(2027, 1).previous() == Period(2026, 12)
    assert Period(2024, 2).last_day == date(2024, 2, 29)
    assert str(PartialDate.parse("2020-05")) == "2020-05"
    assert Period.of(NOW - timedelta(days=30)) == Period(2026, 10)
