"""newsletter.toml: defaults, validation, and messages that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import SECTION_IDS, load_config
from newsletter.errors import NewsletterError

MINIMAL = """
[newsletter]
title = "Digest"
website = "https://example.org/"

[sender]
name = "Digest"
email = "digest@example.org"

[footer]
organisation = "Office"
address = "1 Street, Town"
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "newsletter.toml").write_text(text, encoding="utf-8")
    return tmp_path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(NewsletterError) as caught:
        load_config(write(tmp_path, text))
    return [str(p) for p in caught.value.problems]


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert [s.id for s in config.sections] == list(SECTION_IDS)
    assert config.newsletter.languages == ["en"]
    assert config.selection.closing_soon_days == 14
    assert str(config.tz) == "Europe/Brussels"


def test_shipped_config_is_valid() -> None:
    config = load_config(Path(__file__).resolve().parents[1])
    assert config.newsletter.languages == ["en", "ja"]
    assert len(config.feeds) == 3 and all(feed.path for feed in config.feeds)


def test_missing_config_says_where(tmp_path: Path) -> None:
    with pytest.raises(NewsletterError, match=r"no newsletter\.toml here"):
        load_config(tmp_path)


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    (message,) = problems(tmp_path, MINIMAL + "\n[broken\n")
    assert message.endswith(
        "newsletter.toml:14: not valid TOML: Expected ']' at the end of a table declaration"
    )


def test_unknown_key_is_named(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL.replace('title = "Digest"', 'titel = "Digest"'))
    assert any("newsletter.titel: unknown key" in m for m in found)
    assert any("newsletter.title: Field required" in m for m in found)


def test_feed_needs_exactly_one_source(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[feeds]]\nname = "a"\nurl = "https://x.org/f"\npath = "f.xml"\n'
    (message,) = problems(tmp_path, text)
    assert "feeds.0" in message and "exactly one of `url` or `path`" in message


def test_feed_url_must_be_http(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[feeds]]\nname = "a"\nurl = "ftp://x.org/f"\n'
    (message,) = problems(tmp_path, text)
    assert "feeds.0.url" in message


def test_bad_values_each_named(tmp_path: Path) -> None:
    text = MINIMAL.replace('email = "digest@example.org"', 'email = "not an address"')
    text += '\n[[sections]]\nid = "gossip"\n\n[selection]\nclosing_soon_days = -1\n'
    found = problems(tmp_path, text)
    assert any("sender.email" in m for m in found)
    assert any("sections.0.id" in m for m in found)
    assert any("selection.closing_soon_days" in m for m in found)


def test_default_language_must_be_listed(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'website = "https://example.org/"', 'website = "https://example.org/"\nlanguages = ["ja"]'
    )
    (message,) = problems(tmp_path, text)
    assert "default_language 'en' is not in languages" in message


def test_unknown_time_zone(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'website = "https://example.org/"',
        'website = "https://example.org/"\ntimezone = "Mars/Olympus"',
    )
    (message,) = problems(tmp_path, text)
    assert "newsletter.timezone" in message and "Mars/Olympus" in message


def test_sender_name_cannot_smuggle_headers(tmp_path: Path) -> None:
    text = MINIMAL.replace('name = "Digest"\nemail', 'name = "Digest\\nBcc: x@evil.test"\nemail')
    (message,) = problems(tmp_path, text)
    assert "sender.name" in message and "single line" in message


def test_title_cannot_break_the_subject_header(tmp_path: Path) -> None:
    text = MINIMAL.replace('title = "Digest"', 'title = { en = "Digest\\nBcc: x@evil.test" }', 1)
    (message,) = problems(tmp_path, text)
    assert "newsletter.title" in message and "single line" in message


def test_list_id_must_be_a_dotted_identifier(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'website = "https://example.org/"',
        'website = "https://example.org/"\nlist_id = "digest example org"',
    )
    (message,) = problems(tmp_path, text)
    assert "newsletter.list_id" in message
