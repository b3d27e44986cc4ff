"""The checks panel as a library: each check on small hand-made inputs, then a real built issue."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import NOW, copy_project

from newsletter.build import build
from newsletter.checks import (
    CheckResult,
    check_build_warnings,
    check_files,
    check_images,
    check_issue,
    check_links,
    check_placeholders,
    check_sections,
    check_size,
    check_text_items,
    link_problem,
    parse_html,
    worst,
)
from newsletter.outbox import CLIP_LIMIT_BYTES


def page(body: str) -> str:
    return f"<!DOCTYPE html>\n<html><head><title>t</title></head>\n<body>\n{body}\n</body></html>\n"


# --- size ---


def test_size_under_the_limit_is_ok_and_says_how_much_is_used() -> None:
    result = check_size(47_000)
    assert result.status == "ok"
    assert result.summary == "45.9 KB of 102 KB (45%)"


def test_size_close_to_the_limit_warns() -> None:
    assert check_size(int(CLIP_LIMIT_BYTES * 0.95)).status == "warning"


def test_size_over_gmails_clipping_limit_is_an_error() -> None:
    result = check_size(CLIP_LIMIT_BYTES + 1)
    assert result.status == "error"
    assert "clips" in result.details[0]


# --- images ---


def test_images_without_alt_are_listed_with_their_line() -> None:
    html = page(
        '<img src="https://x.example/a.png" alt="Flags">\n<img src="https://x.example/b.png">'
    )
    result = check_images(parse_html(html))
    assert result.status == "warning"
    assert result.summary == "1 of 2 images without alt text"
    assert result.details == ("line 5: https://x.example/b.png",)


def test_an_empty_alt_marks_a_decorative_image_and_passes() -> None:
    result = check_images(parse_html(page('<img src="https://x.example/rule.png" alt="">')))
    assert result.status == "ok"


def test_no_images_is_fine() -> None:
    assert check_images(parse_html(page("<p>text</p>"))).summary == "no images"


# --- links ---


@pytest.mark.parametrize(
    ("url", "image", "problem"),
    [
        ("https://ec.europa.eu/info/", False, None),
        ("mailto:enquiries@example.org", False, None),
        ("tel:+3222991111", False, None),
        ("cid:logo@digest", True, None),
        ("nl-personal:unsubscribe_url", False, None),
        ("/news/2026/", False, "relative link"),
        ("news.html", False, "relative link"),
        ("img/logo.png", True, "relative image source"),
        ("//cdn.example.org/logo.png", True, "protocol-relative (add https:)"),
        ("https://example.org/a b", False, "malformed (contains spaces)"),
        ("", False, "empty link"),
        ("https:///path", False, "malformed (no domain name)"),
        ("https://intranet/path", False, "malformed (no domain name)"),
        ("http://[::1", False, "malformed (Invalid IPv6 URL)"),
        ("https://example.org:99999/", False, "malformed (Port out of range 0-65535)"),
        ("javascript:alert(1)", False, "unsupported scheme javascript:"),
        ("data:image/png;base64,AAAA", True, "unsupported scheme data:"),
        ("mailto:", False, "malformed (nothing after mailto:)"),
    ],
)
def test_link_problem(url: str, image: bool, problem: str | None) -> None:
    assert link_problem(url, image=image, ids=set()) == problem


def test_anchors_must_point_at_an_id_in_the_document() -> None:
    html = page('<a href="#calls">Calls</a> <a href="#nowhere">x</a>\n<h2 id="calls">Calls</h2>')
    result = check_links(parse_html(html))
    assert result.status == "error"
    assert result.details == ("line 4: anchor to a missing id: #nowhere",)


def test_links_checks_hrefs_image_sources_and_backgrounds() -> None:
    html = page(
        '<a href="https://ok.example.org/">ok</a>\n'
        '<a href="/relative">rel</a>\n'
        '<img src="pic.png" alt="p">\n'
        '<td background="bg.png"></td>\n'
        '<a name="top">anchor without href</a>'
    )
    result = check_links(parse_html(html))
    assert result.summary == "3 of 4 links will not work in an inbox"
    assert [d.split(":")[0] for d in result.details] == ["line 5", "line 6", "line 7"]


def test_all_good_links_pass() -> None:
    html = page('<a href="https://a.example.org/">a</a> <a href="mailto:x@example.org">m</a>')
    assert check_links(parse_html(html)).status == "ok"


# --- sections ---


def test_configured_sections_without_entries_are_reported() -> None:
    manifest = {"sections": {"milestones": 2, "events": 0}}
    result = check_sections(parse_html(page("")), manifest)
    assert result.status == "warning"
    assert result.details == ("events: no entries this period (left out of the issue)",)


def test_a_section_with_only_its_heading_is_reported() -> None:
    html = page(
        '<table><tr><td class="section" id="news"><h2>News</h2>\n</td></tr>\n'
        '<tr><td class="section"><h2>Calls</h2><p>One call</p></td></tr></table>'
    )
    result = check_sections(parse_html(html), {"sections": {"news": 1, "calls": 1}})
    assert result.details == ("line 4: 'News' has a heading and nothing under it",)


def test_sections_with_entries_pass() -> None:
    html = page('<div class="section"><h2>Calls</h2><p>One</p></div>')
    assert check_sections(parse_html(html), {"sections": {"calls": 1}}).status == "ok"


# --- placeholders ---


def test_unfilled_personal_markers_and_template_leftovers_are_errors() -> None:
    html = page('<p>nl-personal:greeting</p><a href="nl-personal:unsubscribe_url">x</a>')
    text = "Hello\n{{ subscriber.name }}\n{% if x %}\n"
    result = check_placeholders(html, text)
    assert result.status == "error"
    assert "HTML: nl-personal:greeting was not filled" in result.details
    assert "HTML: nl-personal:unsubscribe_url was not filled" in result.details
    assert any(d.startswith("text line 2: template syntax left") for d in result.details)
    assert any(d.startswith("text line 3: template syntax left") for d in result.details)


def test_clean_output_has_no_placeholders() -> None:
    assert check_placeholders(page("<p>Dear reader,</p>"), "Dear reader,\n").status == "ok"


# --- text version ---


def test_items_missing_from_the_text_version_are_listed() -> None:
    manifest = {
        "items": [
            {"title": "Quantum sensing and metrology for industry", "section": "calls"},
            {"title": "Only in the HTML", "section": "news"},
        ]
    }
    text = "* [Closing soon] Quantum sensing and\n  metrology for industry\n"
    result = check_text_items(text, manifest)
    assert result.status == "warning"
    assert result.details == ("news: Only in the HTML",)


def test_wrapped_japanese_titles_still_count_as_present() -> None:
    manifest = {
        "items": [{"title": "日EU、ホライズン・ヨーロッパ準参加協定に署名", "section": "m"}]
    }
    assert (
        check_text_items("* 日EU、ホライズン・ヨーロッパ\n  準参加協定に署名\n", manifest).status
        == "ok"
    )


# --- build warnings ---


def test_build_warnings_are_shown_once_with_short_paths(tmp_path: Path) -> None:
    manifest = {
        "warnings": [
            f"{tmp_path}/content/news/x.ja.md: no 'ja' translation; using 'en'",
            f"{tmp_path}/content/news/x.ja.md: no 'ja' translation; using 'en'",
            "feeds.EU research news: HTTP 503; using 12 cached entries from 2026-11-20",
        ]
    }
    result = check_build_warnings(manifest, root=tmp_path)
    assert result.status == "warning"
    assert result.details == (
        "content/news/x.ja.md: no 'ja' translation; using 'en'",
        "feeds.EU research news: HTTP 503; using 12 cached entries from 2026-11-20",
    )


def test_no_build_warnings() -> None:
    assert check_build_warnings({"warnings": []}).status == "ok"


# --- whole issues ---


def test_the_shipped_issue_passes_every_check(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "digest")
    result = build(project, now=NOW, offline=True)
    for issue in result.issues:
        checks = check_issue(issue.directory, root=project.root)
        assert [c.id for c in checks] == [
            "size",
            "alt",
            "links",
            "sections",
            "placeholders",
            "text",
            "build",
        ]
        failing = [c for c in checks if c.status == "error"]
        assert failing == [], failing


def test_a_broken_issue_is_caught(tmp_path: Path) -> None:
    html = page('<a href="/relative">x</a> {{ title }} nl-personal:greeting')
    manifest = {"sections": {"news": 0}, "items": [{"title": "Lost", "section": "news"}]}
    statuses = {c.id: c.status for c in check_files(html, "text", manifest)}
    assert statuses == {
        "size": "ok",
        "alt": "ok",
        "links": "error",
        "sections": "warning",
        "placeholders": "error",
        "text": "warning",
        "build": "ok",
    }


def test_missing_files_are_one_error(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text(page(""), "utf-8")
    [result] = check_issue(tmp_path)
    assert result.status == "error"
    assert "digest.txt" in result.summary and "manifest.json" in result.summary


def test_worst_status() -> None:
    ok = CheckResult("a", "A", "ok", "")
    warning = CheckResult("b", "B", "warning", "")
    error = CheckResult("c", "C", "error", "")
    assert worst([]) == "ok"
    assert worst([ok, warning]) == "warning"
    assert worst([warning, error, ok]) == "error"
