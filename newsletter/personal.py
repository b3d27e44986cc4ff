"""The per-recipient parts of an issue: greeting, unsubscribe link, view-in-browser link.

Templates call `personal("unsubscribe_url")`, which leaves a marker such as
`nl-personal:unsubscribe_url` in the output. It looks like a URL with a scheme, so CSS inlining
leaves it alone in `href`s. The build writes `personal.html` / `personal.txt` with the markers
(for `newsletter send`, which fills them per recipient) and `index.html` / `digest.txt` with
neutral values (for the archive and the preview).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping

FIELDS = ("greeting", "unsubscribe_url", "view_url")
PREFIX = "nl-personal:"
_MARKER = re.compile(rf"{PREFIX}({'|'.join(FIELDS)})\b")


def marker(field: str) -> str:
    if field not in FIELDS:
        raise ValueError(f"unknown personal field {field!r}; known: {', '.join(FIELDS)}")
    return PREFIX + field


def segments(template: str) -> list[str]:
    """Split at the markers: constant text at even indexes, field names at odd ones."""
    return _MARKER.split(template)


def fill(template: str, values: Mapping[str, str], *, html_escape: bool) -> str:
    """Replace every marker; values are HTML-escaped when filling HTML."""
    escape = html.escape if html_escape else str
    return _MARKER.sub(lambda m: escape(values[m.group(1)]), template)


def unfilled(text: str) -> list[str]:
    """Markers left in a finished file: a bug, or a hand-made template gone wrong."""
    return sorted(set(_MARKER.findall(text)))


def greeting(name: str | None, gettext: Callable[..., str]) -> str:
    """ "Dear Ms Sato," / "佐藤様" when the name is known, a neutral salutation otherwise."""
    clean = " ".join((name or "").split())
    if clean:
        return gettext("Dear %(name)s,", name=clean)
    return gettext("Dear reader,")


def neutral_values(
    *,
    website: str,
    archive_url: str | None,
    period: str,
    language: str,
    gettext: Callable[..., str],
) -> dict[str, str]:
    """What the archive copy (index.html, digest.txt, message.eml) shows instead of a person."""
    view = f"{archive_url or website}{period}/{language}/"
    return {
        "greeting": greeting(None, gettext),
        "unsubscribe_url": f"{website}unsubscribe/",
        "view_url": view,
    }
