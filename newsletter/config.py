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


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
"""An RFC 5322 atom: what a List-Id's dot-separated parts may hold."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Localized = str | dict[LanguageCode, str]
"""A text given once, or once per language (`title = { en = "...", ja = "..." }`)."""


class Identity(_Strict):
    title: Localized
    tagline: Localized = ""
    intro: Localized = ""
    """The sentence under the greeting that opens each digest."""
    website: HttpUrl
    """Base for every relative link; email clients cannot resolve relative URLs."""
    archive_url: HttpUrl | None = None
    list_id: str = Field(
        default="",
        pattern=r"^([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+)?$",
    )
    """RFC 2919 List-Id, e.g. `digest.example.org`; default `digest.<sender's domain>`."""
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

    @field_validator("title", "tagline", "intro")
    @classmethod
    def _single_line(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        """The title goes into the Subject and List-Id headers: no line breaks, ever."""
        texts = value.values() if isinstance(value, dict) else [value]
        if any("\r" in text or "\n" in text for text in texts):
            raise ValueError("must be a single line")
        return value

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
    more_url: HttpUrl | None = None
    """Where readers find the entries the limit left out; default the website."""


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


class SmtpSettings(_Strict):
    """`[smtp]`: where `newsletter send` hands messages over. The password is never here: it
    comes from NEWSLETTER_SMTP_PASSWORD only (see newsletter.send.smtp_settings)."""

    host: str = "localhost"
    port: int | None = Field(default=None, ge=1, le=65535)
    """Default by `security`: 25 for none, 587 for starttls, 465 for ssl."""
    security: Literal["none", "starttls", "ssl"] = "none"
    user: str | None = None
    timeout: float = Field(default=30.0, gt=0, le=600)


class Mailing(_Strict):
    """`[mailing]`: delivery policy of `newsletter send` and the links of `newsletter serve`."""

    unsubscribe_url: HttpUrl | None = None
    """Where `newsletter serve` answers unsubscribe links; default `<website>unsubscribe/`."""
    unsubscribe_mailto: str | None = Field(
        default=None, pattern=r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$"
    )
    """Mailbox of the `mailto:` List-Unsubscribe; default the sender's reply-to or address."""
    return_path: str | None = Field(default=None, pattern=r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")
    """Envelope sender (MAIL FROM, where bounces go); default the sender's address."""
    connections: int = Field(default=1, ge=1, le=32)
    rate: float | None = Field(default=None, gt=0)
    """Messages per second over all connections; none: as fast as the server takes them."""
    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_delay: float = Field(default=2.0, ge=0, le=600)
    """Seconds before the first retry of a temporary failure; doubles with each attempt."""


ACTIONS = ("digest", "alert", "draft")
"""What a rule can do: build (and send) a period's digest, a deadline alert, or the draft."""


class WatchSettings(_Strict):
    """`[watch]`: how `newsletter watch` notices events and retries actions."""

    auto_send: bool = False
    """Send digests and alerts by default; a rule's own `send` overrides it."""
    deadline_leads: list[Annotated[int, Field(ge=0, le=365)]] = [14, 3]
    """Days before a call's deadline at which `call.deadline_approaching` fires."""
    feed_interval_minutes: float = Field(default=30, gt=0)
    tick_seconds: float = Field(default=60, gt=0)
    """How often the long-lived watcher looks at the clock and the feeds."""
    max_attempts: int = Field(default=5, ge=1, le=100)
    retry_minutes: float = Field(default=5, gt=0)
    """Back-off before the first retry of a failed action; doubles with each attempt."""


class Rule(_Strict):
    """`[[rules]]`: on these event kinds, do this action."""

    on: list[str]
    do: Literal[ACTIONS]  # type: ignore[valid-type]
    send: bool | None = None
    """Send what was built; default `watch.auto_send`. Ignored for `draft`."""
    lead_days: list[int] = []
    """For `call.deadline_approaching`: only these leads (default: every lead)."""

    @field_validator("on", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("on")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        from newsletter.events import KINDS

        for kind in value:
            if kind not in KINDS:
                raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(KINDS)}")
        return value


def default_rules() -> list[Rule]:
    """Without `[[rules]]`: digest at month end, an alert at each deadline lead, live draft."""
    return [
        Rule(on=["period.closed"], do="digest"),
        Rule(on=["call.deadline_approaching"], do="alert"),
        Rule(
            on=["content.added", "content.changed", "content.removed", "feed.entry_new"], do="draft"
        ),
    ]


class Config(_Strict):
    newsletter: Identity
    sender: Sender
    footer: Footer
    selection: SelectionRules = SelectionRules()
    sections: list[Section] = Field(default_factory=lambda: [Section(id=s) for s in SECTION_IDS])
    feeds: list[Feed] = []
    smtp: SmtpSettings = SmtpSettings()
    mailing: Mailing = Mailing()
    watch: WatchSettings = WatchSettings()
    rules: list[Rule] = Field(default_factory=default_rules)

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
    except OSError as exc:
        raise NewsletterError(Problem(f"cannot read: {exc.strerror or exc}", path)) from None
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
