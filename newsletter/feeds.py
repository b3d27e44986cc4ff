"""Feeds: fetch (limits, cache, conditional GET) -> parse -> normalise -> sanitise -> dedupe.

One bad feed never stops a build: every failure becomes a warning naming the feed, and the
last good entries from the on-disk cache stand in. Nothing in here raises for a single feed.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import html
import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Container, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urljoin, urlsplit, urlunsplit

import feedparser
import nh3

from newsletter import __version__
from newsletter.config import Feed
from newsletter.errors import Problem

__all__ = [
    "FeedEntry",
    "FeedError",
    "FeedsResult",
    "dedupe",
    "ingest_feeds",
    "normalise_link",
    "parse_feed",
    "sanitise_html",
]

CACHE_VERSION = 2
SUMMARY_TEXT_LIMIT = 400
MAX_PARALLEL_FETCHES = 8
_CHUNK = 64 * 1024

# Email clients render a small subset of HTML; anything else is noise or danger.
ALLOWED_TAGS = {
    "p",
    "br",
    "a",
    "strong",
    "b",
    "em",
    "i",
    "ul",
    "ol",
    "li",
    "blockquote",
    "h3",
    "h4",
    "code",
    "pre",
    "span",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}
"""No images: a feed's pictures would be remote, unsized and often trackers in a subscriber's
mailbox; the story's link leads to them."""
URL_SCHEMES = {"http", "https", "mailto"}
_DROP_WITH_CONTENT = {"script", "style"}
_URL_ATTRIBUTES = {("a", "href")}
_BLOCK_TAG = re.compile(r"<(?=/?(?:p|br|li|h[1-6]|blockquote|pre|ul|ol|div|tr|td)\b)", re.I)
_SPACE = re.compile(r"\s+")

TRACKING_PARAMS = {"fbclid", "gclid", "mc_cid", "mc_eid"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FeedError(Exception):
    """A document that is not a usable RSS/Atom feed, or a fetch that failed."""


@dataclass(frozen=True)
class FeedEntry:
    """One normalised feed item, ready for selection and rendering.

    `body` is the feed's own, untrusted HTML. It is only reachable through `summary_html`
    (sanitised with the allow-list) and `summary_text`, computed the first time they are read:
    an issue shows a handful of a feed's entries, so only those are ever cleaned.
    """

    key: str
    guid: str | None
    title: str
    link: str | None
    normalised_link: str | None
    published: datetime | None
    body: str = field(repr=False)
    body_base: str | None
    source: str

    @cached_property
    def summary_html(self) -> str:
        return sanitise_html(self.body, self.body_base)

    @cached_property
    def summary_text(self) -> str:
        return _truncate(html_to_text(self.summary_html))

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "guid": self.guid,
            "title": self.title,
            "link": self.link,
            "normalised_link": self.normalised_link,
            "published": self.published.isoformat() if self.published else None,
            "body": self.body,
            "body_base": self.body_base,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FeedEntry:
        published = datetime.fromisoformat(d["published"]) if d.get("published") else None
        return cls(**{**d, "published": published})


@dataclass
class FeedsResult:
    entries: list[FeedEntry] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)


# --- links and HTML -------------------------------------------------------------------------


def normalise_link(url: str) -> str:
    """A canonical form of `url` so the same article reached by two links dedupes to one."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    netloc = _normalise_netloc(parts.netloc, scheme)
    path = parts.path
    if path.endswith("/") and len(path) > 1:
        path = path.rstrip("/") or "/"
    if not path and netloc:
        path = "/"
    query = "&".join(sorted(p for p in parts.query.split("&") if p and not _is_tracking(p)))
    return urlunsplit((scheme, netloc, path, query, ""))


def _normalise_netloc(netloc: str, scheme: str) -> str:
    userinfo, at, hostport = netloc.rpartition("@")
    host, port = hostport.lower(), ""
    if not host.endswith("]") and ":" in host:  # a port, not the end of an IPv6 literal
        host, _, port = host.rpartition(":")
    if not port or (port.isdigit() and int(port) == _DEFAULT_PORTS.get(scheme)):
        return f"{userinfo}{at}{host}"
    return f"{userinfo}{at}{host}:{port}"


def _is_tracking(pair: str) -> bool:
    name = unquote_plus(pair.split("=", 1)[0]).lower()
    return name.startswith("utm_") or name in TRACKING_PARAMS


def _absolute_http(url: str | None, base: str | None) -> str | None:
    """`url` resolved against `base`, or None when it is not a usable http(s) link."""
    if not url:
        return None
    resolved = urljoin(base, url.strip()) if base else url.strip()
    parts = urlsplit(resolved)
    return resolved if parts.scheme in ("http", "https") and parts.netloc else None


def sanitise_html(html: str, base_url: str | None = None) -> str:
    """Feed HTML cut down to an email-safe allow-list, with relative links made absolute."""

    def absolutise(tag: str, attribute: str, value: str) -> str | None:
        if (tag, attribute) not in _URL_ATTRIBUTES or not base_url:
            return value
        absolute = urljoin(base_url, value.strip())
        return absolute if urlsplit(absolute).scheme in URL_SCHEMES else None

    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        clean_content_tags=_DROP_WITH_CONTENT,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=absolutise,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
        strip_comments=True,
    )


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment: tags gone, entities decoded, whitespace collapsed."""
    spaced = _BLOCK_TAG.sub(" <", fragment)
    stripped = nh3.clean(spaced, tags=set(), clean_content_tags=_DROP_WITH_CONTENT)
    return _SPACE.sub(" ", html.unescape(stripped)).strip()


def _truncate(text: str, limit: int = SUMMARY_TEXT_LIMIT) -> str:
    """Cut at a word boundary so a digest never shows half a word."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.-–—") + "…"


# --- parsing ----------------------------------------------------------------------------------


def parse_feed(data: bytes, source: str, base_url: str | None = None) -> list[FeedEntry]:
    """Entries of an RSS 0.9x/1.0/2.0 or Atom document; FeedError when it is not a feed.

    feedparser's own sanitiser and URI resolver are off: nh3 does the same job about ten times
    faster. `base_url` (the document's URL) lets feedparser honour xml:base for links.
    """
    headers = {"content-location": base_url} if base_url else {}
    headers["content-type"] = "application/xml"
    parsed = feedparser.parse(
        data, sanitize_html=False, resolve_relative_uris=False, response_headers=headers
    )
    _check_is_feed(parsed)
    feed_link = _absolute_http(parsed.feed.get("link"), base_url)
    fallback_base = base_url or feed_link
    entries = (_entry(raw, source, fallback_base) for raw in parsed.entries)
    return [entry for entry in entries if entry is not None]


def _check_is_feed(parsed: feedparser.FeedParserDict) -> None:
    if parsed.entries:
        return  # a bozo feed that still yields entries is good enough
    problem = parsed.get("bozo_exception")
    if parsed.get("bozo") and not isinstance(problem, feedparser.ThingsNobodyCaresAboutButMe):
        reason = str(problem) or type(problem).__name__
        raise FeedError(f"not a valid RSS/Atom feed: {reason}")
    if not parsed.get("version"):
        raise FeedError("not a valid RSS/Atom feed: no RSS or Atom elements found")


def _entry(raw: feedparser.FeedParserDict, source: str, base: str | None) -> FeedEntry | None:
    """One normalised entry, or None when it has neither title nor link (nothing to show)."""
    title = html_to_text(_as_html(raw.get("title_detail")))
    link = _absolute_http(raw.get("link"), base)
    if not title and not link:
        return None
    guid = (raw.get("id") or "").strip() or None
    normalised = normalise_link(link) if link else None
    body, body_base = _body(raw)
    if guid:
        key = f"guid:{guid}"
    elif normalised:
        key = f"link:{normalised}"
    else:
        digest = hashlib.sha256(f"{title}\n{html_to_text(body)}".encode()).hexdigest()[:16]
        key = f"hash:{digest}"
    return FeedEntry(
        key=key,
        guid=guid,
        title=title,
        link=link,
        normalised_link=normalised,
        published=_published(raw),
        body=body,
        body_base=_absolute_http(body_base, base) or base,
        source=source,
    )


def _body(raw: feedparser.FeedParserDict) -> tuple[str, str | None]:
    """The richest body (full content before summary) as HTML, with its xml:base."""
    for detail in [*raw.get("content", []), raw.get("summary_detail")]:
        if detail and detail.get("value"):
            return _as_html(detail), detail.get("base") or None
    return "", None


def _as_html(detail: dict[str, Any] | None) -> str:
    """A text construct as HTML: Atom type="text" may contain a literal `<` that is not a tag."""
    if not detail:
        return ""
    value = detail.get("value") or ""
    return html.escape(value, quote=False) if detail.get("type") == "text/plain" else value


def _published(raw: feedparser.FeedParserDict) -> datetime | None:
    """feedparser's parsed dates are UTC struct_times; make them aware datetimes."""
    stamp = raw.get("published_parsed") or raw.get("updated_parsed")
    if not stamp:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(stamp), UTC)
    except (OverflowError, ValueError, OSError):
        return None


def dedupe(entries: Iterable[FeedEntry], seen_keys: Container[str] = ()) -> list[FeedEntry]:
    """Entries not seen before, by key or by normalised link; the first occurrence wins."""
    kept: list[FeedEntry] = []
    seen_here: set[str] = set()
    for entry in entries:
        keys = {entry.key}
        if entry.normalised_link:
            keys.add(f"link:{entry.normalised_link}")
        if any(k in seen_here or k in seen_keys for k in keys):
            continue
        seen_here |= keys
        kept.append(entry)
    return kept


# --- the on-disk cache --------------------------------------------------------------------------


def _cache_file(cache_dir: Path, feed_name: str, source: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", feed_name).strip("-.")[:60] or "feed"
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return cache_dir / "feeds" / f"{safe}-{digest}.json"


def _read_cache(path: Path) -> dict[str, Any] | None:
    """The cached record, or None when absent or unreadable (a corrupt cache is no cache)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("version") != CACHE_VERSION:
            return None
        record["entries"] = [FeedEntry.from_json(e) for e in record.get("entries", [])]
        return record
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _write_cache(path: Path, record: dict[str, Any]) -> None:
    """Write atomically so a crash mid-write never leaves half a cache behind."""
    data = {**record, "version": CACHE_VERSION}
    data["entries"] = [e.to_json() for e in record["entries"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, ensure_ascii=False))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- fetching -------------------------------------------------------------------------------


@dataclass
class _Response:
    status: int
    body: bytes = b""
    url: str = ""
    etag: str | None = None
    last_modified: str | None = None


def _opener() -> urllib.request.OpenerDirector:
    """http(s) only: a redirect to ftp: or file: must fail, not read a local file."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _fetch(feed: Feed, validators: dict[str, str | None], user_agent: str) -> _Response:
    """GET with a timeout, a size limit and conditional headers; FeedError says what failed."""
    url = str(feed.url)
    headers = {
        "User-Agent": user_agent,
        "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.8",
        "Accept-Encoding": "gzip",
    }
    if validators.get("etag"):
        headers["If-None-Match"] = validators["etag"]
    if validators.get("last_modified"):
        headers["If-Modified-Since"] = validators["last_modified"]
    request = urllib.request.Request(url, headers=headers)
    deadline = time.monotonic() + feed.timeout
    try:
        with _opener().open(request, timeout=feed.timeout) as response:
            body = _read_limited(response, feed.max_bytes, deadline, feed.timeout)
            body = _decode(body, response.headers.get("Content-Encoding", ""), feed.max_bytes)
            return _Response(
                200,
                body,
                response.geturl(),
                response.headers.get("ETag"),
                response.headers.get("Last-Modified"),
            )
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 304:
            return _Response(304, url=url)
        raise FeedError(f"HTTP {exc.code} {exc.reason}".strip()) from None
    except urllib.error.URLError as exc:
        raise FeedError(_network_reason(exc.reason, feed.timeout)) from None
    except (OSError, HTTPException) as exc:
        raise FeedError(_network_reason(exc, feed.timeout)) from None


def _network_reason(reason: object, timeout: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"unreachable (timed out after {timeout:g}s)"
    if isinstance(reason, ConnectionRefusedError):
        return "unreachable (connection refused)"
    return f"unreachable ({reason or type(reason).__name__})"


def _read_limited(response: Any, max_bytes: int, deadline: float, timeout: float) -> bytes:
    """Read at most `max_bytes`; a slow drip past the timeout fails like a silent server."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FeedError(_too_big(max_bytes))
    chunks, total = [], 0
    # read1 returns what has arrived (one recv at most), so the deadline is checked between
    # drips; read(n) would wait for all n bytes, however slowly they come.
    while chunk := response.read1(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise FeedError(_too_big(max_bytes))
        if time.monotonic() > deadline:
            raise FeedError(f"unreachable (timed out after {timeout:g}s)")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """Undo gzip/deflate without ever holding more than `max_bytes` (zip bombs stop early)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise FeedError(f"unsupported Content-Encoding {encoding!r}")
    wbits = zlib.MAX_WBITS | 32  # auto-detects gzip and zlib headers
    decompressor = zlib.decompressobj(wbits)
    try:
        data = decompressor.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise FeedError(f"bad {encoding} data: {exc}") from None
    if len(data) > max_bytes:
        raise FeedError(_too_big(max_bytes))
    if not decompressor.eof:
        raise FeedError(f"truncated {encoding} data")
    return data


def _too_big(max_bytes: int) -> str:
    return f"response larger than the limit of {max_bytes:,} bytes (max_bytes)"


# --- one feed at a time ------------------------------------------------------------------------


@dataclass
class _Outcome:
    entries: list[FeedEntry]
    status: str
    warning: str | None = None


def _fallback(reason: str, cached: dict[str, Any] | None) -> _Outcome:
    """Last good entries after a failure, and a warning that says how old they are."""
    if cached and cached["entries"]:
        count = len(cached["entries"])
        when = (cached.get("fetched_at") or "")[:10] or "an earlier run"
        noun = "entry" if count == 1 else "entries"
        return _Outcome(
            cached["entries"], "cached", f"{reason}; using {count} cached {noun} from {when}"
        )
    return _Outcome([], "failed", f"{reason}; no cached entries, so nothing from this feed")


def _ingest_url(feed: Feed, cache_dir: Path, offline: bool, user_agent: str) -> _Outcome:
    url = str(feed.url)
    cache_path = _cache_file(cache_dir, feed.name, url)
    cached = _read_cache(cache_path)
    if offline:
        if cached is not None:
            return _Outcome(cached["entries"], "cached")
        return _Outcome([], "failed", "offline and never fetched; no entries from this feed")
    validators = cached or {}
    try:
        response = _fetch(feed, validators, user_agent)
        if response.status == 304:
            if cached is None:
                raise FeedError("HTTP 304 Not Modified but nothing is cached")
            return _Outcome(cached["entries"], "not-modified")
        entries = parse_feed(response.body, feed.name, response.url or url)
    except FeedError as exc:
        return _fallback(str(exc), cached)
    record = {
        "source": url,
        "etag": response.etag,
        "last_modified": response.last_modified,
        "fetched_at": _now_iso(),
        "entries": entries,
    }
    _save_quietly(cache_path, record)
    return _Outcome(entries, "fetched")


def _ingest_path(feed: Feed, root: Path, cache_dir: Path) -> _Outcome:
    """Local feeds are re-parsed only when the file changed (same path, mtime and size)."""
    path = (root / str(feed.path)).resolve()
    cache_path = _cache_file(cache_dir, feed.name, str(path))
    cached = _read_cache(cache_path)
    try:
        stat = path.stat()
        stamp = [str(path), stat.st_mtime_ns, stat.st_size]
        if cached is not None and cached.get("stamp") == stamp:
            return _Outcome(cached["entries"], "local")
        entries = parse_feed(path.read_bytes(), feed.name)
    except FileNotFoundError:
        return _fallback(f"file not found: {feed.path}", cached)
    except OSError as exc:
        return _fallback(f"cannot read {feed.path}: {exc.strerror or exc}", cached)
    except FeedError as exc:
        return _fallback(str(exc), cached)
    record = {"source": str(path), "stamp": stamp, "fetched_at": _now_iso(), "entries": entries}
    _save_quietly(cache_path, record)
    return _Outcome(entries, "local")


def _save_quietly(path: Path, record: dict[str, Any]) -> None:
    """A cache that cannot be written costs speed next time, never this build."""
    with contextlib.suppress(OSError):
        _write_cache(path, record)


def _ingest_one(
    feed: Feed, root: Path, cache_dir: Path, offline: bool, user_agent: str
) -> _Outcome:
    if feed.path is not None:
        return _ingest_path(feed, root, cache_dir)
    return _ingest_url(feed, cache_dir, offline, user_agent)


def _sort_key(entry: FeedEntry) -> tuple[bool, float]:
    return (entry.published is None, -entry.published.timestamp() if entry.published else 0.0)


def ingest_feeds(
    feeds: Sequence[Feed],
    root: Path,
    cache_dir: Path,
    *,
    offline: bool = False,
    user_agent: str = f"newsletter/{__version__}",
) -> FeedsResult:
    """Every configured feed, deduplicated and newest first.

    URL feeds are fetched concurrently (a slow server should not add its timeout to every other
    feed), but results are combined in config order so the first feed wins a duplicate.
    """
    result = FeedsResult()
    if not feeds:
        return result
    # Downloads wait on the network, so they run in threads; local files are parsing, which
    # is CPU-bound and only slowed down by threads fighting over the interpreter lock.
    remote = [feed for feed in feeds if feed.url is not None]
    outcomes_by_feed: dict[str, _Outcome] = {}
    if remote:
        workers = min(MAX_PARALLEL_FETCHES, len(remote))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="feed") as pool:
            fetched = pool.map(
                lambda f: _ingest_one(f, root, cache_dir, offline, user_agent), remote
            )
            outcomes_by_feed.update(zip((f.name for f in remote), fetched, strict=True))
    for feed in feeds:
        if feed.url is None:
            outcomes_by_feed[feed.name] = _ingest_one(feed, root, cache_dir, offline, user_agent)
    outcomes = [outcomes_by_feed[feed.name] for feed in feeds]
    combined: list[FeedEntry] = []
    for feed, outcome in zip(feeds, outcomes, strict=True):
        result.statuses[feed.name] = outcome.status
        if outcome.warning:
            result.warnings.append(Problem(outcome.warning, field=f"feeds.{feed.name}"))
        combined.extend(outcome.entries)
    result.entries = sorted(dedupe(combined), key=_sort_key)
    return result
