"""Translations of the theme's own words (from .po files) and locale-aware dates and money.

Translators edit `templates/locales/<lang>.po` with any PO editor; we read the catalogue directly
with Babel, so there is no compile step. A string without a translation falls back to English and
is reported once as a build warning.
"""

from __future__ import annotations

import gettext
import re
from collections.abc import Callable
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime, format_skeleton
from babel.messages.catalog import Catalog
from babel.messages.pofile import PoFileError, read_po
from babel.numbers import format_compact_currency
from jinja2 import Environment

from newsletter.dates import PartialDate, Period
from newsletter.errors import NewsletterError, Problem


class Translator:
    """gettext for one language, remembering which messages had no translation."""

    def __init__(self, language: str, catalog: Catalog | None):
        self.language = language
        self.catalog = catalog
        self.missing: set[str] = set()

    @cached_property
    def _plural(self) -> Callable[[int], int]:
        assert self.catalog is not None
        return gettext.c2py(self.catalog.plural_expr)

    def gettext(self, message: str, **variables: object) -> str:
        text = self._lookup(message, None, 1)
        return text % variables if variables else text

    def ngettext(self, singular: str, plural: str, n: int, **variables: object) -> str:
        text = self._lookup(singular, plural, n)
        return text % {"num": n, **variables}

    def install(self, env: Environment) -> None:
        """Give templates `_()` and `ngettext()`; Jinja's new-style gettext fills variables."""
        env.install_gettext_callables(
            lambda message: self._lookup(message, None, 1),
            lambda singular, plural, n: self._lookup(singular, plural, n),
            newstyle=True,
        )

    def _lookup(self, singular: str, plural: str | None, n: int) -> str:
        fallback = singular if plural is None or n == 1 else plural
        if self.catalog is None:
            return fallback
        entry = self.catalog.get(singular)
        if entry is None or not entry.string or entry.fuzzy:
            self.missing.add(singular)
            return fallback
        if isinstance(entry.string, tuple):
            index = self._plural(n) if plural is not None else 0
            return entry.string[index] or fallback
        return entry.string


def load_translator(language: str, default_language: str, locale_dirs: list[Path]) -> Translator:
    """The first `<lang>.po` found in `locale_dirs`; the default language needs none."""
    if language == default_language:
        return Translator(language, None)
    for directory in locale_dirs:
        path = directory / f"{language}.po"
        if path.is_file():
            try:
                with path.open("rb") as handle:
                    catalog = read_po(handle, locale=language, abort_invalid=True)
            except PoFileError as exc:
                reason = re.sub(r" on \d+$", "", str(exc))
                raise NewsletterError(
                    Problem(f"invalid translation file: {reason}", path, line=exc.lineno + 1)
                ) from None
            except OSError as exc:
                raise NewsletterError(Problem(f"cannot read: {exc.strerror}", path)) from None
            return Translator(language, catalog)
    translator = Translator(language, Catalog(locale=language))
    return translator


def format_day(
    value: date | datetime | PartialDate | Period, language: str, style: str = "long"
) -> str:
    """A date as readers of `language` write it; partial dates keep only what is known."""
    if isinstance(value, Period):
        return format_skeleton("yMMMM", value.first_day, locale=language)
    if isinstance(value, PartialDate):
        if value.month is None:
            return str(value.year)
        if value.day is None:
            return format_skeleton("yMMMM", value.first_day, locale=language)
        value = value.first_day
    if isinstance(value, datetime):
        # "3 December 2026, 17:00 CET" but "2026年12月3日 17:00 ベルギー時間": CJK takes no comma.
        separator = " " if language.split("_")[0] in ("ja", "zh", "ko") else ", "
        day = format_date(value.date(), style, locale=language)
        return f"{day}{separator}{format_time(value, language)}"
    return format_date(value, style, locale=language)


def format_time(value: datetime, language: str) -> str:
    """A time with its zone as readers know it: "17:00 Belgium Time", "17:00 UTC+09:00"."""
    if isinstance(value.tzinfo, ZoneInfo):
        return format_datetime(value, "HH:mm v", locale=language)
    offset = value.strftime("%z")
    return f"{value:%H:%M} UTC{offset[:3]}:{offset[3:]}" if offset else f"{value:%H:%M}"


def format_money(amount: float, language: str) -> str:
    return format_compact_currency(amount, "EUR", locale=language, fraction_digits=1)
