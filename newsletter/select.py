"""Decide what belongs in one period's issue. No formatting here: render decides how it looks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from newsletter.config import Config
from newsletter.content import (
    Contact,
    ContentSet,
    Event,
    FundingCall,
    Item,
    Milestone,
    NewsItem,
    Project,
)
from newsletter.dates import PartialDate, Period
from newsletter.errors import Problem
from newsletter.feeds import FeedEntry, normalise_link


@dataclass(frozen=True)
class CallListing:
    """A funding call as of the issue time."""

    call: FundingCall
    status: str  # "open" or "opening_soon"
    days_left: int
    closing_soon: bool


@dataclass(frozen=True)
class Anniversary:
    """An older milestone from the same month: "this month in cooperation history"."""

    milestone: Milestone
    years: int


@dataclass(frozen=True)
class NewsStory:
    """News from a content file or a feed entry, in one shape for the templates."""

    key: str
    title: str
    link: str | None
    date: date
    source: str
    item: NewsItem | None = None
    entry: FeedEntry | None = None
    text: str | None = None
    """The summary of a content item (translated by render); feed entries carry their own."""

    @property
    def keys(self) -> set[str]:
        """What identifies this story across issues: its own key, and its normalised link, so
        the same article under another GUID or with tracking parameters is still a repeat."""
        return {self.key, f"link:{normalise_link(self.link)}"} if self.link else {self.key}

    @property
    def summary_html(self) -> str:
        """Sanitised feed HTML; computed for the stories an issue shows, not for every entry."""
        return self.entry.summary_html if self.entry else ""

    @property
    def summary_text(self) -> str:
        if self.text is not None:
            return self.text
        return self.entry.summary_text if self.entry else ""


@dataclass
class SectionContent:
    id: str
    limit: int
    entries: list[Any]
    total: int
    """How many qualified before the limit cut the list."""


@dataclass
class Selection:
    """Everything one period's issue holds, in section order, language-neutral."""

    period: Period
    now: datetime
    sections: list[SectionContent]
    warnings: list[Problem] = field(default_factory=list)

    def section(self, section_id: str) -> SectionContent | None:
        return next((s for s in self.sections if s.id == section_id), None)

    @property
    def news_keys(self) -> list[str]:
        news = self.section("news")
        return sorted({key for story in news.entries for key in story.keys}) if news else []


def select_issue(
    config: Config,
    content: ContentSet,
    entries: list[FeedEntry],
    period: Period,
    now: datetime,
    *,
    already_sent: frozenset[str] = frozenset(),
) -> Selection:
    """Pick each configured section's entries for `period`, as seen at `now`.

    `already_sent` holds news keys that went out in an earlier issue; they are never repeated.
    """
    tz = config.tz
    rules = config.selection
    today = now.astimezone(tz).date()
    candidates = {
        "milestones": lambda: milestones_in(content.milestones, period, today),
        "history": lambda: anniversaries(content.milestones, period, rules.history_min_years),
        "calls": lambda: calls_as_of(
            content.calls, now, rules.calls_opening_within_days, rules.closing_soon_days
        ),
        "projects": lambda: featured_projects(content.projects),
        "news": lambda: news_for(content.news, entries, period, tz, already_sent, today),
        "events": lambda: upcoming_events(content.events, today, rules.events_within_days),
        "contacts": lambda: contacts(content.contacts),
    }
    sections = []
    warnings = []
    for section in config.sections:
        found = candidates[section.id]()
        sections.append(
            SectionContent(section.id, section.limit, found[: section.limit], len(found))
        )
        if not found:
            warnings.append(Problem(f"section {section.id!r} is empty for {period}"))
    return Selection(period, now, sections, warnings)


def milestones_in(milestones: list[Milestone], period: Period, today: date) -> list[Milestone]:
    """Milestones of the period that have happened by `today` (a draft built mid-month does
    not announce the 16th on the 3rd; a year-only date belongs to no month)."""
    found = [
        m
        for m in milestones
        if m.date.year == period.year and m.date.month == period.month and m.date.first_day <= today
    ]
    return sorted(found, key=lambda m: (m.date, m.id))


def anniversaries(milestones: list[Milestone], period: Period, min_years: int) -> list[Anniversary]:
    found = [
        Anniversary(m, period.year - m.date.year)
        for m in milestones
        if m.date.month == period.month and period.year - m.date.year >= min_years
    ]
    return sorted(found, key=lambda a: (a.milestone.date, a.milestone.id))


def calls_as_of(
    calls: list[FundingCall], now: datetime, opening_within_days: int, closing_soon_days: int
) -> list[CallListing]:
    """Calls open at `now` or opening within the window, soonest deadline first."""
    listings = []
    for call in calls:
        if call.deadline <= now:
            continue
        local_today = now.astimezone(call.deadline.tzinfo).date()
        days_left = (call.deadline.date() - local_today).days
        if call.opens is None or call.opens <= local_today:
            status = "open"
        elif call.opens <= local_today + timedelta(days=opening_within_days):
            status = "opening_soon"
        else:
            continue
        closing_soon = status == "open" and days_left <= closing_soon_days
        listings.append(CallListing(call, status, days_left, closing_soon))
    return sorted(listings, key=lambda c: (c.call.deadline, c.call.id))


def featured_projects(projects: list[Project]) -> list[Project]:
    featured = [p for p in projects if p.featured]
    return sorted(featured, key=lambda p: (p.start or p.end or PartialDate(0), p.id), reverse=True)


def news_for(
    items: list[NewsItem],
    entries: list[FeedEntry],
    period: Period,
    tz: ZoneInfo,
    already_sent: frozenset[str],
    today: date,
) -> list[NewsStory]:
    """News published in the period up to `today` (in the project's time zone), newest first,
    none repeated from an earlier issue."""
    stories = [
        NewsStory(
            f"item:{item.id}", item.title, item.url, item.date, "", item=item, text=item.summary
        )
        for item in items
        if period.contains(item.date) and item.date <= today
    ]
    for entry in entries:
        if entry.published is None:
            continue
        day = entry.published.astimezone(tz).date()
        if period.contains(day) and day <= today:
            stories.append(
                NewsStory(entry.key, entry.title, entry.link, day, entry.source, entry=entry)
            )
    fresh = [s for s in stories if not s.keys & already_sent]
    return sorted(fresh, key=lambda s: (s.date, s.key), reverse=True)


def upcoming_events(events: list[Event], today: date, within_days: int) -> list[Event]:
    horizon = today + timedelta(days=within_days)
    found = [e for e in events if (e.end_date or e.date) >= today and e.date <= horizon]
    return sorted(found, key=lambda e: (e.date, e.id))


def contacts(items: list[Contact]) -> list[Contact]:
    return sorted(items, key=lambda c: (c.order, c.title))


def items_of(sections: Iterable[Any]) -> list[tuple[str, Item | FeedEntry | NewsStory]]:
    """(section id, underlying item) pairs of sections (`.id`, `.entries`), for manifests."""
    pairs: list[tuple[str, Any]] = []
    for section in sections:
        for entry in section.entries:
            if isinstance(entry, CallListing):
                entry = entry.call
            elif isinstance(entry, Anniversary):
                entry = entry.milestone
            elif isinstance(entry, NewsStory) and entry.item is not None:
                entry = entry.item
            pairs.append((section.id, entry))
    return pairs
