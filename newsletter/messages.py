"""Per-recipient MIME messages from a built issue, fast.

`newsletter build` leaves `personal.html` and `personal.txt` in the outbox, with markers where a
person's greeting and links go. Here each is split at the markers once per issue and language,
and every constant piece is encoded once (quoted-printable or base64, whichever is smaller). For
one recipient only the few personal values are encoded, and the message is a join of bytes.

Joining separately encoded pieces must still decode as one body:
- quoted-printable: every constant piece and every value ends its line (a hard line break, or a
  soft one, `=` CRLF), so the next piece starts a fresh line and no escape or line is split;
- base64: every piece but the last is a multiple of three bytes; a value is encoded together
  with the bytes around it that make it so (three precomputed alignments per constant piece).
Every body line is at most 76 characters; header lines are folded (RFC 5322) to 78 characters
where they can be, and are never longer than 998 octets (an unsubscribe URL, which RFC 2369
forbids folding, has a line of its own). No line starts with a dot, so the bytes go to SMTP
DATA as they are, with no transparency pass.
"""

from __future__ import annotations

import binascii
import hashlib
import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path

from newsletter import personal, tokens
from newsletter.errors import NewsletterError, Problem
from newsletter.outbox import read_manifest
from newsletter.subscribers import clean_name

CRLF = b"\r\n"
_LINE = 76
_B64_CHUNK = 57
"""Bytes per base64 line: 57 bytes make 76 characters."""
_SAFE_ADDRESS = re.compile(r"[!#-'*+\-./0-9=?A-Z^-~]+@[A-Za-z0-9.\-\[\]:]+")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+")


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str = ""


# quoted-printable


def _qp_tokens() -> list[str]:
    tokens = []
    for byte in range(256):
        if (33 <= byte <= 126 and byte != 61) or byte in (9, 32):
            tokens.append(chr(byte))
        else:
            tokens.append(f"={byte:02X}")
    return tokens


_QP_TOKENS = _qp_tokens()


def qp_encode(data: bytes, *, soft_end: bool) -> bytes:
    """Quoted-printable of CRLF text; with `soft_end` the result ends in a soft line break.

    Trailing blanks of every line and a dot at the start of a line are escaped, so the
    output survives transports that strip blanks and needs no SMTP dot-stuffing.
    """
    if not data:
        return b""
    out: list[str] = []
    lines = data.split(CRLF)
    for index, line in enumerate(lines):
        tokens = [_QP_TOKENS[byte] for byte in line]
        if tokens and line[-1] in (9, 32):
            tokens[-1] = f"={line[-1]:02X}"
        physical: list[str] = []
        width = 0
        for token in tokens:
            if width + len(token) > _LINE - 1:
                out.append("".join(physical))
                out.append("=\r\n")
                physical, width = [], 0
            if width == 0 and token == ".":
                token = "=2E"
            physical.append(token)
            width += len(token)
        out.append("".join(physical))
        if index < len(lines) - 1:
            out.append("\r\n")
        elif soft_end:
            out.append("=\r\n")
    return "".join(out).encode("ascii")


def qp_value(data: bytes) -> bytes:
    """`qp_encode(data, soft_end=True)` for one line of text, through the C encoder when the
    result needs no repair (the usual case)."""
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=False)
    if b"\n" not in encoded:
        if len(encoded) < _LINE and not encoded.startswith(b"."):
            return encoded + b"=\r\n"
    elif (
        b"\r" not in data
        and b"\n" not in data
        and not encoded.startswith(b".")
        and b"\n." not in encoded
        and len(encoded) - encoded.rfind(b"\n") <= _LINE
    ):
        return encoded.replace(b"=\n", b"=\r\n") + b"=\r\n"
    return qp_encode(data, soft_end=True)


# base64


def b64_lines(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, each ending in CRLF."""
    b2a = binascii.b2a_base64
    if len(data) <= _B64_CHUNK:
        return b2a(data, newline=False) + CRLF if data else b""
    return b"".join(
        b2a(data[i : i + _B64_CHUNK], newline=False) + CRLF for i in range(0, len(data), _B64_CHUNK)
    )


# bodies


class Body:
    """One text part compiled for fast filling: constant pieces encoded, values encoded late."""

    cte: str

    def __init__(self, template: str):
        parts = personal.segments(template)
        self.constants = [_canonical(text) for text in parts[0::2]]
        self.fields: list[str] = parts[1::2]

    def extend(self, out: list[bytes], values: Mapping[str, bytes]) -> None:
        raise NotImplementedError

    @property
    def size(self) -> int:
        raise NotImplementedError


class QuotedPrintableBody(Body):
    cte = "quoted-printable"

    def __init__(self, template: str):
        super().__init__(template)
        last = len(self.constants) - 1
        self.encoded = [qp_encode(text, soft_end=i < last) for i, text in enumerate(self.constants)]

    def extend(self, out: list[bytes], values: Mapping[str, bytes]) -> None:
        encoded = self.encoded
        out.append(encoded[0])
        for index, name in enumerate(self.fields, 1):
            out.append(values[name])
            out.append(encoded[index])

    def encode_value(self, value: bytes) -> bytes:
        return qp_value(value)

    @property
    def size(self) -> int:
        return sum(map(len, self.encoded))


@dataclass(frozen=True)
class _Aligned:
    """A constant piece with `head` bytes given to the value before it, so that value and
    head together are a multiple of three; `encoded` is the base64 of what follows, `tail`
    the one or two bytes left over for the next value."""

    head: bytes
    encoded: bytes
    tail: bytes


class Base64Body(Body):
    cte = "base64"

    def __init__(self, template: str):
        super().__init__(template)
        self.aligned: list[list[_Aligned | None]] = []
        for index, text in enumerate(self.constants):
            variants: list[_Aligned | None] = []
            for head in range(3 if index else 1):
                if head > len(text):
                    variants.append(None)
                    continue
                body_end = head + (len(text) - head) // 3 * 3
                variants.append(
                    _Aligned(text[:head], b64_lines(text[head:body_end]), text[body_end:])
                )
            self.aligned.append(variants)

    def extend(self, out: list[bytes], values: Mapping[str, bytes]) -> None:
        first = self.aligned[0][0]
        assert first is not None
        out.append(first.encoded)
        carry = first.tail
        for index, name in enumerate(self.fields, 1):
            pending = carry + values[name]
            variant = self.aligned[index][-len(pending) % 3]
            if variant is None:
                carry = pending + self.constants[index]
                continue
            out.append(b64_lines(pending + variant.head))
            out.append(variant.encoded)
            carry = variant.tail
        out.append(b64_lines(carry))

    def encode_value(self, value: bytes) -> bytes:
        return value

    @property
    def size(self) -> int:
        return sum(len(v[0].encoded) for v in self.aligned if v[0] is not None)


def compile_body(template: str) -> QuotedPrintableBody | Base64Body:
    """Whichever encoding gives fewer bytes: quoted-printable for mostly-ASCII text,
    base64 for Japanese and other scripts."""
    quoted = QuotedPrintableBody(template)
    if all(text.isascii() for text in quoted.constants):
        return quoted
    base64 = Base64Body(template)
    return quoted if quoted.size <= base64.size else base64


def _canonical(text: str) -> bytes:
    """Text in MIME's canonical form: UTF-8 with CRLF line ends."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n").encode()


# headers

_FOLD = 78
"""RFC 5322's recommended line length: headers are folded to it where they can be."""
_MAX_LINE = 998
"""RFC 5322's hard limit (without the CRLF); no header line is ever longer."""
_EW_BYTES = 39
"""UTF-8 bytes per RFC 2047 encoded word: 52 base64 characters, 64 with the delimiters (the
limit is 75), so an encoded word fits on a line even after `Subject: ` or `List-Id: `."""
_LONG_WORD = 70
"""An ASCII word longer than this cannot be folded onto a line of its own within 78
characters: such a text goes out as encoded words instead, which can be split anywhere."""
_MAX_ADDRESS = 254
"""RFC 5321's limit on a forward path, which keeps every header that holds an address (or a
token made from one) under 998 octets."""


def _encoded_words(text: str) -> list[str]:
    """`text` as RFC 2047 B-encoded words of whole characters, each at most 64 characters.
    Decoders drop the folding white space between adjacent encoded words, so the words
    decode to exactly `text`."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode())
        if size + width > _EW_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    words.append("".join(chunk))
    return [
        f"=?utf-8?b?{binascii.b2a_base64(w.encode(), newline=False).decode('ascii')}?="
        for w in words
    ]


def _plain_words(text: str) -> list[str] | None:
    """The words of a one-line ASCII text that may go into a header as they are, or None
    when the text needs encoded words (not ASCII, a word too long to fold, or something a
    reader would take for an encoded word)."""
    if not text.isascii() or "=?" in text:
        return None
    words = text.split(" ")
    if any(len(word) > _LONG_WORD for word in words):
        return None
    return words


def phrase_words(text: str) -> list[str]:
    """A display name (RFC 5322 phrase) as the words of a header: atoms as they are, a name
    with specials as a quoted string (split at its spaces, where it may be folded), anything
    else as encoded words. Control characters and line breaks become spaces first."""
    text = clean_name(text)
    if not text:
        return []
    words = _plain_words(text)
    if words is None:
        return _encoded_words(text)
    if _ATOM.fullmatch(text):
        return words
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return quoted.split(" ")


def text_words(text: str) -> list[str]:
    """An unstructured header value (Subject) as words, folded at its spaces; encoded words
    when it is not ASCII or has a word too long to fold."""
    text = clean_name(text)
    words = _plain_words(text)
    return _encoded_words(text) if words is None else words


def fold(name: str, words: list[str]) -> bytes:
    """`Name: word word …` CRLF, with a fold (CRLF and a space, which unfolding removes)
    before any word that would take its line past 78 characters. A single word longer than
    that (a URL) gets a line of its own; ValueError if a line would still pass 998 octets."""
    lines: list[str] = []
    line = f"{name}:"
    bare = True
    for word in words:
        if not bare and len(line) + 1 + len(word) > _FOLD:
            lines.append(line)
            line = ""
        line = f"{line} {word}"
        bare = False
    lines.append(line)
    if any(len(line) > _MAX_LINE for line in lines):
        raise ValueError(f"the {name} header has a word longer than {_MAX_LINE} octets")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def encode_phrase(text: str) -> str:
    """A display name for an address header: plain, quoted, or RFC 2047 encoded words
    (unfolded; `fold` may break it at any of its spaces)."""
    return " ".join(phrase_words(text))


def _check_address(email: str) -> str:
    if len(email) > _MAX_ADDRESS or not _SAFE_ADDRESS.fullmatch(email):
        raise ValueError(f"refusing to put {email!r} in a header")
    return email


def address_header(name: str, email: str, field: str = "To") -> bytes:
    """`To:` (or `field`) for one address; a name cannot add a header, an odd address is
    refused, and a long name is folded (never a line over 998 octets)."""
    _check_address(email)
    if not name:
        return f"{field}: {email}\r\n".encode()
    words = phrase_words(name)
    if not words:
        return f"{field}: {email}\r\n".encode()
    line = f"{field}: {' '.join(words)} <{email}>"
    if len(line) <= _FOLD:
        return f"{line}\r\n".encode()
    return fold(field, [*words, f"<{email}>"])


# the issue


@dataclass(frozen=True)
class Letterhead:
    """What every message of the list says about its sender."""

    sender_name: str
    sender_email: str
    reply_to: str | None
    list_id: str
    list_name: str
    unsubscribe_url: str
    """Base of the https unsubscribe link; the token goes in `?token=`."""
    unsubscribe_mailto: str


class IssueMessages:
    """One issue in one language, compiled once; `render()` makes one recipient's message."""

    def __init__(
        self,
        *,
        period: str,
        language: str,
        subject: str,
        personal_html: str,
        personal_text: str,
        letterhead: Letterhead,
        view_url: str,
        gettext: Callable[..., str],
        secret: bytes,
        when: datetime,
    ):
        self.period = period
        self.language = language
        self.subject = clean_name(subject)
        self.letterhead = letterhead
        self._secret = secret
        self._id_key = hashlib.blake2b(b"message-id\0" + secret).digest()[:32]
        self._domain = letterhead.sender_email.rpartition("@")[2]
        self._scope = letterhead.list_id
        self._view_url = view_url
        self._greeting = _cached_greeting(gettext)
        self.text = compile_body(personal_text)
        self.html = compile_body(personal_html)
        boundary = "=_nl_" + hashlib.sha256(f"{period}\0{language}".encode()).hexdigest()[:24]
        self._check_link_lengths()
        self._head = self._constant_headers(when, boundary)
        self._text_head = _part_head(boundary, "plain", self.text.cte, first=True)
        self._html_head = _part_head(boundary, "html", self.html.cte, first=False)
        self._end = f"\r\n--{boundary}--\r\n".encode()
        view = view_url.encode()
        self._view = (self.text.encode_value(view), self.html.encode_value(_escape(view_url)))

    def _constant_headers(self, when: datetime, boundary: str) -> bytes:
        """Every header that is the same for all recipients, folded (RFC 5322)."""
        letterhead = self.letterhead
        try:
            lines = [
                address_header(letterhead.sender_name, letterhead.sender_email, "From"),
                address_header("", letterhead.reply_to, "Reply-To") if letterhead.reply_to else b"",
                fold("Subject", text_words(self.subject)),
                f"Date: {format_datetime(when)}\r\n".encode(),
                fold("List-Id", [*phrase_words(letterhead.list_name), f"<{letterhead.list_id}>"]),
                b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
                fold("Content-Language", [self.language]),
                b"MIME-Version: 1.0\r\n",
                f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'.encode(),
            ]
        except ValueError as exc:
            raise NewsletterError(Problem(f"cannot make the message headers: {exc}")) from None
        return b"".join(lines) + CRLF

    def _check_link_lengths(self) -> None:
        """The unsubscribe links must each fit on one header line (RFC 2369 forbids folding
        inside the angle brackets) for the longest possible address."""
        token = len(tokens.sign(self._secret, self._scope, "x" * _MAX_ADDRESS))
        letterhead = self.letterhead
        https = len("List-Unsubscribe: <?token=>,") + len(letterhead.unsubscribe_url) + token
        mailto = len(" <mailto:?subject=unsubscribe%20>") + len(letterhead.unsubscribe_mailto)
        if https > _MAX_LINE:
            raise NewsletterError(
                Problem("too long for an email header", field="mailing.unsubscribe_url")
            )
        if mailto + token > _MAX_LINE:
            raise NewsletterError(
                Problem("too long for an email header", field="mailing.unsubscribe_mailto")
            )

    def message_id(self, email: str) -> str:
        """The same Message-ID every time for one issue and recipient: a copy re-sent after a
        crash can be recognised as the same message."""
        key = f"{self.period}\0{email.lower()}".encode()
        digest = hashlib.blake2b(key, key=self._id_key, digest_size=12).hexdigest()
        return f"<{digest}.{self.period}@{self._domain}>"

    def render(self, recipient: Recipient, *, message_id: str | None = None) -> bytes:
        """The complete message: CRLF line ends, body lines at most 76 characters, header
        lines folded to 78 where they can be and never over 998 octets, no line starting
        with a dot (so it goes to DATA as it is)."""
        email = recipient.email
        token = tokens.sign(self._secret, self._scope, email)
        link = f"{self.letterhead.unsubscribe_url}?token={token}"
        mailto = f"mailto:{self.letterhead.unsubscribe_mailto}?subject=unsubscribe%20{token}"
        greeting = self._greeting(recipient.name)
        text, markup = self.text, self.html
        out = [
            address_header(recipient.name, email),
            f"Message-ID: {message_id or self.message_id(email)}\r\n".encode(),
            f"List-Unsubscribe: <{link}>,\r\n <{mailto}>\r\n".encode(),
            self._head,
            self._text_head,
        ]
        text.extend(
            out,
            {
                "greeting": text.encode_value(greeting.encode()),
                "unsubscribe_url": text.encode_value(link.encode()),
                "view_url": self._view[0],
            },
        )
        out.append(self._html_head)
        markup.extend(
            out,
            {
                "greeting": markup.encode_value(_escape(greeting)),
                "unsubscribe_url": markup.encode_value(_escape(link)),
                "view_url": self._view[1],
            },
        )
        out.append(self._end)
        return b"".join(out)


def _escape(text: str) -> bytes:
    return html.escape(text, quote=True).encode()


def _part_head(boundary: str, subtype: str, cte: str, *, first: bool) -> bytes:
    lead = f"--{boundary}" if first else f"\r\n--{boundary}"
    return (
        f'{lead}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {cte}\r\n\r\n"
    ).encode()


def _cached_greeting(gettext: Callable[..., str]) -> Callable[[str], str]:
    """`personal.greeting` with the catalogue looked up once, not once per recipient."""
    templates: dict[str, str] = {}

    def cached(message: str, **variables: object) -> str:
        if message not in templates:
            templates[message] = gettext(message)
        text = templates[message]
        return text % variables if variables else text

    return lambda name: personal.greeting(name, cached)


def is_built(directory: Path) -> bool:
    """Whether `outbox/<period>/<lang>/` holds what sending needs."""
    return (
        read_manifest(directory) is not None
        and (directory / "personal.html").is_file()
        and (directory / "personal.txt").is_file()
    )


def load_issue(
    directory: Path,
    *,
    letterhead: Letterhead,
    view_url: str,
    gettext: Callable[..., str],
    secret: bytes,
    when: datetime,
) -> IssueMessages:
    """Compile `outbox/<period>/<lang>/` for sending; NewsletterError if it is not built."""
    manifest = read_manifest(directory)
    html_path, text_path = directory / "personal.html", directory / "personal.txt"
    if manifest is None or not is_built(directory):
        period, language = directory.parent.name, directory.name
        raise NewsletterError(
            Problem(
                f"the {language} issue of {period} is not built; run "
                f"`newsletter build --period {period} --lang {language}` first",
                directory,
            )
        )
    return IssueMessages(
        period=manifest["period"],
        language=manifest["language"],
        subject=manifest["subject"],
        personal_html=html_path.read_text(encoding="utf-8"),
        personal_text=text_path.read_text(encoding="utf-8"),
        letterhead=letterhead,
        view_url=view_url,
        gettext=gettext,
        secret=secret,
        when=when,
    )
