"""Content files -> validated items, and errors that name the file, line and field."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from newsletter.content import load_content
from newsletter.dates import PartialDate
from newsletter.errors import NewsletterError

REPO = Path(__file__).resolve().parents[1]


def write(root: Path, relative: str, text: str) -> Path:
    path = root / "content" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(root: Path):
    return load_content(root / "content", ["en", "ja"], "en")


def problems(root: Path) -> list[str]:
    with pytest.raises(NewsletterError) as caught:
        load(root)
    return [str(p) for p in caught.value.problems]


def test_shipped_content_loads_with_every_kind_and_translation() -> None:
    content = load(REPO)
    assert len(content.milestones) >= 8 and len(content.calls) >= 8
    assert content.projects and content.events and content.news and content.contacts
    for item in content.all():
        assert item.localized("ja") is not None, f"{item.source} has no Japanese translation"
    assert not content.warnings


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2011", PartialDate(2011)),
        ('"2020-05"', PartialDate(2020, 5)),
        ("2017-11-24", PartialDate(2017, 11, 24)),
        ('"2018-11-23"', PartialDate(2018, 11, 23)),
    ],
)
def test_milestone_partial_dates(tmp_path: Path, written: str, expected: PartialDate) -> None:
    write(tmp_path, "milestones/m.md", f"---\ntitle: M\ndate: {written}\n---\n")
    (milestone,) = load(tmp_path).milestones
    assert milestone.date == expected


def test_invalid_partial_date_names_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "milestones/m.md", '---\ntitle: M\ndate: "2020-13"\n---\n')
    (message,) = problems(tmp_path)
    assert message.startswith(f"{path}:3: date:") and "month out of range" in message


def test_bare_deadline_means_17_00_brussels(tmp_path: Path) -> None:
    write(tmp_path, "calls/c.md", '---\ntitle: C\nprogramme: ERC\ndeadline: "2027-01-15"\n---\n')
    (call,) = load(tmp_path).calls
    assert call.deadline.astimezone(UTC) == datetime(2027, 1, 15, 16, 0, tzinfo=UTC)


def test_deadline_with_offset_is_kept(tmp_path: Path) -> None:
    write(
        tmp_path,
        "calls/c.md",
        '---\ntitle: C\nprogramme: JSPS\ndeadline: "2027-01-15T17:00:00+09:00"\n---\n',
    )
    (call,) = load(tmp_path).calls
    assert call.deadline.astimezone(UTC) == datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "calls/c.md", "---\ntitle: C\ndeadline: 2027-01-15\n---\n")
    (message,) = problems(tmp_path)
    assert message == f"{path}: programme: required field is missing (a call needs `programme`)"


def test_yaml_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "news/n.md", "---\ntitle: N\ndate: 2026-11-02\nsummary: [oops\n---\n")
    (message,) = problems(tmp_path)
    assert message.startswith(f"{path}:") and "invalid YAML front matter" in message
    line = int(message.split(":")[1])
    assert line in (4, 5)


def test_missing_front_matter(tmp_path: Path) -> None:
    path = write(tmp_path, "news/n.md", "# Just a heading\n")
    (message,) = problems(tmp_path)
    assert message == f"{path}:1: missing YAML front matter (start the file with ---)"


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    write(tmp_path, "news/a.md", "---\ndate: 2026-11-02\n---\n")
    write(tmp_path, "events/b.md", "---\ntitle: B\n---\n")
    found = problems(tmp_path)
    assert len(found) == 2
    assert any("a.md" in m and "title" in m for m in found)
    assert any("b.md" in m and "date" in m for m in found)


def test_bad_link_is_named(tmp_path: Path) -> None:
    write(tmp_path, "news/n.md", "---\ntitle: N\ndate: 2026-11-02\nlink: not a url\n---\n")
    (message,) = problems(tmp_path)
    assert ":4: link:" in message


def test_translation_overrides_text_fields_only(tmp_path: Path) -> None:
    write(
        tmp_path,
        "events/e.md",
        '---\ntitle: Symposium\ndate: "2027-01-20"\nlocation: Tokyo\n---\nEnglish body\n',
    )
    write(tmp_path, "events/e.ja.md", "---\ntitle: シンポジウム\nlocation: 東京\n---\n日本語\n")
    (event,) = load(tmp_path).events
    japanese = event.localized("ja")
    assert japanese is not None
    assert (japanese.title, japanese.location, japanese.date) == (
        "シンポジウム",
        "東京",
        date(2027, 1, 20),
    )
    assert "日本語" in japanese.body_html and "English body" in event.body_html
    assert event.localized("fr") is None


def test_translation_cannot_change_dates(tmp_path: Path) -> None:
    write(tmp_path, "events/e.md", '---\ntitle: S\ndate: "2027-01-20"\n---\n')
    path = write(tmp_path, "events/e.ja.md", '---\ntitle: S\ndate: "2027-02-01"\n---\n')
    (message,) = problems(tmp_path)
    assert message.startswith(f"{path}:3: date:") and "may only set" in message


def test_orphan_translation_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "news/gone.ja.md", "---\ntitle: 消えた\n---\n")
    (message,) = problems(tmp_path)
    assert message == f"{path}: translation of 'gone', but gone.md is missing"


def test_event_date_time_with_offset(tmp_path: Path) -> None:
    write(tmp_path, "events/w.md", '---\ntitle: W\ndate: "2026-12-02T16:00:00+09:00"\n---\n')
    (event,) = load(tmp_path).events
    assert event.date == date(2026, 12, 2) and event.starts_at is not None
    assert event.starts_at.utcoffset().total_seconds() == 9 * 3600


def test_end_date_before_start_is_refused(tmp_path: Path) -> None:
    write(
        tmp_path, "events/e.md", '---\ntitle: E\ndate: "2027-01-20"\nend_date: "2027-01-19"\n---\n'
    )
    (message,) = problems(tmp_path)
    assert "end_date" in message and "before date" in message


def test_markdown_body_is_rendered_without_raw_html(tmp_path: Path) -> None:
    write(
        tmp_path,
        "news/n.md",
        "---\ntitle: N\ndate: 2026-11-02\n---\nSome **bold** text <script>x()</script>\n",
    )
    (news,) = load(tmp_path).news
    assert "<strong>bold</strong>" in news.body_html
    assert "<script>" not in news.body_html


def test_files_outside_kind_folders_warn(tmp_path: Path) -> None:
    write(tmp_path, "stray.md", "---\ntitle: S\n---\n")
    content = load(tmp_path)
    assert any("stray.md" in str(w) and "ignored" in str(w) for w in content.warnings)
