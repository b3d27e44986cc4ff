"""`newsletter watch`: the event loop. Poll sources, log new events, plan and run actions.

Each tick: every source reports what happened since the last tick; events not yet in the log
are recorded and dispatched to the rules; the rules plan actions with unique keys; every action
that is due (new, or failed and past its back-off) runs, and its outcome is logged. Actions are
idempotent (a build gives the same files; `send` skips who has it, by the ledger), so an action
cut short by a crash is simply run again on the next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from newsletter.actions import ACTIONS, Sender
from newsletter.config import Config, load_config
from newsletter.errors import NewsletterError
from newsletter.events import EVENT_LOG_NAME, ActionRecord, Dispatcher, Event, EventLog
from newsletter.project import Project
from newsletter.rules import listen
from newsletter.sources import FeedSource, FileSource, Source, TimelineSource

log = logging.getLogger("newsletter.watch")


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass
class SystemClock:
    tz: ZoneInfo

    def now(self) -> datetime:
        return datetime.now(self.tz)


@dataclass
class ShiftedClock:
    """Real time, starting from `start`: `watch --now` back-fills and tests drive time this way."""

    start: datetime
    _origin: float = field(default_factory=time.monotonic)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._origin)


@dataclass
class ManualClock:
    """A clock that moves only when told: a year of events in seconds."""

    current: datetime

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


def send_with_ledger(project: Project, issue_id: str) -> str:
    """The watcher's sender: `newsletter send ISSUE` with the delivery ledger. An incomplete
    send raises, so the action is retried later (the ledger skips who already has it)."""
    from newsletter.send import send_issue  # SMTP machinery only when something is sent

    report = send_issue(project, issue_id)
    summary = f"sent {report.sent}, failed {report.failed}, pending {report.remaining}"
    if not report.ok:
        raise NewsletterError(f"send of {issue_id} incomplete: {summary}")
    return summary


@dataclass
class TickReport:
    now: datetime
    events: list[Event]
    ran: list[tuple[str, str, str]]
    """(action key, status, outcome) of every action run in this tick."""

    @property
    def failed(self) -> list[tuple[str, str, str]]:
        return [r for r in self.ran if r[1] in ("failed", "gave_up")]


class Watcher:
    """The event engine of one project: sources, the event log, rules and actions."""

    def __init__(
        self,
        project: Project,
        clock: Clock,
        *,
        sender: Sender = send_with_ledger,
        sources: Sequence[Source] | None = None,
    ):
        self.project = project
        self.clock = clock
        self.sender = sender
        self.running: str | None = None
        """The key of the action being carried out, if any (a stop request interrupts it)."""
        self.log = EventLog(project.state_dir / EVENT_LOG_NAME)
        config = load_config(project.root)
        self.sources = (
            list(sources)
            if sources is not None
            else [
                FileSource(project, self.log),
                TimelineSource(project, self.log, list(config.watch.deadline_leads)),
                FeedSource(
                    project, self.log, timedelta(minutes=config.watch.feed_interval_minutes)
                ),
            ]
        )

    def tick(self, stop: threading.Event | None = None) -> TickReport:
        """One pass: poll, then record events, plan actions and store marks in one
        transaction, then run what is due. A crash at any point repeats nothing and loses
        nothing: before the commit the next tick polls the same again; after it, the actions
        are in the log."""
        config = load_config(self.project.root)
        now = self.clock.now()
        polled = []
        for source in self.sources:
            try:
                polled.append(source.poll(now))
            except NewsletterError as exc:
                # Its marks stay where they were: the next tick looks at this window again.
                log.warning("%s: %s", source.name, exc)
        dispatcher = Dispatcher()
        listeners = listen(config, dispatcher)
        new_events = []
        with self.log.transaction():
            for found in polled:
                for event in found.events:
                    if self.log.record(event, now) and not found.baseline:
                        new_events.append(event)
                        dispatcher.dispatch(event)
            for listener in listeners:
                for planned in listener.plan(config, now):
                    self.log.plan(
                        planned.key,
                        planned.action,
                        planned.rule,
                        planned.event_ids,
                        planned.params,
                        now,
                    )
            for found in polled:
                for name, value in found.marks.items():
                    self.log.set_mark(name, value)
            self.log.set_mark("last_tick", now.isoformat())
        ran = []
        for action in self._due(now):
            if stop is not None and stop.is_set():
                break
            ran.append(self._run(action, config, now))
        return TickReport(now, new_events, ran)

    def _due(self, now: datetime) -> list[ActionRecord]:
        """Due actions; of several pending drafts of one period only the newest runs."""
        due = self.log.due(now)
        newest: dict[str, ActionRecord] = {}
        for action in due:
            if action.action == "draft":
                newest[action.params["period"]] = action
        keep = []
        for action in due:
            if action.action == "draft" and newest[action.params["period"]] is not action:
                self.log.finish(action.key, "superseded", "a newer draft was built", now)
                continue
            keep.append(action)
        return keep

    def _run(self, action: ActionRecord, config: Config, now: datetime) -> tuple[str, str, str]:
        try:
            handler = ACTIONS.get(action.action)
            if handler is None:
                raise NewsletterError(f"unknown action {action.action!r} in the event log")
            self.running = action.key
            try:
                result = handler.run(self.project, action.params, now, self.sender)
            finally:
                self.running = None
            status, outcome = result.status, result.summary
        except Exception as exc:  # a failed action must never stop the watcher
            outcome = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if action.attempts + 1 >= config.watch.max_attempts:
                self.log.finish(action.key, "gave_up", outcome, now)
                log.error(
                    "%s gave up after %d attempts: %s", action.key, action.attempts + 1, outcome
                )
                return action.key, "gave_up", outcome
            delay = timedelta(minutes=config.watch.retry_minutes * 2**action.attempts)
            self.log.finish(action.key, "failed", outcome, now, retry_in=delay)
            log.warning("%s failed (retry in %s): %s", action.key, delay, outcome)
            return action.key, "failed", outcome
        self.log.finish(action.key, status, outcome, now)
        if action.action == "draft":
            self.log.supersede(action, now)
        log.info("%s %s: %s", action.key, status, outcome)
        return action.key, status, outcome

    def run(
        self,
        stop: threading.Event,
        *,
        interval: float | None = None,
        on_tick: Callable[[TickReport], None] | None = None,
        on_error: Callable[[NewsletterError], None] | None = None,
    ) -> None:
        """Tick until `stop` is set; a file change wakes the loop early."""
        config = load_config(self.project.root)
        interval = interval or config.watch.tick_seconds
        changed = threading.Event()
        watcher = threading.Thread(target=self._watch_files, args=(stop, changed), daemon=True)
        watcher.start()
        while not stop.is_set():
            try:
                report = self.tick(stop)
            except KeyboardInterrupt:
                # Stopped in the middle of an action: it stays pending in the log and runs
                # again at the next start; a send resumes from its ledger.
                log.warning("stopped during an action; it runs again at the next start")
                break
            except NewsletterError as exc:
                # A typo in newsletter.toml must not end a long-running watcher: say so, and
                # try again at the next tick (or as soon as the file is saved again).
                for problem in exc.problems:
                    log.error("%s", problem)
                if on_error:
                    on_error(exc)
            else:
                if on_tick:
                    on_tick(report)
            deadline = time.monotonic() + interval
            while not stop.is_set() and not changed.is_set() and time.monotonic() < deadline:
                stop.wait(0.1)
            changed.clear()

    def _watch_files(self, stop: threading.Event, changed: threading.Event) -> None:
        from watchfiles import watch

        paths = [
            p
            for p in (
                self.project.content_dir,
                self.project.templates_dir,
                self.project.config_path,
            )
            if p.exists()
        ]
        for _changes in watch(*paths, stop_event=stop, debounce=300, rust_timeout=500):
            changed.set()
