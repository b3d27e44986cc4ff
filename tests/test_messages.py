"""Per-recipient messages: encodings that join correctly, exact decoding, safe headers, tokens."""

from __future__ import annotations

import base64
import binascii
import random
import re
from datetime import UTC, datetime
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import default as default_policy
from email.utils import parseaddr

import pytest
from smtpserver import PERIOD, SECRET, built_project

from newsletter import tokens
from newsletter.config import load_config
from newsletter.messages import (
    Base64Body,
    IssueMessages,
    Letterhead,
    QuotedPrintableBody,
    Recipient,
    address_header,
    compile_body,
    encode_phrase,
    qp_encode,
    qp_value,
)
from newsletter.personal import fill
from newsletter.project import Project
from newsletter.send import compile_issues, list_id

WHEN = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
ALPHABET = "ab .=\t-_é日本語\n.xyzXYZ0123456789<>&\"'" + "\x00\x7f"


def _random_text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(length))


def _lines_ok(encoded: bytes) -> None:
    for line in encoded.split(b"\r\n"):
        assert len(line) <= 76, line
        assert not line.startswith(b"."), line
        assert b"\n" not in line and b"\r" not in line


# encodings


@pytest.mark.parametrize("seed", range(40))
def test_quoted_printable_of_random_text_decodes_exactly(seed: int) -> None:
    rng = random.Random(seed)
    text = _random_text(rng, rng.randint(0, 400)).replace("\n", "\r\n")
    data = text.encode()
    for soft_end in (False, True):
        encoded = qp_encode(data, soft_end=soft_end)
        _lines_ok(encoded)
        assert binascii.a2b_qp(encoded) == data
        if soft_end and data:
            assert encoded.endswith(b"=\r\n")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Dear reader,",
        "." + "x" * 80,
        "x" * 75,
        "x" * 76,
        "y" * 74 + " ",
        "https://example.org/unsubscribe/?token=" + "A" * 60 + "." + "b" * 22,
        "佐藤 太郎 様",
        "a." * 60,
        "trailing tab\t",
    ],
)
def test_quoted_printable_values_match_the_reference_encoder(value: str) -> None:
    data = value.encode()
    fast = qp_value(data)
    _lines_ok(fast)
    assert binascii.a2b_qp(fast) == data
    if data:
        assert fast.endswith(b"=\r\n")


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("kind", [QuotedPrintableBody, Base64Body])
def test_joined_pieces_decode_as_one_body(seed: int, kind: type) -> None:
    rng = random.Random(seed)
    pieces = [_random_text(rng, rng.choice([0, 1, 2, 3, 5, 60, 200])) for _ in range(4)]
    template = "nl-personal:greeting".join(pieces[:2]) + "nl-personal:view_url" + pieces[2]
    template += "nl-personal:greeting" + pieces[3]
    body = kind(template)
    one_line = _random_text(rng, rng.randint(0, 90)).replace("\n", " ")
    values = {"greeting": one_line, "view_url": "https://x.test/a?b=c"}
    raw = {k: v.encode() for k, v in values.items()}
    out: list[bytes] = []
    body.extend(out, {k: body.encode_value(v) for k, v in raw.items()})
    encoded = b"".join(out)
    _lines_ok(encoded)
    decoded = binascii.a2b_qp(encoded) if kind is QuotedPrintableBody else _b64(encoded)
    expected = fill(template, values, html_escape=False)
    expected = expected.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    assert decoded == expected.encode()


def _b64(encoded: bytes) -> bytes:
    return binascii.a2b_base64(encoded.replace(b"\r\n", b""), strict_mode=True)


def test_mostly_ascii_uses_quoted_printable_and_japanese_base64() -> None:
    assert compile_body("Hello nl-personal:greeting world\n").cte == "quoted-printable"
    assert compile_body("こんにちは nl-personal:greeting 世界\n" * 20).cte == "base64"


# headers


def test_display_names_cannot_add_headers() -> None:
    header = address_header("Eve\r\nBcc: victim@example.org", "eve@example.org")
    assert header.count(b"\r\n") == 1
    parsed = message_from_bytes(header + b"\r\n", policy=default_policy)
    assert parsed["Bcc"] is None
    assert parsed["To"].addresses[0].addr_spec == "eve@example.org"
    assert parsed["To"].addresses[0].display_name == "Eve Bcc: victim@example.org"


@pytest.mark.parametrize(
    "name",
    ["", "Jane Doe", 'Jane "JD" Doe, PhD', "Jöhn Müller", "佐藤 太郎" * 8, "\\back\\slash"],
)
def test_names_round_trip_through_the_to_header(name: str) -> None:
    header = address_header(name, "someone@example.org")
    for line in header.split(b"\r\n"):
        assert len(line) <= 78
    raw = message_from_bytes(header + b"\r\n")["To"]
    # The legacy decoder: the new one puts a space between adjacent encoded words, which
    # RFC 2047 says to ignore (a CPython bug); mail clients join them as we expect.
    phrase, addr_spec = parseaddr(raw)
    assert addr_spec == "someone@example.org"
    assert str(make_header(decode_header(phrase))) == name


ABSURD = [
    "A" * 1500,
    " ".join(["Abc"] * 400),
    "Jane " + "x" * 1500 + " Doe",
    ('Dr. "Quoted" Name, with (specials) ' * 40).strip(),
    "é" * 800,
    " ".join(["佐藤 太郎"] * 150),
    " ".join(["Mixed ASCII words and 日本語"] * 60),
    "=?utf-8?q?not_an_encoded_word?=" * 3,
]


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def _decoded_phrase(raw: str) -> tuple[str, str]:
    """Display name and address of an address header, decoded as mail clients do (the
    legacy decoder: the new one puts a space between adjacent encoded words)."""
    phrase, addr_spec = parseaddr(_unfold(raw))
    return str(make_header(decode_header(phrase))), addr_spec


@pytest.mark.parametrize("text", ABSURD)
def test_absurd_names_and_subjects_fold_and_round_trip(text: str) -> None:
    letterhead = Letterhead(
        sender_name=text,
        sender_email="office@example.org",
        reply_to="reply@example.org",
        list_id="list.example.org",
        list_name=text,
        unsubscribe_url="https://example.org/u/",
        unsubscribe_mailto="office@example.org",
    )
    issue = IssueMessages(
        period=PERIOD,
        language="en",
        subject=text,
        personal_html="<p>nl-personal:greeting</p>\n",
        personal_text="nl-personal:greeting\n",
        letterhead=letterhead,
        view_url="https://example.org/",
        gettext=lambda message, **v: message % v if v else message,
        secret=SECRET.encode(),
        when=WHEN,
    )
    data = issue.render(Recipient("reader@example.org", text))
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    for line in head.split(b"\r\n"):
        assert len(line) <= 998, line[:80]
        if not line.startswith((b"List-Unsubscribe: <", b" <mailto:")):
            assert len(line) <= 78, line
    message = message_from_bytes(data, policy=default_policy)
    assert message["Subject"] == text
    legacy = message_from_bytes(data)
    assert _decoded_phrase(legacy["To"]) == (text, "reader@example.org")
    assert _decoded_phrase(legacy["From"]) == (text, "office@example.org")
    assert _decoded_phrase(legacy["List-Id"]) == (text, "list.example.org")
    assert message["Reply-To"] == "reply@example.org"
    assert message["List-Unsubscribe"].startswith("<https://example.org/u/?token=")
    assert not message.defects


def test_the_longest_address_keeps_every_line_under_998_octets(
    issues: dict[str, IssueMessages],
) -> None:
    email = "x" * 64 + "@" + ".".join(["d" * 61] * 3) + ".org"
    assert len(email) == 254
    data = issues["en"].render(Recipient(email, "N" * 2000))
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    message = message_from_bytes(data, policy=default_policy)
    assert message["To"].addresses[0].addr_spec == email


def test_non_ascii_names_become_encoded_words() -> None:
    assert encode_phrase("Jöhn").startswith("=?utf-8?b?")
    assert encode_phrase("Jane Doe") == "Jane Doe"


@pytest.mark.parametrize("address", ["a@b.org\r\nBcc: x@y.org", "a b@c.org", "<a@b.org>"])
def test_odd_addresses_are_refused_in_headers(address: str) -> None:
    with pytest.raises(ValueError):
        address_header("", address)


# tokens


def test_tokens_verify_and_refuse_tampering() -> None:
    secret = SECRET.encode()
    token = tokens.sign(secret, "list.example.org", "jane@example.org")
    assert tokens.verify(secret, "list.example.org", token) == "jane@example.org"
    payload, mac = token.split(".")
    other = tokens.sign(secret, "list.example.org", "john@example.org").split(".")[0]
    assert tokens.verify(secret, "list.example.org", f"{other}.{mac}") is None
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    assert tokens.verify(secret, "list.example.org", f"{payload}.{flipped}") is None
    assert tokens.verify(b"another secret 123456", "list.example.org", token) is None
    assert tokens.verify(secret, "other.example.org", token) is None
    for junk in ("", ".", "abc", "!!!.???", payload, "a" * 2000):
        assert tokens.verify(secret, "list.example.org", junk) is None


def _same_bytes_other_spelling(text: str) -> list[str]:
    """`text` with its last character changed in the bits base64 decoding throws away."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    spellings = []
    for char in alphabet:
        other = text[:-1] + char
        if other != text and base64.urlsafe_b64decode(other + "=" * (-len(other) % 4)) == decoded:
            spellings.append(other)
    return spellings


def test_tokens_with_flipped_unused_bits_are_refused() -> None:
    secret = SECRET.encode()
    token = tokens.sign(secret, "list.example.org", "jane@example.org")
    payload, mac = token.split(".")
    variants = [f"{payload}.{m}" for m in _same_bytes_other_spelling(mac)]
    variants += [f"{p}.{mac}" for p in _same_bytes_other_spelling(payload)]
    assert len(variants) >= 3  # the last character of each part carries unused bits
    for variant in variants:
        assert tokens.verify(secret, "list.example.org", variant) is None, variant


@pytest.mark.parametrize("junk", ["!", "*", ".", "!*.", "=", " ", "+/", "%"])
def test_tokens_with_inserted_junk_are_refused(junk: str) -> None:
    secret = SECRET.encode()
    token = tokens.sign(secret, "list.example.org", "jane@example.org")
    payload, mac = token.split(".")
    positions = [1, len(payload) // 2, len(payload) - 1]
    variants = [f"{payload[:i]}{junk}{payload[i:]}.{mac}" for i in positions]
    variants += [f"{payload}.{mac[:i]}{junk}{mac[i:]}" for i in (1, 10, len(mac) - 1)]
    variants += [f"{payload}.{mac}{junk}x", f"{payload}{junk}.{mac}"]
    for variant in variants:
        assert tokens.verify(secret, "list.example.org", variant) is None, variant
    assert tokens.verify(secret, "list.example.org", token) == "jane@example.org"


def test_secret_must_be_set_and_long_enough() -> None:
    from newsletter.errors import NewsletterError

    with pytest.raises(NewsletterError, match="NEWSLETTER_SECRET is not set"):
        tokens.secret_from_env({})
    with pytest.raises(NewsletterError, match="too short"):
        tokens.secret_from_env({"NEWSLETTER_SECRET": "short"})
    assert tokens.secret_from_env({"NEWSLETTER_SECRET": SECRET}) == SECRET.encode()


# whole messages from the built issue


@pytest.fixture(scope="module")
def issue_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return built_project(tmp_path_factory.mktemp("messages") / "project")


@pytest.fixture(scope="module")
def issues(issue_project: Project) -> dict[str, IssueMessages]:
    config = load_config(issue_project.root)
    return compile_issues(issue_project, config, PERIOD, ["en", "ja"], SECRET.encode(), WHEN)


@pytest.mark.parametrize(
    ("language", "name", "greeting"),
    [
        ("en", "Jane Doe", "Dear Jane Doe,"),
        ("en", "", "Dear reader,"),
        ("en", "<b>Tom & Jerry</b>", "Dear <b>Tom & Jerry</b>,"),
        ("ja", "佐藤 太郎", "佐藤 太郎 様"),
        ("ja", "", "読者の皆様"),
    ],
)
def test_each_message_decodes_to_the_personalised_issue(
    issue_project: Project,
    issues: dict[str, IssueMessages],
    language: str,
    name: str,
    greeting: str,
) -> None:
    issue = issues[language]
    email = "jane.doe@example.org"
    data = issue.render(Recipient(email, name))
    for line in data.split(b"\r\n"):
        assert not line.startswith(b".")
        assert len(line) <= 998
    message = message_from_bytes(data, policy=default_policy)
    config = load_config(issue_project.root)
    token = tokens.sign(SECRET.encode(), list_id(config), email)
    link = f"https://digest.eu-japan-rni.example.org/unsubscribe/?token={token}"
    values = {
        "greeting": greeting,
        "unsubscribe_url": link,
        "view_url": f"https://digest.eu-japan-rni.example.org/archive/{PERIOD}/{language}/",
    }
    directory = issue_project.outbox_dir / PERIOD / language
    expected_html = fill((directory / "personal.html").read_text(), values, html_escape=True)
    expected_text = fill((directory / "personal.txt").read_text(), values, html_escape=False)
    html = message.get_body(("html",)).get_content().replace("\r\n", "\n")
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert html == expected_html
    assert text == expected_text
    assert "nl-personal:" not in html + text

    manifest_subject = issue.subject
    assert message["Subject"] == manifest_subject
    assert message["To"].addresses[0].addr_spec == email
    assert message["To"].addresses[0].display_name == name
    assert message["From"].addresses[0].addr_spec == "digest@eu-japan-rni.example.org"
    assert message["List-Unsubscribe"] == (
        f"<{link}>, <mailto:enquiries@eu-japan-rni.example.org?subject=unsubscribe%20{token}>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"].endswith("<digest.eu-japan-rni.example.org>")
    assert message["Content-Language"] == language
    assert message["Date"].datetime == WHEN
    assert message["Message-ID"] == issue.message_id(email)
    assert message.get_content_type() == "multipart/alternative"
    assert not message.defects
    for part in message.iter_parts():
        assert not part.defects
        assert part.get_content_charset() == "utf-8"


def test_message_ids_are_stable_per_recipient_and_distinct_between_them(
    issues: dict[str, IssueMessages],
) -> None:
    issue = issues["en"]
    first = issue.message_id("a@example.org")
    assert first == issue.message_id("a@example.org")
    assert first == issue.message_id("A@example.org")
    assert first != issue.message_id("b@example.org")
    assert first.endswith("@eu-japan-rni.example.org>")


def test_the_secret_is_not_in_any_message(issues: dict[str, IssueMessages]) -> None:
    for issue in issues.values():
        data = issue.render(Recipient("x@example.org", "X"))
        assert SECRET.encode() not in data


def test_non_ascii_subject_is_an_encoded_word(issues: dict[str, IssueMessages]) -> None:
    data = issues["ja"].render(Recipient("x@example.org"))
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert b"Subject: =?utf-8?" in head


def test_letterhead_values_with_line_breaks_cannot_add_headers(issue_project: Project) -> None:
    letterhead = Letterhead(
        sender_name="Office",
        sender_email="office@example.org",
        reply_to=None,
        list_id="list.example.org",
        list_name="A list\r\nBcc: victim@example.org",
        unsubscribe_url="https://example.org/u/",
        unsubscribe_mailto="office@example.org",
    )
    issue = IssueMessages(
        period=PERIOD,
        language="en",
        subject="Subject\r\nBcc: victim@example.org",
        personal_html="<p>nl-personal:greeting</p>\n",
        personal_text="nl-personal:greeting\n",
        letterhead=letterhead,
        view_url="https://example.org/",
        gettext=lambda message, **v: message % v if v else message,
        secret=SECRET.encode(),
        when=WHEN,
    )
    message = message_from_bytes(issue.render(Recipient("a@example.org")), policy=default_policy)
    assert message["Bcc"] is None
    assert message["Subject"] == "Subject Bcc: victim@example.org"
