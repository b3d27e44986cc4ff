"""`newsletter.toml`: one schema with defaults, one loader, errors that name the bad key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)

from newsletter.errors import NewsletterError, Problem

CONFIG_NAME = "newsletter.toml"

SECTION_IDS = ("milestones", "history", "calls", "projects", "news", "events", "contacts")
"""Every section the engine knows how to fill; the config picks which appear and in what order."""

LanguageCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Localized = str | dict[LanguageCode, str]
"""A text given once, or once per language (`title = { en = "...", ja = "..." }`)."""


class Identity(_Strict):
    title: Localized
    tagline: Localized = ""
    website: HttpUrl
    """Base for every relative link; email clients cannot resolve relative URLs."""
    archive_url: HttpUrl | None = None
    list_id: str = Field(default="", description="RFC 2919 List-Id, e.g. digest.example.org")
    languages: list[LanguageCode] = ["en"]
    default_language: LanguageCode = "en"
    locales: dict[LanguageCode, str] = {}
    """Babel locale that formats dates and money per language, e.g. `en = "en_GB"`."""
    timezone: str = "Europe/Brussels"

    @field_validator("locales")
    @classmethod
    def _known_locales(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value.values():
            try:
                Locale.parse(name)
            except (UnknownLocaleError, ValueError):
                raise ValueError(f"unknown locale {name!r}") from None
        return value

    def locale(self, language: str) -> str:
        return self.locales.get(language, language)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _default_in_languages(self) -> Identity:
        if self.default_language not in self.languages:
            raise ValueError(
                f"default_language {self.default_language!r} is not in languages {self.languages}"
            )
        return self


class Sender(_Strict):
    name: str
    email: str = Field(pattern=r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")
    reply_to: str | None = Field(default=None, pattern=r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")

    @field_validator("name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("must be a single line")
        return value


class Footer(_Strict):
    organisation: str
    address: str
    """Postal address: bulk-mail rules and anti-spam laws require one in every message."""
    reason: Localized = ""
    """Why the reader gets this email; shown in the footer."""


class SelectionRules(_Strict):
    """How items are picked for a period; times are relative to the issue time (`--now`)."""

    calls_opening_within_days: int = Field(default=30, ge=0)
    closing_soon_days: int = Field(default=14, ge=0)
    events_within_days: int = Field(default=90, ge=0)
    history_min_years: int = Field(default=1, ge=1)


class Section(_Strict):
    id: Literal[SECTION_IDS]  # type: ignore[valid-type]
    limit: int = Field(default=10, ge=1, le=100)
    title: Localized | None = None
    """Override of the built-in, translated title: one string, or one per language code."""


class Feed(_Strict):
    name: str
    url: HttpUrl | None = None
    path: str | None = None
    timeout: float = Field(default=10.0, gt=0, le=120)
    max_bytes: int = Field(default=5_000_000, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> Feed:
        if (self.url is None) == (self.path is None):
            raise ValueError("give exactly one of `url` or `path`")
        if self.url is not None and self.url.scheme not in ("http", "https"):
            raise ValueError("`url` must be http or https")
        return self


class Config(_Strict):
    newsletter: Identity
    sender: Sender
    footer: Footer
    selection: SelectionRules = SelectionRules()
    sections: list[Section] = Field(default_factory=lambda: [Section(id=s) for s in SECTION_IDS])
    feeds: list[Feed] = []

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.newsletter.timezone)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: set[str] = set()
        for section in self.sections:
            if section.id in seen:
                raise ValueError(f"section {section.id!r} appears twice")
            seen.add(section.id)
        names = [feed.name for feed in self.feeds]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"feed name {name!r} appears twice")
        return self


def load_config(root: Path) -> Config:
    """Read and validate `newsletter.toml` under `root`; raise NewsletterError naming the key."""
    path = root / CONFIG_NAME
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NewsletterError(
            Problem(f"no {CONFIG_NAME} here; is this a newsletter project? (use -C DIR)", path)
        ) from None
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        reason = str(exc)[: where.start()].strip() if where else str(exc)
        line = int(where.group(1)) if where else None
        raise NewsletterError(Problem(f"not valid TOML: {reason}", path, line=line)) from None
    except UnicodeDecodeError:
        raise NewsletterError(Problem("not UTF-8 text", path)) from None
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise NewsletterError(validation_problems(exc, path)) from None


def validation_problems(exc: ValidationError, path: Path | str) -> list[Problem]:
    """One Problem per pydantic error, with the dotted key (`feeds.1.url`) as the field."""
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or None
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        problems.append(Problem(message, path, field=field))
    return problems
