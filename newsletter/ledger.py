"""The delivery ledger: one row per (issue, recipient), written as each message goes out.

States: `sending` (claimed, the message is on its way), `sent` (the server took it),
`failed` (refused for good, with the server's reply), `pending` (a temporary failure; the next
run tries again). A run sends to every subscriber without a `sent` or `failed` row, so a run
after a crash resumes where the last one stopped. A `sending` row left by a crash is the one
message whose fate is unknown: it is sent again (see docs/sending.md).

A recipient gets an issue once, whatever its language; the row says which language went out.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from newsletter import subscribers
from newsletter.subscribers import now_stamp

STATES = ("sending", "sent", "failed", "pending")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    issue TEXT NOT NULL,
    email TEXT NOT NULL COLLATE NOCASE,
    language TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'failed', 'pending')),
    attempts INTEGER NOT NULL DEFAULT 0,
    reply TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL DEFAULT '',
    updated TEXT NOT NULL,
    PRIMARY KEY (issue, email)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Due:
    """A subscriber the issue has not reached yet (`state` is None, `sending` or `pending`)."""

    id: int
    email: str
    name: str
    language: str
    state: str | None


@dataclass(frozen=True)
class SentIssue:
    issue: str
    language: str
    sent: int
    last: str


class Ledger:
    """Thread-safe: the send workers share one connection, each write its own transaction."""

    def __init__(self, path: Path):
        self.path = path
        self.db = subscribers.connect(path)
        self.db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        with self._lock:
            self.db.execute(sql, args)

    def claim(self, issue: str, email: str, language: str, message_id: str) -> bool:
        """Record that the message is about to go out; committed before the first byte.

        False, and nothing changes, when the row is already final (`sent` or `failed`, by
        another run): the caller must then not send. A `sending` row left by a run that died
        is claimed again (its message is the one in doubt); two live runs of one issue are
        kept apart by the send lock, not here.
        """
        with self._lock:
            cursor = self.db.execute(
                "INSERT INTO deliveries"
                " (issue, email, language, state, attempts, message_id, updated)"
                " VALUES (?, ?, ?, 'sending', 1, ?, ?) ON CONFLICT (issue, email) DO UPDATE SET"
                " state = 'sending', attempts = attempts + 1, language = excluded.language,"
                " message_id = excluded.message_id, updated = excluded.updated"
                " WHERE deliveries.state IN ('sending', 'pending')",
                (issue, email, language, message_id, now_stamp()),
            )
            return cursor.rowcount == 1

    def settle(self, issue: str, email: str, state: str, reply: str = "") -> None:
        """The outcome of the last claim: sent, failed or pending (a `sent` row stays so)."""
        if state not in STATES[1:]:
            raise ValueError(state)
        self._write(
            "UPDATE deliveries SET state = ?, reply = ?, updated = ? "
            "WHERE issue = ? AND email = ? AND state != 'sent'",
            (state, reply[:500], now_stamp(), issue, email),
        )

    def state(self, issue: str, email: str) -> str | None:
        with self._lock:
            row = self.db.execute(
                "SELECT state FROM deliveries WHERE issue = ? AND email = ?", (issue, email)
            ).fetchone()
        return row[0] if row else None

    def counts(self, issue: str, languages: list[str] | None = None) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        with self._lock:
            rows = self.db.execute(
                "SELECT language, state, count(*) FROM deliveries WHERE issue = ? "
                "GROUP BY language, state",
                (issue,),
            ).fetchall()
        for language, state, count in rows:
            if languages is None or language in languages:
                counts[state] += count
        return counts

    def failures(self, issue: str) -> list[tuple[str, str]]:
        with self._lock:
            return self.db.execute(
                "SELECT email, reply FROM deliveries WHERE issue = ? AND state = 'failed' "
                "ORDER BY email",
                (issue,),
            ).fetchall()

    def due(self, issue: str, *, page: int = 500) -> Iterator[Due]:
        """Subscribed addresses without a final row for `issue`, by subscriber id, a page at a
        time (an unsubscribe during a long send takes effect from the next page)."""
        after = 0
        while True:
            with self._lock:
                rows = self.db.execute(
                    "SELECT s.id, s.email, s.name, s.language, d.state FROM subscribers s "
                    "LEFT JOIN deliveries d ON d.issue = ? AND d.email = s.email "
                    "WHERE s.status = 'subscribed' AND s.id > ? "
                    "AND (d.state IS NULL OR d.state IN ('sending', 'pending')) "
                    "ORDER BY s.id LIMIT ?",
                    (issue, after, page),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield Due(*row)
            after = rows[-1][0]

    def due_languages(self, issue: str) -> dict[str, int]:
        """How many due subscribers have each stored language (for totals and checks)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT s.language, count(*) FROM subscribers s "
                "LEFT JOIN deliveries d ON d.issue = ? AND d.email = s.email "
                "WHERE s.status = 'subscribed' "
                "AND (d.state IS NULL OR d.state IN ('sending', 'pending')) GROUP BY s.language",
                (issue,),
            ).fetchall()
        return dict(rows)

    def sent_issues(self) -> list[SentIssue]:
        """Issues with at least one delivery, newest first: what the web archive shows."""
        try:
            with self._lock:
                rows = self.db.execute(
                    "SELECT issue, language, count(*), max(updated) FROM deliveries "
                    "WHERE state = 'sent' GROUP BY issue, language ORDER BY issue DESC, language"
                ).fetchall()
        except sqlite3.OperationalError:
            return []
        return [SentIssue(*row) for row in rows]
