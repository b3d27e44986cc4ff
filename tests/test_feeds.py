"""Feeds: parsing, sanitising, dedup, and ingest against a real local HTTP server."""

from __future__ import annotations

import gzip
import os
import re
from datetime import UTC, datetime

import feedparser
import pytest
from feedserver import FeedServer, free_port

from newsletter.config import Feed
from newsletter.feeds import (
    FeedEntry,
    FeedError,
    dedupe,
    ingest_feeds,
    normalise_link,
    parse_feed,
    sanitise_html,
)

RSS20 = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel>
  <title>EU research news</title><link>https://research.example.eu/news/</link>
  <item>
    <title>Horizon Europe &amp;amp; Japan: &lt;b&gt;talks&lt;/b&gt;   conclude</title>
    <link>/news/japan-association?utm_source=rss</link>
    <guid isPermaLink="false">hz-japan-2025</guid>
    <pubDate>Tue, 16 Dec 2025 10:00:00 +0100</pubDate>
    <description>&lt;p onclick="steal()"&gt;Japan joins
      &lt;a href="/pillar-2"&gt;Pillar II&lt;/a&gt;.
      &lt;img src="img/flags.png" alt="EU and Japan flags" onerror="x()"&gt;
      &lt;script&gt;alert(1)&lt;/script&gt;&lt;/p&gt;</description>
  </item>
  <item>
    <title>Moonshot call opens</title>
    <link>https://research.example.eu/news/moonshot/</link>
    <pubDate>Mon, 01 Dec 2025 08:00:00 GMT</pubDate>
  </item>
  <item><description>An item with neither title nor link is dropped.</description></item>
</channel></rss>
"""

RSS10 = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="https://jst.example.jp/">
    <title>JST news</title><link>https://jst.example.jp/</link><description>d</description>
  </channel>
  <item rdf:about="https://jst.example.jp/news/42">
    <title>ERC-JSPS researcher exchange</title>
    <link>https://jst.example.jp/news/42</link>
    <description>Mobility &amp;amp; open science.</description>
    <dc:date>2025-11-03T09:30:00+09:00</dc:date>
  </item>
</rdf:RDF>
"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://cordis.example.eu/projects/">
  <title>Projects</title><id>urn:x:projects</id><updated>2025-10-01T00:00:00Z</updated>
  <link rel="alternate" href="https://cordis.example.eu/projects/"/>
  <entry>
    <title type="text">JEUPISTE &lt;2013-2017&gt;</title>
    <id>urn:x:jeupiste</id>
    <link rel="alternate" href="jeupiste"/>
    <updated>2025-09-30T22:15:00-02:00</updated>
    <summary>Short summary.</summary>
    <content type="html">&lt;h3&gt;Results&lt;/h3&gt;&lt;p&gt;Policy dialogues and
      &lt;a href="/info"&gt;information services&lt;/a&gt;.&lt;/p&gt;</content>
  </entry>
</feed>
"""

RSS091 = """<?xml version="1.0"?>
<rss version="0.91"><channel>
  <title>Old feed</title><link>http://old.example.org/</link><description>d</description>
  <language>en</language>
  <item><title>EUJO-LIMMS opens the Tokyo lab</title>
    <link>http://old.example.org/limms.html</link>
    <description>European partners in LIMMS.</description></item>
</channel></rss>
"""


def rss(*items: tuple[str, str, str | None], date: str = "Mon, 01 Dec 2025 08:00:00 GMT") -> str:
    """A small RSS 2.0 document from (title, link, guid) triples."""
    body = "".join(
        f"<item><title>{t}</title><link>{link}</link>"
        + (f"<guid>{g}</guid>" if g else "")
        + f"<pubDate>{date}</pubDate></item>"
        for t, link, g in items
    )
    head = '<?xml version="1.0"?><rss version="2.0"><channel><title>x</title>'
    return f"{head}{body}</channel></rss>"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to 127.0.0.1 must not go to a proxy configured in the environment."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    with FeedServer() as running:
        yield running


def url_feed(server: FeedServer, path: str, name: str = "eu-news", **options) -> Feed:
    return Feed(name=name, url=server.url(path), **options)


def warning_text(result) -> str:
    return "\n".join(str(w) for w in result.warnings)


# --- parsing and normalising --------------------------------------------------------------------


def test_rss20_entries_are_normalised():
    entries = parse_feed(RSS20.encode(), "eu", base_url="https://research.example.eu/rss.xml")
    assert [e.title for e in entries] == [
        "Horizon Europe & Japan: talks conclude",
        "Moonshot call opens",
    ]
    first = entries[0]
    assert first.link == "https://research.example.eu/news/japan-association?utm_source=rss"
    assert first.normalised_link == "https://research.example.eu/news/japan-association"
    assert first.key == "guid:hz-japan-2025"
    assert first.published == datetime(2025, 12, 16, 9, 0, tzinfo=UTC)
    assert first.published.utcoffset().total_seconds() == 0
    assert first.source == "eu"
    assert entries[1].key == "link:https://research.example.eu/news/moonshot"


def test_rss20_summary_is_sanitised_and_absolute():
    entry = parse_feed(RSS20.encode(), "eu", base_url="https://research.example.eu/rss.xml")[0]
    html = entry.summary_html
    assert "<script" not in html and "alert(1)" not in html
    assert not re.search(r"on\w+=", html)
    assert '<a href="https://research.example.eu/pillar-2"' in html
    assert "<img" not in html and "flags.png" not in html  # feed images stay out of the email
    assert entry.summary_text == "Japan joins Pillar II."


def test_rss10_rdf():
    (entry,) = parse_feed(RSS10.encode(), "jst")
    assert entry.title == "ERC-JSPS researcher exchange"
    assert entry.link == "https://jst.example.jp/news/42"
    assert entry.published == datetime(2025, 11, 3, 0, 30, tzinfo=UTC)
    assert entry.summary_text == "Mobility & open science."


def test_atom_uses_xml_base_content_and_updated():
    (entry,) = parse_feed(ATOM.encode(), "cordis")
    assert entry.title == "JEUPISTE <2013-2017>"  # type="text": a literal <, not a tag
    assert entry.link == "https://cordis.example.eu/projects/jeupiste"
    assert entry.key == "guid:urn:x:jeupiste"
    assert entry.published == datetime(2025, 10, 1, 0, 15, tzinfo=UTC)
    assert entry.summary_html.startswith("<h3>Results</h3>")  # content wins over summary
    assert 'href="https://cordis.example.eu/info"' in entry.summary_html
    assert entry.summary_text == "Results Policy dialogues and information services."


def test_rss091():
    (entry,) = parse_feed(RSS091.encode(), "old")
    assert entry.title == "EUJO-LIMMS opens the Tokyo lab"
    assert entry.link == "http://old.example.org/limms.html"
    assert entry.published is None
    assert entry.key == "link:http://old.example.org/limms.html"


def test_relative_links_resolve_against_feed_link_without_base_url():
    doc = rss(("A", "items/a", None))
    doc = doc.replace("<title>x</title>", "<title>x</title><link>https://site.example/blog/</link>")
    (entry,) = parse_feed(doc.encode(), "s")
    assert entry.link == "https://site.example/blog/items/a"


def test_non_http_links_are_dropped():
    (entry,) = parse_feed(rss(("A", "javascript:alert(1)", "g")).encode(), "s")
    assert entry.link is None and entry.normalised_link is None and entry.key == "guid:g"


@pytest.mark.parametrize(
    "data",
    [
        b"<html><body><p>Not a feed</body></html>",
        b"\x00\x01 garbage",
        b"<?xml version='1.0'?><catalogue><book/></catalogue>",
        b"",
    ],
)
def test_non_feeds_raise(data):
    with pytest.raises(FeedError, match="not a valid RSS/Atom feed"):
        parse_feed(data, "bad")


def test_bozo_feed_with_entries_is_accepted():
    broken = b"<rss version='2.0'><channel><title>x</title><item><title>Kept</title></item>"
    assert [e.title for e in parse_feed(broken, "s")] == ["Kept"]


def test_summary_text_truncates_at_word_boundary():
    words = " ".join(f"word{i}" for i in range(200))
    doc = rss(("A", "https://x.example/a", None)).replace(
        "</title><link>", f"</title><description>{words}</description><link>"
    )
    text = parse_feed(doc.encode(), "s")[0].summary_text
    assert text.endswith("…") and len(text) <= 401
    assert text[:-1].split(" ")[-1] in words.split(" ")  # ends on a whole word


def test_entry_json_round_trip():
    entry = parse_feed(RSS20.encode(), "eu", base_url="https://research.example.eu/rss.xml")[0]
    assert FeedEntry.from_json(entry.to_json()) == entry


# --- sanitising ----------------------------------------------------------------------------------


def test_sanitise_strips_executable_content_and_keeps_allowed_tags():
    dirty = (
        '<p onclick="x()">Hi <strong>bold</strong> <em>em</em></p>'
        '<a href="javascript:alert(1)">bad</a><a href="JaVaScRiPt:alert(2)">bad2</a>'
        "<script>document.cookie</script><style>p{color:red}</style>"
        '<iframe src="https://evil.example"></iframe><span style="x" class="c">s</span>'
        '<ul><li>one</li></ul><img src="/i.png" alt="logo" width="10" onload="x()">'
    )
    clean = sanitise_html(dirty, "https://site.example/post/1")
    assert "<script" not in clean and "document.cookie" not in clean
    assert "color:red" not in clean and "<iframe" not in clean
    assert not re.search(r"on\w+=", clean)
    assert "javascript:" not in clean.lower()
    for kept in ("<p>", "<strong>bold</strong>", "<em>em</em>", "<span>s</span>", "<li>one</li>"):
        assert kept in clean
    assert "<img" not in clean


def test_sanitise_makes_relative_links_absolute_and_adds_rel():
    clean = sanitise_html('<a href="../about" title="t">About</a>', "https://site.example/a/b/")
    assert clean == (
        '<a href="https://site.example/a/about" title="t" rel="noopener noreferrer">About</a>'
    )
    assert sanitise_html('<a href="mailto:ncp@example.eu">m</a>').startswith(
        '<a href="mailto:ncp@example.eu"'
    )


# --- normalise_link and dedupe -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Example.COM:443/News/?b=2&a=1#top", "https://example.com/News?a=1&b=2"),
        ("http://example.com:80", "http://example.com/"),
        ("http://example.com:8080/x/", "http://example.com:8080/x"),
        ("https://example.com/", "https://example.com/"),
        (
            "https://example.com/p?utm_source=rss&UTM_Medium=e&fbclid=1&gclid=2&mc_cid=3&mc_eid=4",
            "https://example.com/p",
        ),
        ("https://example.com/p?id=7&utm_campaign=x", "https://example.com/p?id=7"),
        ("https://[2001:DB8::1]:443/a", "https://[2001:db8::1]/a"),
    ],
)
def test_normalise_link(url, expected):
    assert normalise_link(url) == expected


def entry(key: str, link: str | None, title: str = "t", source: str = "s") -> FeedEntry:
    return FeedEntry(
        key=key,
        guid=key.removeprefix("guid:") if key.startswith("guid:") else None,
        title=title,
        link=link,
        normalised_link=normalise_link(link) if link else None,
        published=None,
        body="",
        body_base=None,
        source=source,
    )


def test_dedupe_by_guid_and_by_normalised_link_keeps_first():
    a = entry("guid:1", "https://x.example/a", source="first")
    same_guid = entry("guid:1", "https://x.example/other", source="second")
    same_link = entry("guid:2", "https://X.example/a/?utm_source=y", source="second")
    other = entry("link:https://x.example/b", "https://x.example/b")
    assert dedupe([a, same_guid, same_link, other]) == [a, other]


def test_dedupe_against_seen_keys():
    a = entry("guid:1", "https://x.example/a")
    b = entry("guid:2", "https://x.example/b")
    c = entry("guid:3", "https://x.example/c")
    seen = {"guid:1", "link:https://x.example/b"}
    assert dedupe([a, b, c], seen_keys=seen) == [c]


# --- ingest: local files -------------------------------------------------------------------------


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = feedparser.parse

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(feedparser, "parse", counting)
    return calls


def test_local_feed_is_parsed_once_until_it_changes(tmp_path, monkeypatch):
    feed_file = tmp_path / "feeds" / "local.xml"
    feed_file.parent.mkdir()
    feed_file.write_text(rss(("First", "https://x.example/1", "g1")))
    feeds = [Feed(name="local", path="feeds/local.xml")]
    calls = count_parses(monkeypatch)

    first = ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    second = ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    assert calls[0] == 1
    assert first.statuses == second.statuses == {"local": "local"}
    assert second.entries == first.entries and [e.title for e in first.entries] == ["First"]

    feed_file.write_text(rss(("Changed title", "https://x.example/1", "g1")))
    os.utime(feed_file, ns=(1, 1_000_000_000))  # a distinct mtime even on coarse filesystems
    third = ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    assert calls[0] == 2
    assert [e.title for e in third.entries] == ["Changed title"]


def test_missing_local_file_warns_and_never_raises(tmp_path):
    result = ingest_feeds([Feed(name="gone", path="nope.xml")], tmp_path, tmp_path / "cache")
    assert result.entries == [] and result.statuses == {"gone": "failed"}
    assert "feeds.gone" in warning_text(result) and "nope.xml" in warning_text(result)


def test_broken_local_file_falls_back_to_cached_entries(tmp_path):
    feed_file = tmp_path / "local.xml"
    feed_file.write_text(rss(("Good", "https://x.example/1", "g1")))
    feeds = [Feed(name="local", path="local.xml")]
    ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    feed_file.write_text("<html>oops</p>")
    result = ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    assert [e.title for e in result.entries] == ["Good"]
    assert result.statuses == {"local": "cached"}
    assert "not a valid RSS/Atom feed" in warning_text(result)
    assert "using 1 cached entry from" in warning_text(result)


def test_ingest_dedupes_across_feeds_first_feed_wins_and_sorts_newest_first(tmp_path):
    (tmp_path / "a.xml").write_text(
        rss(
            ("Shared A", "https://x.example/shared", "a1"), ("Old", "https://x.example/old", "a2")
        ).replace("Mon, 01 Dec 2025", "Mon, 01 Sep 2025", 1)  # "Shared A" is older
    )
    (tmp_path / "b.xml").write_text(
        rss(
            ("Shared B", "https://x.example/shared/?utm_source=b", "b1"),
            ("Same guid", "https://x.example/z", "a2"),
            ("New", "https://x.example/new", "b3"),
            date="Wed, 10 Dec 2025 08:00:00 GMT",
        )
    )
    feeds = [Feed(name="a", path="a.xml"), Feed(name="b", path="b.xml")]
    result = ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    assert [(e.title, e.source) for e in result.entries] == [
        ("New", "b"),
        ("Old", "a"),
        ("Shared A", "a"),
    ]


# --- ingest: HTTP --------------------------------------------------------------------------------


def test_etag_conditional_get_returns_304_and_cached_entries(server, tmp_path):
    server.set("/feed.xml", RSS20, etag='"v1"')
    feeds = [url_feed(server, "/feed.xml")]
    first = ingest_feeds(feeds, tmp_path, tmp_path / "cache", user_agent="newsletter-test/1")
    second = ingest_feeds(feeds, tmp_path, tmp_path / "cache")

    assert first.statuses == {"eu-news": "fetched"}
    assert second.statuses == {"eu-news": "not-modified"}
    assert second.entries == first.entries and len(first.entries) == 2
    assert first.warnings == second.warnings == []
    assert server.downloads("/feed.xml") == 1
    sent = server.requests_to("/feed.xml")
    assert sent[0].header("If-None-Match") is None
    assert sent[0].header("User-Agent") == "newsletter-test/1"
    assert sent[0].header("Accept-Encoding") == "gzip"
    assert sent[1].header("If-None-Match") == '"v1"'
    assert [r.status for r in sent] == [200, 304]
    # Relative links resolve against the URL the feed was fetched from.
    assert first.entries[0].link == server.url("/news/japan-association?utm_source=rss")


def test_last_modified_conditional_get(server, tmp_path):
    stamp = "Wed, 10 Dec 2025 08:00:00 GMT"
    server.set("/lm.xml", RSS10, last_modified=stamp)
    feeds = [url_feed(server, "/lm.xml", name="jst")]
    ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    second = ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    assert second.statuses == {"jst": "not-modified"}
    assert [e.title for e in second.entries] == ["ERC-JSPS researcher exchange"]
    assert server.requests_to("/lm.xml")[1].header("If-Modified-Since") == stamp
    assert server.downloads("/lm.xml") == 1


def test_changed_feed_is_downloaded_again(server, tmp_path):
    server.set("/f.xml", rss(("One", "https://x.example/1", "1")), etag='"v1"')
    feeds = [url_feed(server, "/f.xml")]
    ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    server.set("/f.xml", rss(("Two", "https://x.example/2", "2")), etag='"v2"')
    result = ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    assert result.statuses == {"eu-news": "fetched"}
    assert [e.title for e in result.entries] == ["Two"]
    assert server.downloads("/f.xml") == 2


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_falls_back_to_cache_with_warning(server, tmp_path, status):
    server.set("/feed.xml", RSS20)
    feeds = [url_feed(server, "/feed.xml")]
    ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    server.set("/feed.xml", "error", status=status)
    result = ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    assert result.statuses == {"eu-news": "cached"}
    assert len(result.entries) == 2
    (warning,) = result.warnings
    assert warning.field == "feeds.eu-news"
    assert f"HTTP {status}" in warning.message
    today = datetime.now(UTC).date().isoformat()
    assert f"using 2 cached entries from {today}" in warning.message


def test_404_without_cache_is_failed(server, tmp_path):
    result = ingest_feeds([url_feed(server, "/missing.xml")], tmp_path, tmp_path / "cache")
    assert result.entries == [] and result.statuses == {"eu-news": "failed"}
    assert "eu-news" in warning_text(result) and "HTTP 404" in warning_text(result)
    assert "no cached entries" in warning_text(result)


def test_timeout_warns(server, tmp_path):
    server.set("/slow.xml", RSS20, delay=2.0)
    feed = url_feed(server, "/slow.xml", name="slow", timeout=0.3)
    result = ingest_feeds([feed], tmp_path, tmp_path / "cache")
    assert result.statuses == {"slow": "failed"}
    assert "timed out after 0.3s" in warning_text(result)


def test_a_slow_drip_past_the_timeout_is_a_timeout(server, tmp_path):
    server.set("/drip.xml", RSS20, trickle=0.1)  # the whole body would take minutes
    feed = url_feed(server, "/drip.xml", name="drip", timeout=0.5)
    result = ingest_feeds([feed], tmp_path, tmp_path / "cache")
    assert result.statuses == {"drip": "failed"}
    assert "timed out after 0.5s" in warning_text(result)
    server.stop()  # ends the drip; what was sent by then is counted
    assert server.trickled.get("/drip.xml", 0) < len(RSS20.encode()) // 2  # it hung up early


def test_connection_refused_warns(tmp_path):
    feed = Feed(name="down", url=f"http://127.0.0.1:{free_port()}/feed.xml", timeout=2)
    result = ingest_feeds([feed], tmp_path, tmp_path / "cache")
    assert result.statuses == {"down": "failed"}
    assert "connection refused" in warning_text(result)


def test_malformed_xml_warns(server, tmp_path):
    server.set("/bad.xml", "<rss><channel><title>unclosed", content_type="application/xml")
    result = ingest_feeds([url_feed(server, "/bad.xml")], tmp_path, tmp_path / "cache")
    assert result.statuses == {"eu-news": "failed"}
    assert "not a valid RSS/Atom feed" in warning_text(result)


@pytest.mark.parametrize("content_length", [True, False])
def test_oversize_response_warns(server, tmp_path, content_length):
    huge = RSS20.replace("</channel>", "<!--" + "x" * 200_000 + "--></channel>")
    server.set("/big.xml", huge, content_length=content_length)
    feed = url_feed(server, "/big.xml", max_bytes=10_000)
    result = ingest_feeds([feed], tmp_path, tmp_path / "cache")
    assert result.statuses == {"eu-news": "failed"} and result.entries == []
    assert "larger than the limit of 10,000 bytes" in warning_text(result)


def test_gzip_response_is_decompressed(server, tmp_path):
    server.set("/gz.xml", RSS20, gzip=True)
    result = ingest_feeds([url_feed(server, "/gz.xml")], tmp_path, tmp_path / "cache")
    assert result.statuses == {"eu-news": "fetched"} and len(result.entries) == 2


def test_gzip_bomb_is_stopped_by_the_size_limit(server, tmp_path):
    bomb = gzip.compress(b"<rss>" + b" " * 5_000_000)
    server.set("/bomb.xml", bomb, headers={"Content-Encoding": "gzip"})
    feed = url_feed(server, "/bomb.xml", max_bytes=100_000)
    assert len(bomb) < 100_000
    result = ingest_feeds([feed], tmp_path, tmp_path / "cache")
    assert result.statuses == {"eu-news": "failed"}
    assert "larger than the limit" in warning_text(result)


def test_offline_uses_cache_without_requests(server, tmp_path):
    server.set("/feed.xml", RSS20, etag='"v1"')
    feeds = [url_feed(server, "/feed.xml"), url_feed(server, "/never.xml", name="never")]
    ingest_feeds(feeds[:1], tmp_path, tmp_path / "cache")
    before = len(server.requests)
    result = ingest_feeds(feeds, tmp_path, tmp_path / "cache", offline=True)
    assert len(server.requests) == before
    assert result.statuses == {"eu-news": "cached", "never": "failed"}
    assert len(result.entries) == 2
    (warning,) = result.warnings
    assert warning.field == "feeds.never" and "offline" in warning.message


def test_cache_is_written_atomically_in_cache_dir(server, tmp_path):
    server.set("/feed.xml", RSS20)
    ingest_feeds([url_feed(server, "/feed.xml")], tmp_path, tmp_path / "cache")
    files = sorted(p.name for p in (tmp_path / "cache" / "feeds").iterdir())
    assert len(files) == 1
    assert re.fullmatch(r"eu-news-[0-9a-f]{12}\.json", files[0])


def test_corrupt_cache_is_ignored(server, tmp_path):
    server.set("/feed.xml", RSS20, etag='"v1"')
    feeds = [url_feed(server, "/feed.xml")]
    ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    (cache_file,) = (tmp_path / "cache" / "feeds").iterdir()
    cache_file.write_text("{not json")
    result = ingest_feeds(feeds, tmp_path, tmp_path / "cache")
    assert result.statuses == {"eu-news": "fetched"} and len(result.entries) == 2
    assert server.requests_to("/feed.xml")[1].header("If-None-Match") is None
