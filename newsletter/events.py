"""Every event kind in one place, the dispatcher that routes events to rules, and the event log.

Sources (newsletter.sources) notice what happened and emit `Event`s; the dispatcher hands each
one to the handlers subscribed to its kind; the log (SQLite) remembers every event seen and every
action taken, so each happens once across restarts and crashes.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

CONTENT_ADDED = "content.added"
CONTENT_CHANGED = "content.changed"
CONTENT_REMOVED = "content.removed"
FEED_ENTRY_NEW = "feed.entry_new"
CALL_OPENS = "call.opens"
CALL_DEADLINE_APPROACHING = "call.deadline_approaching"
MILESTONE_REACHED = "milestone.reached"
EVENT_REACHED = "event.reached"
PERIOD_CLOSED = "period.closed"

KINDS = (
    CONTENT_ADDED,
    CONTENT_CHANGED,
    CONTENT_REMOVED,
    FEED_ENTRY_NEW,
    CALL_OPENS,
    CALL_DEADLINE_APPROACHING,
    MILESTONE_REACHED,
    EVENT_REACHED,
    PERIOD_CLOSED,
)
"""All event kinds; rules in newsletter.toml name these."""


@dataclass(frozen=True)
class Event:
    """Something that happened (or, on the timeline, will happen) at `time`.

    `id` is stable: the same happening always gets the same id, which is what makes the log
    able to tell a new event from one already handled.
    """

    id: str
    kind: str
    time: datetime
    source: str
    payload: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "time": self.time.isoformat(),
            "source": self.source,
            "payload": self.payload,
        }


EVENT_LOG_NAME = "events.sqlite3"
"""The event log's file in the project's state directory."""

Handler = Callable[[Event], None]


class Dispatcher:
    """Routes events to the handlers subscribed to their kind (or to every kind with "*")."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, kind: str, handler: Handler) -> None:
        if kind != "*" and kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(KINDS)}")
        self._handlers[kind].append(handler)

    def dispatch(self, event: Event) -> None:
        for handler in [*self._handlers.get(event.kind, ()), *self._handlers.get("*", ())]:
            handler(event)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    time TEXT NOT NULL,
    source TEXT NOT NULL,
    payload TEXT NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE TABLE IF NOT EXISTS actions (
    key TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    rule TEXT NOT NULL,
    events TEXT NOT NULL,
    status TEXT NOT NULL,          -- pending, done, failed, expired
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt TEXT,
    outcome TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS marks (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


_ACTION_COLUMNS = (
    "key, action, rule, events, status, attempts, next_attempt, outcome, params, updated_at"
)


@dataclass(frozen=True)
class ActionRecord:
    key: str
    action: str
    rule: str
    events: list[str]
    status: str
    attempts: int
    next_attempt: datetime | None
    outcome: str
    params: dict[str, Any]
    updated_at: datetime


class EventLog:
    """The SQLite record of events seen and actions taken. One short transaction per change."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection for the log's life, used by one thread (the watcher's tick). In WAL
        # mode with synchronous=NORMAL every committed write survives a crash of the process.
        self._connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.executescript(_SCHEMA)

    def close(self) -> None:
        self._connection.close()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        yield self._connection

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside is written together or not at all (a crash leaves no half)."""
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")

    # events
    def record(self, event: Event, seen_at: datetime) -> bool:
        """Remember `event`; False when it was already known (so it is not handled twice)."""
        with self._db() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO events (id, kind, time, source, payload, seen_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    event.id,
                    event.kind,
                    event.time.isoformat(),
                    event.source,
                    json.dumps(event.payload, sort_keys=True, default=str),
                    seen_at.isoformat(),
                ),
            )
            return cursor.rowcount == 1

    def known(self, event_id: str) -> bool:
        return bool(self.known_of([event_id]))

    def known_of(self, event_ids: Iterable[str]) -> set[str]:
        """Which of these ids the log has seen."""
        ids = list(event_ids)
        found: set[str] = set()
        with self._db() as db:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = db.execute(
                    f"SELECT id FROM events WHERE id IN ({','.join('?' * len(chunk))})", chunk
                )
                found.update(row[0] for row in rows)
        return found

    def events(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        kinds: Iterable[str] = (),
    ) -> list[Event]:
        query, args = "SELECT id, kind, time, source, payload FROM events WHERE 1=1", []
        kinds = list(kinds)
        if kinds:
            query += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += kinds
        with self._db() as db:
            rows = db.execute(query + " ORDER BY time, id", args).fetchall()
        found = [Event(i, k, datetime.fromisoformat(t), s, json.loads(p)) for i, k, t, s, p in rows]
        return [
            e for e in found if (start is None or e.time >= start) and (end is None or e.time < end)
        ]

    # actions
    def plan(
        self,
        key: str,
        action: str,
        rule: str,
        event_ids: list[str],
        params: dict[str, Any],
        now: datetime,
    ) -> bool:
        """Add an action unless its key is known; True when it is new."""
        with self._db() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO actions (key, action, rule, events, status, params, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
                (
                    key,
                    action,
                    rule,
                    json.dumps(event_ids),
                    json.dumps(params, sort_keys=True),
                    now.isoformat(),
                    now.isoformat(),
                ),
            )
            return cursor.rowcount == 1

    def due(self, now: datetime) -> list[ActionRecord]:
        """Pending actions, and failed ones whose back-off has run out, oldest first."""
        with self._db() as db:
            rows = db.execute(
                f"SELECT {_ACTION_COLUMNS} FROM actions WHERE status = 'pending' OR "
                "(status = 'failed' AND next_attempt <= ?) ORDER BY created_at, key",
                (now.isoformat(),),
            ).fetchall()
        return [_action(row) for row in rows]

    def finish(
        self, key: str, status: str, outcome: str, now: datetime, retry_in: timedelta | None = None
    ) -> None:
        next_attempt = (now + retry_in).isoformat() if retry_in is not None else None
        with self._db() as db:
            db.execute(
                "UPDATE actions SET status = ?, outcome = ?, next_attempt = ?, "
                "attempts = attempts + 1, updated_at = ? WHERE key = ?",
                (status, outcome, next_attempt, now.isoformat(), key),
            )

    def supersede(self, done: ActionRecord, now: datetime) -> None:
        """Retire the older unfinished actions of the same kind and period as `done`."""
        with self._db() as db:
            rows = db.execute(
                "SELECT key, params FROM actions WHERE action = ? AND key != ? AND "
                "status IN ('pending', 'failed')",
                (done.action, done.key),
            ).fetchall()
        for key, params in rows:
            if json.loads(params).get("period") == done.params.get("period"):
                self.finish(key, "superseded", f"superseded by {done.key}", now)

    def actions(self, *, status: str | None = None) -> list[ActionRecord]:
        query = f"SELECT {_ACTION_COLUMNS} FROM actions"
        args: list[str] = []
        if status:
            query += " WHERE status = ?"
            args.append(status)
        with self._db() as db:
            return [_action(row) for row in db.execute(query + " ORDER BY created_at, key", args)]

    # marks: small named values such as the last tick's time
    def mark(self, name: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT value FROM marks WHERE name = ?", (name,)).fetchone()
            return row[0] if row else None

    def set_mark(self, name: str, value: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO marks (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )


def _action(row: tuple[Any, ...]) -> ActionRecord:
    key, action, rule, events, status, attempts, next_attempt, outcome, params, updated = row
    return ActionRecord(
        key,
        action,
        rule,
        json.loads(events),
        status,
        attempts,
        datetime.fromisoformat(next_attempt) if next_attempt else None,
        outcome,
        json.loads(params),
        datetime.fromisoformat(updated),
    )
