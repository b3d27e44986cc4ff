"""The project's SQLite state: which news went out in which issue.

SQLite rather than a JSON file because several processes (build, preview, watch) share it and
each write must be atomic on its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from newsletter.dates import Period

_SCHEMA = """
CREATE TABLE IF NOT EXISTS published_news (
    key TEXT PRIMARY KEY,
    period TEXT NOT NULL
);
"""


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


class NewsRecord:
    """News keys and the earliest issue that carried them, so no story appears twice."""

    def __init__(self, path: Path):
        self.path = path

    def sent_before(self, period: Period) -> frozenset[str]:
        if not self.path.exists():
            return frozenset()
        with closing(connect(self.path)) as db:
            rows = db.execute("SELECT key FROM published_news WHERE period < ?", (str(period),))
            return frozenset(key for (key,) in rows)

    def record(self, period: Period, keys: Iterable[str]) -> None:
        with closing(connect(self.path)) as db, db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO published_news (key, period) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET period = min(period, excluded.period)",
                [(key, str(period)) for key in keys],
            )
