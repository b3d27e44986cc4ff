"""Calendar events computed from content: calls opening, deadlines approaching, dates reached,
months closing. Pure functions of content, config and a time window, so `newsletter events`
can show the future and `watch` can catch up on the past with the same ids."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from newsletter.config import load_config
from newsletter.content import ContentSet, load_content
from newsletter.dates import Period
from newsletter.events import (
    CALL_DEADLINE_APPROACHING,
    CALL_OPENS,
    EVENT_LOG_NAME,
    EVENT_REACHED,
    MILESTONE_REACHED,
    PERIOD_CLOSED,
    Event,
    EventLog,
)
from newsletter.project import Project

LOOKBACK = timedelta(days=1)
"""How far behind its last tick a watcher still picks up calendar events it has not seen."""

SOURCE = "timeline"


def timeline(
    content: ContentSet, tz: ZoneInfo, start: datetime, end: datetime, deadline_leads: Iterable[int]
) -> list[Event]:
    """Every calendar event with start <= time < end, in time order."""
    events = [
        *_calls(content, tz, deadline_leads),
        *_dates_reached(content, tz),
        *periods_closed(tz, start, end),
    ]
    return sorted((e for e in events if start <= e.time < end), key=lambda e: (e.time, e.id))


def _calls(content: ContentSet, tz: ZoneInfo, leads: Iterable[int]) -> Iterable[Event]:
    for call in content.calls:
        payload = {"call": call.id, "title": call.title, "deadline": call.deadline.isoformat()}
        if call.opens is not None:
            yield Event(
                f"{CALL_OPENS}:{call.id}:{call.opens}",
                CALL_OPENS,
                datetime.combine(call.opens, time(0), tz),
                SOURCE,
                payload,
            )
        for lead in sorted(set(leads)):
            # The day is counted in the call's own time zone; the event fires at the start of
            # that day in the project's zone, so calls crossing the same day share one alert.
            day = call.deadline.date() - timedelta(days=lead)
            moment = datetime.combine(day, time(0), tz)
            yield Event(
                f"{CALL_DEADLINE_APPROACHING}:{call.id}:{lead}d:{call.deadline.isoformat()}",
                CALL_DEADLINE_APPROACHING,
                moment,
                SOURCE,
                {**payload, "lead_days": lead},
            )


def _dates_reached(content: ContentSet, tz: ZoneInfo) -> Iterable[Event]:
    for milestone in content.milestones:
        if milestone.date.day is not None:
            day = milestone.date.first_day
            yield Event(
                f"{MILESTONE_REACHED}:{milestone.id}:{day}",
                MILESTONE_REACHED,
                datetime.combine(day, time(0), tz),
                SOURCE,
                {"milestone": milestone.id, "title": milestone.title},
            )
    for event in content.events:
        moment = event.starts_at or datetime.combine(event.date, time(0), tz)
        yield Event(
            f"{EVENT_REACHED}:{event.id}:{event.date}",
            EVENT_REACHED,
            moment,
            SOURCE,
            {"event": event.id, "title": event.title},
        )


def periods_closed(tz: ZoneInfo, start: datetime, end: datetime) -> Iterable[Event]:
    """One event at each month boundary (midnight in the project's zone) within the window."""
    period = Period.of(start.astimezone(tz).date()).previous()
    while True:
        closes = period.end(tz)
        if closes >= end:
            return
        if closes >= start:
            yield Event(
                f"{PERIOD_CLOSED}:{period}", PERIOD_CLOSED, closes, SOURCE, {"period": str(period)}
            )
        period = period.next()


@dataclass(frozen=True)
class TimelineRow:
    event: Event
    state: str
    """"seen" (in the event log), "due" (its time has come; the next tick of a watcher handles
    it), "past" (before any watcher was started: nothing will act on it) or "upcoming"."""


def project_timeline(
    project: Project, start: datetime, end: datetime, now: datetime, kinds: Iterable[str] = ()
) -> list[TimelineRow]:
    """The timeline between `start` and `end`: events the log has seen, and calendar events
    computed from the content (past ones not seen yet are "due"; future ones "upcoming")."""
    config = load_config(project.root)
    content = load_content(
        project.content_dir, config.newsletter.languages, config.newsletter.default_language
    )
    kinds = set(kinds)
    log_path = project.state_dir / EVENT_LOG_NAME
    log = EventLog(log_path) if log_path.exists() else None
    since = log.mark("timeline_since") if log else None
    # A watcher handles what happens from its first start on; older events are history that
    # nothing will act on.
    horizon = datetime.fromisoformat(since) if since else None
    rows: dict[str, TimelineRow] = {}
    for event in timeline(content, config.tz, start, end, config.watch.deadline_leads):
        if event.time > now:
            state = "upcoming"
        elif horizon is not None and event.time > horizon:
            state = "due"
        else:
            state = "past"
        rows[event.id] = TimelineRow(event, state)
    if log is not None:
        for event in log.events(start=start, end=end):
            rows[event.id] = TimelineRow(event, "seen")
    found = [row for row in rows.values() if not kinds or row.event.kind in kinds]
    return sorted(found, key=lambda row: (row.event.time, row.event.id))
