"""Sources notice what happened since the last tick and emit events with stable ids.

Each source keeps what it needs to compare against in the event log's marks, so a restarted
watcher picks up where the last one stopped, and catches up on what happened in between.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
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
from newsletter.timeline import LOOKBACK, timeline


@dataclass
class Polled:
    """What a source found, and the marks to store once the tick has recorded it.

    Marks are saved in the same transaction as the events, so a crash between the two can
    neither lose events (the next tick polls the same window again) nor repeat them.
    """

    events: list[Event] = field(default_factory=list)
    marks: dict[str, str] = field(default_factory=dict)
    baseline: bool = False
    """The events are what was already there when the watcher first looked: recorded as seen,
    not acted on (a new watcher does not replay history)."""


class Source(Protocol):
    name: str

    def poll(self, now: datetime) -> Polled: ...


class FileSource:
    """Content, templates and config: added, changed or removed files (by content hash)."""

    name = "files"

    def __init__(self, project: Project, log: EventLog):
        self.project = project
        self.log = log

    def snapshot(self) -> dict[str, str]:
        """Path -> content hash of every watched file that can be read right now."""
        files = [self.project.config_path]
        for folder in (self.project.content_dir, self.project.templates_dir):
            if folder.is_dir():
                files += [p for p in folder.rglob("*") if not _scratch(p.name)]
        hashes = {}
        for path in sorted(files):
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                continue  # a folder, a file saved away mid-read, or one we may not read
            hashes[str(path.relative_to(self.project.root))] = digest
        return hashes

    def poll(self, now: datetime) -> Polled:
        current = self.snapshot()
        stored = self.log.mark("files")
        marks = {"files": json.dumps(current, sort_keys=True)}
        if stored is None:
            return Polled([], marks)  # first run: nothing to compare with
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
        return Polled(events, marks)

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

    def poll(self, now: datetime) -> Polled:
        last = self.log.mark("feeds_polled")
        if last is not None and now - datetime.fromisoformat(last) < self.interval:
            return Polled()
        config = load_config(self.project.root)
        result = ingest_feeds(
            config.feeds,
            self.project.root,
            self.project.cache_dir,
            user_agent=f"newsletter/{__version__}",
        )
        seen = self.log.known_of(f"{FEED_ENTRY_NEW}:{entry.key}" for entry in result.entries)
        events = [
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
        return Polled(events, {"feeds_polled": now.isoformat()}, baseline=last is None)


class TimelineSource:
    """Calendar events whose time has come since the last tick (all of them, after downtime)."""

    name = "timeline"

    def __init__(self, project: Project, log: EventLog, deadline_leads: list[int]):
        self.project = project
        self.log = log
        self.deadline_leads = deadline_leads

    def poll(self, now: datetime) -> Polled:
        since = self.log.mark("timeline_since")
        if since is None:
            # A new watcher starts from now; it does not replay history.
            return Polled([], {"timeline_since": now.isoformat()})
        last = self.log.mark("timeline_until") or since
        # Look a day back as well: a call added at noon whose alert was due at 00:00 that day
        # still gets it. The log drops what it has already seen.
        start = max(
            datetime.fromisoformat(since), min(datetime.fromisoformat(last), now - LOOKBACK)
        )
        config = load_config(self.project.root)
        content = load_content(
            self.project.content_dir,
            config.newsletter.languages,
            config.newsletter.default_language,
        )
        # The window is (start, now]: events exactly at `now` belong to this tick.
        events = [
            e
            for e in timeline(content, config.tz, start, now + _EPSILON, self.deadline_leads)
            if e.time > start
        ]
        return Polled(events, {"timeline_until": now.isoformat()})


_EPSILON = timedelta(microseconds=1)
