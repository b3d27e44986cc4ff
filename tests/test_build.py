"""The built issue: sections, inlined styles, sanitised feeds, links, text twin, MIME, size,
reproducibility, atomic writes and news never repeated across issues."""

from __future__ import annotations

import email
import json
import re
from email import policy
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import NOW

from newsletter.build import build
from newsletter.dates import Period
from newsletter.errors import NewsletterError
from newsletter.outbox import CLIP_LIMIT_BYTES
from newsletter.project import Project


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text, of an HTML document."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture
def issue(project: Project) -> Path:
    result = build(project, now=NOW)
    assert [i.language for i in result.issues] == ["en", "ja"]
    return project.outbox_dir / "2026-11"


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def test_writes_every_file_of_the_contract(issue: Path) -> None:
    for language in ("en", "ja"):
        names = {p.name for p in (issue / language).iterdir()}
        assert {"index.html", "digest.txt", "message.eml", "manifest.json"} <= names
        assert not [n for n in names if n.endswith(".tmp")]


def test_manifest_fields(issue: Path) -> None:
    data = manifest(issue / "en")
    assert data["period"] == "2026-11" and data["language"] == "en"
    assert data["subject"] == "EU–Japan Research & Innovation Digest — November 2026"
    assert data["size_bytes"] == len((issue / "en" / "index.html").read_bytes())
    assert isinstance(data["warnings"], list)
    assert {"id", "kind", "title", "section"} <= set(data["items"][0])
    assert (
        manifest(issue / "ja")["subject"] == "日EU研究・イノベーション ダイジェスト — 2026年11月号"
    )


def test_every_section_has_the_right_items(issue: Path) -> None:
    data = manifest(issue / "en")
    by_section: dict[str, list[str]] = {}
    for item in data["items"]:
        by_section.setdefault(item["section"], []).append(item["id"])
    assert set(by_section) == {
        "milestones",
        "history",
        "calls",
        "projects",
        "news",
        "events",
        "contacts",
    }
    assert by_section["milestones"] == [
        "2026-11-10-association-agreement-signed",
        "2026-11-18-joint-committee-tokyo",
    ]
    assert by_section["history"] == [
        "2017-11-24-4th-joint-committee",
        "2018-11-23-roadmap",
        "2024-11-29-association-negotiations-launched",
    ]
    assert "jeupiste" in by_section["projects"] and "eujo-limms" in by_section["projects"]
    assert len(by_section["calls"]) == 8 and len(by_section["news"]) == 8
    html = (issue / "en" / "index.html").read_text(encoding="utf-8")
    for heading in (
        "Cooperation milestones",
        "This month in cooperation history",
        "Funding calls",
        "News",
        "Featured projects",
        "Upcoming events",
        "Contacts",
    ):
        assert f">{heading}</h2>" in html


def test_calls_show_deadline_days_left_and_closing_soon(issue: Path) -> None:
    text = (issue / "en" / "digest.txt").read_text(encoding="utf-8")
    assert "[Closing soon]" in text and "[Opening soon]" in text
    assert re.search(r"Deadline 3 December 2026, 17:00 CET · 8 days left", text)
    html = (issue / "en" / "index.html").read_text(encoding="utf-8")
    assert html.count(">Closing soon</span>") == 2
    japanese = (issue / "ja" / "digest.txt").read_text(encoding="utf-8")
    assert "[締切間近]" in japanese and "残り8日" in japanese


def test_styles_are_inlined(issue: Path) -> None:
    html = (issue / "en" / "index.html").read_text(encoding="utf-8")
    tags = Elements(html).tags
    headings = [attrs for tag, attrs in tags if tag == "h2"]
    assert headings and all("font-family" in (a.get("style") or "") for a in headings)
    cells = [
        attrs for tag, attrs in tags if tag == "td" and "masthead" in (attrs.get("class") or "")
    ]
    assert "background-color:#0b2f6b" in (cells[0].get("style") or "").replace(" ", "")
    # Only what cannot be inlined (the mobile media query) stays in a <style> block.
    styles = re.findall(r"<style[^>]*>(.*?)</style>", html, re.S)
    assert len(styles) == 1 and styles[0].strip().startswith("@media")


def test_feed_html_is_sanitised(issue: Path) -> None:
    for language in ("en", "ja"):
        html = (issue / language / "index.html").read_text(encoding="utf-8")
        assert "<script" not in html.lower() and "alert(1)" not in html
        assert not re.search(r"\son[a-z]+\s*=", html, re.I)
        assert "javascript:" not in html.lower()


def test_links_are_absolute_and_images_have_alt(issue: Path) -> None:
    tags = Elements((issue / "en" / "index.html").read_text(encoding="utf-8")).tags
    links = [attrs["href"] for tag, attrs in tags if tag == "a" and attrs.get("href")]
    assert len(links) > 30
    for link in links:
        assert re.match(r"^(https?://|mailto:|#)", link), link
    for tag, attrs in tags:
        if tag == "img":
            assert attrs.get("alt"), attrs


def test_preheader_is_hidden_and_first(issue: Path) -> None:
    html = (issue / "en" / "index.html").read_text(encoding="utf-8")
    body = html[html.index("<body") :]
    match = re.search(r'<div class="preheader" style="([^"]*)">([^<]*)<', body)
    assert match and "display:none" in match.group(1).replace(" ", "")
    assert match.group(2).startswith(
        "2 calls closing soon · 7 open calls · 8 news stories · 6 upcoming events"
    )


def test_text_version_has_every_item(issue: Path) -> None:
    for language in ("en", "ja"):
        text = (issue / language / "digest.txt").read_text(encoding="utf-8")
        flat = " ".join(text.split())
        for item in manifest(issue / language)["items"]:
            assert " ".join(item["title"].split()) in flat, item
            if item.get("link"):
                assert item["link"] in text


def test_message_is_valid_mime(issue: Path) -> None:
    raw = (issue / "ja" / "message.eml").read_bytes()
    assert b"\r\n" in raw and max(len(line) for line in raw.split(b"\r\n")) <= 998
    message = email.message_from_bytes(raw, policy=policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == "日EU研究・イノベーション ダイジェスト — 2026年11月号"
    assert b"=?utf-8?" in raw.split(b"\r\n\r\n")[0]  # non-ASCII subject as encoded words
    assert message["From"].addresses[0].addr_spec == "digest@eu-japan-rni.example.org"
    assert message["List-Id"].endswith("<digest.eu-japan-rni.example.org>")
    assert message["Message-ID"] and message["Date"]
    text, html = message.get_payload()
    assert text.get_content_type() == "text/plain" and text.get_content_charset() == "utf-8"
    assert html.get_content_type() == "text/html"

    def lines(content: str) -> list[str]:
        return content.replace("\r\n", "\n").splitlines()

    assert lines(html.get_content()) == lines((issue / "ja" / "index.html").read_text("utf-8"))
    assert lines(text.get_content()) == lines((issue / "ja" / "digest.txt").read_text("utf-8"))


def test_personal_parts_are_markers_for_send_and_neutral_in_the_archive(issue: Path) -> None:
    personal = (issue / "en" / "personal.html").read_text(encoding="utf-8")
    assert 'href="nl-personal:unsubscribe_url"' in personal and "nl-personal:greeting" in personal
    archive = (issue / "en" / "index.html").read_text(encoding="utf-8")
    assert "nl-personal:" not in archive and "Dear reader," in archive
    assert "https://digest.eu-japan-rni.example.org/unsubscribe/" in archive


def test_size_is_well_under_the_clipping_limit(issue: Path) -> None:
    for language in ("en", "ja"):
        size = (issue / language / "index.html").stat().st_size
        assert size < CLIP_LIMIT_BYTES * 0.75


def test_rebuild_is_byte_identical(project: Project, tmp_path: Path) -> None:
    build(project, now=NOW)
    first = {
        p.relative_to(project.outbox_dir): p.read_bytes()
        for p in project.outbox_dir.rglob("*")
        if p.is_file()
    }
    for path in project.outbox_dir.rglob("*"):
        if path.is_file():
            path.unlink()
    build(project, now=NOW)
    second = {
        p.relative_to(project.outbox_dir): p.read_bytes()
        for p in project.outbox_dir.rglob("*")
        if p.is_file()
    }
    assert first == second


def test_unchanged_rebuild_skips_inlining(project: Project) -> None:
    build(project, now=NOW)
    result = build(project, now=NOW)
    assert all(issue.unchanged for issue in result.issues)
    assert result.timings["inline"] == 0.0


def test_failed_build_keeps_the_previous_issue(project: Project) -> None:
    build(project, now=NOW)
    before = {p.name: p.read_bytes() for p in (project.outbox_dir / "2026-11" / "en").iterdir()}
    partial = project.templates_dir / "partials" / "events.html"
    partial.write_text(partial.read_text() + "{{ event.no_such_field }}\n")
    (project.content_dir / "news" / "extra.md").write_text(
        "---\ntitle: A change that would alter the issue\ndate: 2026-11-20\n---\n"
    )
    with pytest.raises(NewsletterError) as caught:
        build(project, now=NOW)
    problem = caught.value.problems[0]
    assert str(problem.path).endswith("events.html") and problem.line
    after = {p.name: p.read_bytes() for p in (project.outbox_dir / "2026-11" / "en").iterdir()}
    assert after == before


def test_template_syntax_error_names_file_and_line(project: Project) -> None:
    partial = project.templates_dir / "partials" / "news.html"
    partial.write_text("{% for story in section.entries %}\n{{ story.title }\n{% endfor %}\n")
    with pytest.raises(NewsletterError) as caught:
        build(project, now=NOW)
    problem = caught.value.problems[0]
    assert str(problem.path).endswith("partials/news.html") and problem.line == 2


def test_news_is_never_repeated_in_a_later_issue(project: Project) -> None:
    """A feed entry re-dated into the next month (same GUID) stays out of that month's issue."""
    feed = project.content_dir / "feeds" / "eu-research-news.xml"
    build(project, now=NOW)
    sent = [
        i
        for i in manifest(project.outbox_dir / "2026-11" / "en")["items"]
        if i["section"] == "news" and i["kind"] == "feed_entry"
    ]
    assert sent
    story = next(i for i in sent if "EU research news" in (i.get("source") or ""))
    text = feed.read_text(encoding="utf-8")
    item_start = text.index(story["title"].split("&")[0][:30])
    pub = re.compile(r"<pubDate>[^<]*</pubDate>")
    match = pub.search(text, item_start)
    assert match
    feed.write_text(
        text[: match.start()]
        + "<pubDate>Wed, 02 Dec 2026 09:00:00 GMT</pubDate>"
        + text[match.end() :],
        encoding="utf-8",
    )
    build(project, period=Period(2026, 12), now=NOW.replace(month=12, day=3))
    december = manifest(project.outbox_dir / "2026-12" / "en")["items"]
    assert story["id"] not in [i["id"] for i in december]
    assert [i for i in december if i["section"] == "news"]


def test_languages_can_be_chosen(project: Project) -> None:
    result = build(project, now=NOW, languages=["ja"])
    assert [i.language for i in result.issues] == ["ja"]
    assert not (project.outbox_dir / "2026-11" / "en").exists()
    with pytest.raises(NewsletterError, match=r"language .fr. is not in newsletter\.languages"):
        build(project, now=NOW, languages=["fr"])


def test_missing_translation_is_a_warning_not_a_failure(project: Project) -> None:
    (project.content_dir / "calls" / "horizon-cl4-2026-quantum-sensing.ja.md").unlink()
    result = build(project, now=NOW)
    japanese = next(i for i in result.issues if i.language == "ja")
    assert any(
        "horizon-cl4-2026-quantum-sensing.md: no 'ja' translation" in str(w)
        for w in japanese.warnings
    )
    text = (japanese.directory / "digest.txt").read_text(encoding="utf-8")
    assert "Quantum sensing and metrology for industry" in text


def test_a_story_is_not_repeated_under_another_guid_or_link_form(project: Project) -> None:
    """The same article, re-published with a new GUID and a differently written link."""
    feed = project.content_dir / "feeds" / "cooperation-bulletin.rdf"
    original = feed.read_text(encoding="utf-8")
    story = (
        '<item rdf:about="https://news.example.org/story?utm_source=rss">'
        "<title>{title}</title><link>{link}</link><description>Once</description>"
        "<dc:date>{date}</dc:date></item>"
    )
    first = story.format(
        title="Story first time",
        date="2026-11-24T09:00:00+00:00",
        link="https://news.example.org/story?utm_source=rss",
    )
    feed.write_text(original.replace("</rdf:RDF>", first + "</rdf:RDF>"), encoding="utf-8")
    build(project, now=NOW)
    november = (project.outbox_dir / "2026-11" / "en" / "digest.txt").read_text()
    assert "Story first time" in november
    again = story.format(
        title="Story second time",
        date="2026-12-02T09:00:00+00:00",
        link="https://NEWS.example.org/story/",
    ).replace("story?utm_source=rss", "story-v2")
    feed.write_text(original.replace("</rdf:RDF>", again + "</rdf:RDF>"), encoding="utf-8")
    build(project, period=Period(2026, 12), now=NOW.replace(month=12, day=3))
    december = (project.outbox_dir / "2026-12" / "en" / "digest.txt").read_text()
    assert "Story second time" not in december


def test_entries_past_the_limit_are_linked_where_the_config_says(issue: Path) -> None:
    html = (issue / "en" / "index.html").read_text(encoding="utf-8")
    portal = "https://ec.europa.eu/info/funding-tenders/opportunities/portal/screen/opportunities"
    assert re.search(rf'<a href="{re.escape(portal)}/calls-for-proposals"[^>]*>and 1 more', html)
    assert re.search(r'<a href="https://digest\.eu-japan-rni\.example\.org/"[^>]*>and 7 more', html)
    assert "ほか1件" in (issue / "ja" / "digest.txt").read_text(encoding="utf-8")
