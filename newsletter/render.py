"""Selection -> HTML and plain text for one language, through the theme's Jinja templates."""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from newsletter import __version__, personal
from newsletter.config import Config
from newsletter.content import Item
from newsletter.errors import NewsletterError, Problem
from newsletter.i18n import Translator, format_day, format_money, format_time, load_translator
from newsletter.select import Anniversary, CallListing, NewsStory, Selection

HTML_TEMPLATE = "digest.html"
TEXT_TEMPLATE = "digest.txt"
LANGUAGE_NAMES = {"en": "English", "ja": "Japanese"}


@dataclass
class ViewSection:
    id: str
    title: str
    entries: list[Any]
    total: int


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
    env.filters.update({"day": _day, "clock": _clock, "money": _money})
    return env


@jinja2.pass_context
def _day(context: jinja2.runtime.Context, value: Any, style: str = "long") -> str:
    """`{{ call.opens | day }}`: a date, partial date or date-time in the issue's locale."""
    return format_day(value, context["locale"], style)


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
        )
        for s in selection.sections
    ]
    _ = translator.gettext
    locale = config.newsletter.locale(language)
    period_label = format_day(selection.period, locale)
    title = localized(config.newsletter.title, language, config.newsletter.default_language)
    subject = _("%(title)s — %(period)s", title=title, period=period_label)
    context = {
        "config": config,
        "newsletter": config.newsletter,
        "sender": config.sender,
        "footer": config.footer,
        "title": title,
        "tagline": localized(
            config.newsletter.tagline, language, config.newsletter.default_language
        ),
        "reason": localized(config.footer.reason, language, config.newsletter.default_language),
        "lang": language,
        "locale": locale,
        "period": selection.period,
        "period_label": period_label,
        "now": selection.now,
        "subject": subject,
        "preheader": preheader(sections, translator),
        "sections": sections,
        "generator": f"newsletter {__version__}",
        "personal": personal.marker,
    }
    env.install_gettext_callables(translator.gettext, translator.ngettext, newstyle=True)
    html = _render(env, HTML_TEMPLATE, context)
    text = _render(env, TEXT_TEMPLATE, context)
    reported = set(translator.missing)
    for message in sorted(reported):
        warnings.append(Problem(f"no {language!r} translation for theme text {message!r}"))
    neutral = personal.neutral_values(
        website=str(config.newsletter.website),
        archive_url=str(config.newsletter.archive_url) if config.newsletter.archive_url else None,
        period=str(selection.period),
        language=language,
        gettext=translator.gettext,
    )
    for message in sorted(translator.missing - reported):
        warnings.append(Problem(f"no {language!r} translation for theme text {message!r}"))
    return Rendered(
        language, subject, context["preheader"], html, text, sections, neutral, warnings
    )


def section_title(config: Config, section_id: str, translator: Translator) -> str:
    configured = next(s.title for s in config.sections if s.id == section_id)
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
        return dataclasses.replace(entry, item=item, title=item.title, summary_text=item.summary)
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
    except (jinja2.UndefinedError, TypeError, ValueError, AttributeError) as exc:
        path, line = _template_frame(exc)
        raise NewsletterError(Problem(f"template error: {exc}", path, line=line)) from None


def _template_frame(exc: BaseException) -> tuple[str | None, int | None]:
    """The innermost template file and line in the traceback (Jinja rewrites frames to them)."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith((".html", ".txt", ".css", ".j2")):
            return frame.filename, frame.lineno
    return None, None


__all__ = ["Markup", "Rendered", "make_environment", "render_issue"]
