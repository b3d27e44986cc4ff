"""Sources notice what happened since the last tick and emit events with stable ids.

Each source keeps what it needs to compare against in the event log's marks, so a restarted
watcher picks up where the last one stopped, and catches up on what happened in between.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Protocol

from newsletter import __version__
from newsletter.config import load_config
from newsletter.content import load_content
from newsletter.events import (
    CONTENT_ADDED,
    CONTENT_CHANGED,
    CONTENT_REMOVED,
    FEED_ENTRY_NEW,
    Event,
    EventLog,
)
from newsletter.feeds import ingest_feeds
from newsletter.project import Project
from newsletter.timeline import timeline


class Source(Protocol):
    name: str

    def poll(self, now: datetime) -> list[Event]: ...


class FileSource:
    """Content, templates and config: added, changed or removed files (by content hash)."""

    name = "files"

    def __init__(self, project: Project, log: EventLog):
        self.project = project
        self.log = log

    def snapshot(self) -> dict[str, str]:
        files = [self.project.config_path]
        for folder in (self.project.content_dir, self.project.templates_dir):
            if folder.is_dir():
                files += [p for p in folder.rglob("*") if p.is_file() and not _scratch(p.name)]
        return {
            str(p.relative_to(self.project.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(files)
            if p.exists()
        }

    def poll(self, now: datetime) -> list[Event]:
        current = self.snapshot()
        stored = self.log.mark("files")
        self.log.set_mark("files", json.dumps(current, sort_keys=True))
        if stored is None:
            return []  # first run: nothing to compare with
        before: dict[str, str] = json.loads(stored)
        events = []
        for path, digest in current.items():
            if path not in before:
                events.append(self._event(CONTENT_ADDED, path, digest, now))
            elif before[path] != digest:
                events.append(self._event(CONTENT_CHANGED, path, digest, now))
        for path, digest in before.items():
            if path not in current:
                events.append(self._event(CONTENT_REMOVED, path, digest, now))
        return events

    def _event(self, kind: str, path: str, digest: str, now: datetime) -> Event:
        area = path.split("/", 1)[0] if "/" in path else "config"
        return Event(
            f"{kind}:{path}:{digest[:16]}", kind, now, self.name, {"path": path, "area": area}
        )


def _scratch(name: str) -> bool:
    """Editor swap and backup files are not edits."""
    return name.startswith((".", "#")) or name.endswith(("~", ".swp", ".tmp"))


class FeedSource:
    """New feed entries, polled with conditional GET at most every `interval`."""

    name = "feeds"

    def __init__(self, project: Project, log: EventLog, interval: timedelta):
        self.project = project
        self.log = log
        self.interval = interval

    def poll(self, now: datetime) -> list[Event]:
        last = self.log.mark("feeds_polled")
        if last is not None and now - datetime.fromisoformat(last) < self.interval:
            return []
        config = load_config(self.project.root)
        result = ingest_feeds(
            config.feeds,
            self.project.root,
            self.project.cache_dir,
            user_agent=f"newsletter/{__version__}",
        )
        self.log.set_mark("feeds_polled", now.isoformat())
        seen = self.log.known_of(f"{FEED_ENTRY_NEW}:{entry.key}" for entry in result.entries)
        return [
            Event(
                f"{FEED_ENTRY_NEW}:{entry.key}",
                FEED_ENTRY_NEW,
                now,
                entry.source,
                {
                    "title": entry.title,
                    "link": entry.link,
                    "published": entry.published.isoformat() if entry.published else None,
                },
            )
            for entry in result.entries
            if f"{FEED_ENTRY_NEW}:{entry.key}" not in seen
        ]


class TimelineSource:
    """Calendar events whose time has come since the last tick (all of them, after downtime)."""

    name = "timeline"

    def __init__(self, project: Project, log: EventLog, deadline_leads: list[int]):
        self.project = project
        self.log = log
        self.deadline_leads = deadline_leads

    def poll(self, now: datetime) -> list[Event]:
        last = self.log.mark("timeline_until")
        self.log.set_mark("timeline_until", now.isoformat())
        if last is None:
            return []  # a new watcher starts from now; it does not replay history
        config = load_config(self.project.root)
        content = load_content(
            self.project.content_dir,
            config.newsletter.languages,
            config.newsletter.default_language,
        )
        start = datetime.fromisoformat(last)
        # Events exactly at `now` belong to this tick: the window is (last, now].
        return [
            e
            for e in timeline(content, config.tz, start, now + _EPSILON, self.deadline_leads)
            if e.time > start
        ]


_EPSILON = timedelta(microseconds=1)
