"""What rules can do. Each action decides how the events a rule heard become keyed units of
work (`plan`), and how one unit is carried out (`run`). `ACTIONS` maps the names used in
`[[rules]] do = …` to them: a new action is one class here, and nothing else changes.

Keys make each unit happen once: `digest:2026-11`, `alert:2026-11-19:14d`, one `draft` per tick.
Running is idempotent (a build gives the same files; a send skips who has the issue), so a run
cut short by a crash is simply run again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, ClassVar, Protocol

from newsletter.build import IssueSent, build, build_alert
from newsletter.config import Config, load_config
from newsletter.content import load_content
from newsletter.dates import Period
from newsletter.events import CALL_DEADLINE_APPROACHING, PERIOD_CLOSED, Event
from newsletter.project import Project

Sender = Callable[[Project, str], str]
"""Sends the built issue `outbox/<issue id>/`; returns a one-line outcome or raises."""

ALERT_GRACE = timedelta(hours=24)
"""A deadline alert more than this late (the watcher was down) is dropped, not sent late."""


@dataclass(frozen=True)
class PlannedAction:
    key: str
    action: str
    rule: str
    event_ids: list[str]
    params: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    status: str  # done or expired; a failure raises
    summary: str


class Action(Protocol):
    name: ClassVar[str]

    def plan(
        self, heard: list[Event], rule: str, send: bool, config: Config, now: datetime
    ) -> list[PlannedAction]: ...

    def run(
        self, project: Project, params: dict[str, Any], now: datetime, sender: Sender
    ) -> Outcome: ...


class Digest:
    """The digest of the period that closed, built as of the moment it closed (so a retry
    builds the very same issue), then sent if the rule says so."""

    name: ClassVar[str] = "digest"

    def plan(
        self, heard: list[Event], rule: str, send: bool, config: Config, now: datetime
    ) -> list[PlannedAction]:
        planned = []
        for event in heard:
            if event.kind == PERIOD_CLOSED:
                period = event.payload["period"]
            else:
                period = str(Period.of(event.time.astimezone(config.tz).date()))
            planned.append(
                PlannedAction(
                    f"digest:{period}",
                    self.name,
                    rule,
                    [event.id],
                    {"period": period, "now": event.time.isoformat(), "send": send},
                )
            )
        return planned

    def run(
        self, project: Project, params: dict[str, Any], now: datetime, sender: Sender
    ) -> Outcome:
        period, summary = _build_period(project, params)
        if params.get("send"):
            summary += "; " + sender(project, period)
        return Outcome("done", summary)


class Draft:
    """The current period rebuilt as of now: one per tick, however many edits and entries."""

    name: ClassVar[str] = "draft"

    def plan(
        self, heard: list[Event], rule: str, send: bool, config: Config, now: datetime
    ) -> list[PlannedAction]:
        period = Period.of(now.astimezone(config.tz).date())
        return [
            PlannedAction(
                f"draft:{period}:{now.isoformat()}",
                self.name,
                rule,
                [e.id for e in heard],
                {"period": str(period), "now": now.isoformat()},
            )
        ]

    def run(
        self, project: Project, params: dict[str, Any], now: datetime, sender: Sender
    ) -> Outcome:
        return Outcome("done", _build_period(project, params)[1])


class Alert:
    """A short edition listing the calls whose deadline is `lead` days away; calls crossing
    the same lead on the same day share one alert."""

    name: ClassVar[str] = "alert"

    def plan(
        self, heard: list[Event], rule: str, send: bool, config: Config, now: datetime
    ) -> list[PlannedAction]:
        batches: dict[tuple[str, int], list[Event]] = {}
        for event in heard:
            if event.kind == CALL_DEADLINE_APPROACHING:
                day = event.time.astimezone(config.tz).date().isoformat()
                batches.setdefault((day, event.payload["lead_days"]), []).append(event)
        return [
            PlannedAction(
                f"alert:{day}:{lead}d",
                self.name,
                rule,
                [e.id for e in events],
                {
                    "day": day,
                    "lead_days": lead,
                    "now": min(e.time for e in events).isoformat(),
                    "calls": sorted({e.payload["call"] for e in events}),
                    "send": send,
                },
            )
            for (day, lead), events in sorted(batches.items())
        ]

    def run(
        self, project: Project, params: dict[str, Any], now: datetime, sender: Sender
    ) -> Outcome:
        late = now - datetime.fromisoformat(params["now"])
        if late > ALERT_GRACE:
            return Outcome("expired", f"{late} late: its days left would be wrong, so not sent")
        if not _any_open(project, params["calls"], now):
            return Outcome("expired", "every call in the alert closed before it could go out")
        built = build_alert(
            project,
            call_ids=params["calls"],
            lead_days=params["lead_days"],
            day=date.fromisoformat(params["day"]),
            now=datetime.fromisoformat(params["now"]),
        )
        if built is None:
            return Outcome("expired", "every call in the alert has closed")
        issue_id, _issues = built
        summary = f"built {issue_id}"
        if params.get("send"):
            summary += "; " + sender(project, issue_id)
        return Outcome("done", summary)


def _build_period(project: Project, params: dict[str, Any]) -> tuple[str, str]:
    """Build `params["period"]` as of `params["now"]`; the period and a one-line summary.

    An issue that has started going out is left as it is: a digest then resumes its send,
    a draft has nothing to do.
    """
    try:
        result = build(
            project,
            period=Period.parse(params["period"]),
            now=datetime.fromisoformat(params["now"]),
        )
    except IssueSent:
        return params["period"], f"{params['period']} already went out; not rebuilt"
    return str(result.period), (
        f"built {result.period} ({', '.join(i.language for i in result.issues)})"
    )


def _any_open(project: Project, call_ids: list[str], now: datetime) -> bool:
    config = load_config(project.root)
    content = load_content(
        project.content_dir, config.newsletter.languages, config.newsletter.default_language
    )
    return any(call.deadline > now for call in content.calls if call.id in set(call_ids))


ACTIONS: dict[str, Action] = {action.name: action for action in (Digest(), Draft(), Alert())}
