"""Rules connect event kinds to actions: each `[[rules]]` table becomes a listener that the
dispatcher feeds during a tick; after the tick's events, the listener asks its action
(newsletter.actions) to plan keyed units of work from what it heard."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from newsletter.actions import ACTIONS, PlannedAction
from newsletter.config import Config, Rule
from newsletter.events import CALL_DEADLINE_APPROACHING, Dispatcher, Event


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
        return ACTIONS[self.rule.do].plan(heard, self.name, self.send, config, now)


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
