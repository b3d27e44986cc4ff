"""Selection -> HTML and plain text for one language, through the theme's Jinja templates."""

from __future__ import annotations

import dataclasses
import traceback
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jinja2

from newsletter import __version__, personal
from newsletter.config import Config
from newsletter.content import Item
from newsletter.errors import NewsletterError, Problem
from newsletter.i18n import Translator, format_day, format_money, format_time, load_translator
from newsletter.select import Anniversary, CallListing, NewsStory, Selection

HTML_TEMPLATE = "digest.html"
TEXT_TEMPLATE = "digest.txt"
ALERT_HTML_TEMPLATE = "alert.html"
ALERT_TEXT_TEMPLATE = "alert.txt"
LANGUAGE_NAMES = {"en": "English", "ja": "Japanese"}


@dataclass
class ViewSection:
    id: str
    title: str
    entries: list[Any]
    total: int
    more_url: str | None = None
    """Where the entries past the section's limit can be read (`[[sections]] more_url`)."""


@dataclass
class Rendered:
    """One language's issue before CSS inlining."""

    language: str
    subject: str
    preheader: str
    html: str
    """With `personal` markers; see newsletter.personal."""
    text: str
    sections: list[ViewSection]
    neutral: dict[str, str]
    """Values that stand in for the personal parts in the archive copy."""
    warnings: list[Problem] = field(default_factory=list)


def make_environment(template_dirs: list[Path]) -> jinja2.Environment:
    """Autoescaping for HTML, strict undefined so a typo'd placeholder fails the build."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in template_dirs]),
        autoescape=jinja2.select_autoescape(["html", "htm", "xml"]),
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update({"day": _day, "clock": _clock, "money": _money, "underline": _underline})
    return env


@jinja2.pass_context
def _day(context: jinja2.runtime.Context, value: Any, style: str = "long") -> str:
    """`{{ call.opens | day }}`: a date, partial date or date-time in the issue's locale."""
    return format_day(value, context["locale"], style)


def _underline(text: str, character: str = "=") -> str:
    """A rule as wide as `text` in a monospaced font: CJK characters take two columns."""
    width = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return character * width


@jinja2.pass_context
def _clock(context: jinja2.runtime.Context, value: Any) -> str:
    return format_time(value, context["locale"])


@jinja2.pass_context
def _money(context: jinja2.runtime.Context, value: float) -> str:
    return format_money(value, context["locale"])


def render_issue(
    config: Config,
    selection: Selection,
    language: str,
    env: jinja2.Environment,
    locale_dirs: list[Path],
) -> Rendered:
    """Render the HTML and text of `selection` in `language`."""
    translator = load_translator(language, config.newsletter.default_language, locale_dirs)
    warnings: list[Problem] = []
    sections = [
        ViewSection(
            s.id,
            section_title(config, s.id, translator),
            [_localize(e, language, warnings) for e in s.entries],
            s.total,
            more_url(config, s.id),
        )
        for s in selection.sections
    ]
    locale = config.newsletter.locale(language)
    label = format_day(selection.period, locale)
    title = localized(config.newsletter.title, language, config.newsletter.default_language)
    subject = translator.gettext("%(title)s — %(period)s", title=title, period=label)
    return _render_edition(
        config,
        translator,
        env,
        sections,
        warnings,
        issue_id=str(selection.period),
        label=label,
        subject=subject,
        now=selection.now,
        templates=(HTML_TEMPLATE, TEXT_TEMPLATE),
        extra={"period": selection.period},
    )


def render_alert(
    config: Config,
    listings: list[CallListing],
    *,
    lead_days: int,
    issue_id: str,
    day: date,
    now: datetime,
    language: str,
    env: jinja2.Environment,
    locale_dirs: list[Path],
) -> Rendered:
    """A short deadline-alert edition: the calls whose deadline is `lead_days` away."""
    translator = load_translator(language, config.newsletter.default_language, locale_dirs)
    warnings: list[Problem] = []
    calls = [_localize(listing, language, warnings) for listing in listings]
    sections = [ViewSection("calls", section_title(config, "calls", translator), calls, len(calls))]
    locale = config.newsletter.locale(language)
    title = localized(config.newsletter.title, language, config.newsletter.default_language)
    subject = translator.gettext(
        "Closes in %(days)d days: %(title)s", days=lead_days, title=calls[0].call.title
    )
    if len(calls) > 1:
        subject += f" (+{len(calls) - 1})"
    return _render_edition(
        config,
        translator,
        env,
        sections,
        warnings,
        issue_id=issue_id,
        label=f"{translator.gettext('Deadline alert')} · {format_day(day, locale)}",
        subject=subject,
        now=now,
        templates=(ALERT_HTML_TEMPLATE, ALERT_TEXT_TEMPLATE),
        extra={"period": issue_id, "lead_days": lead_days, "newsletter_title": title},
    )


def _render_edition(
    config: Config,
    translator: Translator,
    env: jinja2.Environment,
    sections: list[ViewSection],
    warnings: list[Problem],
    *,
    issue_id: str,
    label: str,
    subject: str,
    now: datetime,
    templates: tuple[str, str],
    extra: dict[str, Any],
) -> Rendered:
    language = translator.language
    default = config.newsletter.default_language
    context = {
        "config": config,
        "newsletter": config.newsletter,
        "sender": config.sender,
        "footer": config.footer,
        "title": localized(config.newsletter.title, language, default),
        "tagline": localized(config.newsletter.tagline, language, default),
        "intro": localized(config.newsletter.intro, language, default),
        "reason": localized(config.footer.reason, language, default),
        "lang": language,
        "locale": config.newsletter.locale(language),
        "period_label": label,
        "now": now,
        "subject": subject,
        "preheader": preheader(sections, translator),
        "sections": sections,
        "generator": f"newsletter {__version__}",
        "personal": personal.marker,
        **extra,
    }
    translator.install(env)
    html = _render(env, templates[0], context)
    text = _render(env, templates[1], context)
    neutral = personal.neutral_values(
        website=str(config.newsletter.website),
        archive_url=str(config.newsletter.archive_url) if config.newsletter.archive_url else None,
        period=issue_id,
        language=language,
        gettext=translator.gettext,
    )
    for message in sorted(translator.missing):
        warnings.append(Problem(f"no {language!r} translation for theme text {message!r}"))
    return Rendered(
        language, subject, context["preheader"], html, text, sections, neutral, warnings
    )


def more_url(config: Config, section_id: str) -> str:
    section = next((s for s in config.sections if s.id == section_id), None)
    return str(section.more_url if section and section.more_url else config.newsletter.website)


def section_title(config: Config, section_id: str, translator: Translator) -> str:
    configured = next((s.title for s in config.sections if s.id == section_id), None)
    if configured:
        return localized(configured, translator.language, config.newsletter.default_language)
    return translator.gettext(DEFAULT_TITLES[section_id])


DEFAULT_TITLES = {
    "milestones": "Cooperation milestones",
    "history": "This month in cooperation history",
    "calls": "Funding calls",
    "projects": "Featured projects",
    "news": "News",
    "events": "Upcoming events",
    "contacts": "Contacts",
}


def localized(value: str | dict[str, str], language: str, default_language: str) -> str:
    """A config text given once, or per language with the default language as fallback."""
    if isinstance(value, str):
        return value
    return value.get(language) or value.get(default_language) or next(iter(value.values()), "")


def preheader(sections: list[ViewSection], translator: Translator) -> str:
    """The inbox preview line: what is inside, most urgent first."""
    counts = {s.id: len(s.entries) for s in sections}
    parts = []
    calls = next((s for s in sections if s.id == "calls"), None)
    if calls:
        soon = sum(1 for c in calls.entries if c.closing_soon)
        if soon:
            parts.append(
                translator.ngettext("%(num)d call closing soon", "%(num)d calls closing soon", soon)
            )
        open_count = sum(1 for c in calls.entries if c.status == "open")
        parts.append(translator.ngettext("%(num)d open call", "%(num)d open calls", open_count))
    if counts.get("news"):
        parts.append(
            translator.ngettext("%(num)d news story", "%(num)d news stories", counts["news"])
        )
    if counts.get("events"):
        parts.append(
            translator.ngettext(
                "%(num)d upcoming event", "%(num)d upcoming events", counts["events"]
            )
        )
    return " · ".join(parts)


def _localize(entry: Any, language: str, warnings: list[Problem]) -> Any:
    def item_in(item: Item) -> Item:
        found = item.localized(language)
        if found is None:
            warnings.append(
                Problem(f"no {language!r} translation; using {item.language!r}", item.source)
            )
            return item
        return found

    if isinstance(entry, CallListing):
        return dataclasses.replace(entry, call=item_in(entry.call))
    if isinstance(entry, Anniversary):
        return dataclasses.replace(entry, milestone=item_in(entry.milestone))
    if isinstance(entry, NewsStory):
        if entry.item is None:
            return entry
        item = item_in(entry.item)
        return dataclasses.replace(entry, item=item, title=item.title, text=item.summary)
    if isinstance(entry, Item):
        return item_in(entry)
    return entry


def _render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise NewsletterError(
            Problem(
                f"template syntax error: {exc.message}", exc.filename or exc.name, line=exc.lineno
            )
        ) from None
    except jinja2.TemplateNotFound as exc:
        raise NewsletterError(Problem(f"template not found: {exc.name}")) from None
    except OSError as exc:
        raise NewsletterError(
            Problem(f"cannot read template: {exc.strerror or exc}", exc.filename)
        ) from None
    except NewsletterError:
        raise
    except Exception as exc:  # whatever a template expression raises is the template's error
        path, line = _template_frame(exc)
        raise NewsletterError(Problem(f"template error: {exc}", path, line=line)) from None


def _template_frame(exc: BaseException) -> tuple[str | None, int | None]:
    """The innermost template file and line in the traceback (Jinja rewrites frames to them)."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith((".html", ".txt", ".css", ".j2")):
            return frame.filename, frame.lineno
    return None, None


__all__ = ["Rendered", "make_environment", "render_alert", "render_issue"]
