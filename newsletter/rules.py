"""Rules turn the events of one tick into planned actions, each with a key that makes it unique.

Every rule subscribes to its event kinds through the dispatcher; after a tick's events are
dispatched, each rule's `plan()` turns what it collected into actions:

- `digest`: one per period (`digest:2026-11`), built as of the moment the period closed, so a
  retry builds the very same issue; then sent when the rule (or `watch.auto_send`) says so.
- `alert`: one per (day, lead) (`alert:2026-11-19:14d`), listing every call that crossed that
  lead on that day, however many there are.
- `draft`: one per tick for the current period: many edits and entries, one rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from newsletter.config import Config, Rule
from newsletter.dates import Period
from newsletter.events import CALL_DEADLINE_APPROACHING, PERIOD_CLOSED, Dispatcher, Event


@dataclass(frozen=True)
class PlannedAction:
    key: str
    action: str
    rule: str
    event_ids: list[str]
    params: dict[str, Any]


@dataclass
class RuleListener:
    """One configured rule, collecting the events it listens to during a tick."""

    name: str
    rule: Rule
    send: bool
    heard: list[Event] = field(default_factory=list)

    def hear(self, event: Event) -> None:
        filtered = self.rule.lead_days and event.kind == CALL_DEADLINE_APPROACHING
        if filtered and event.payload.get("lead_days") not in self.rule.lead_days:
            return
        self.heard.append(event)

    def plan(self, config: Config, now: datetime) -> list[PlannedAction]:
        heard, self.heard = self.heard, []
        if not heard:
            return []
        if self.rule.do == "draft":
            period = Period.of(now.astimezone(config.tz).date())
            return [
                PlannedAction(
                    f"draft:{period}:{now.isoformat()}",
                    "draft",
                    self.name,
                    [e.id for e in heard],
                    {"period": str(period), "now": now.isoformat()},
                )
            ]
        if self.rule.do == "digest":
            return [self._digest(event, config) for event in heard]
        return self._alerts(heard, config)

    def _digest(self, event: Event, config: Config) -> PlannedAction:
        if event.kind == PERIOD_CLOSED:
            period = event.payload["period"]
        else:
            period = str(Period.of(event.time.astimezone(config.tz).date()))
        return PlannedAction(
            f"digest:{period}",
            "digest",
            self.name,
            [event.id],
            {"period": period, "now": event.time.isoformat(), "send": self.send},
        )

    def _alerts(self, heard: list[Event], config: Config) -> list[PlannedAction]:
        batches: dict[tuple[str, int], list[Event]] = {}
        for event in heard:
            if event.kind != CALL_DEADLINE_APPROACHING:
                continue
            day = event.time.astimezone(config.tz).date().isoformat()
            batches.setdefault((day, event.payload["lead_days"]), []).append(event)
        return [
            PlannedAction(
                f"alert:{day}:{lead}d",
                "alert",
                self.name,
                [e.id for e in events],
                {
                    "day": day,
                    "lead_days": lead,
                    "now": min(e.time for e in events).isoformat(),
                    "calls": sorted({e.payload["call"] for e in events}),
                    "send": self.send,
                },
            )
            for (day, lead), events in sorted(batches.items())
        ]


def listen(config: Config, dispatcher: Dispatcher) -> list[RuleListener]:
    """Subscribe every configured rule to its event kinds."""
    listeners = []
    for index, rule in enumerate(config.rules):
        send = rule.send if rule.send is not None else config.watch.auto_send
        listener = RuleListener(f"rules.{index}.{rule.do}", rule, send and rule.do != "draft")
        for kind in rule.on:
            dispatcher.subscribe(kind, listener.hear)
        listeners.append(listener)
    return listeners
