"""The library API of `newsletter build` and `newsletter check`: the pipeline, end to end.

load -> ingest -> select -> render -> inline -> outbox. Each stage lives in its own module; this
one only passes results along and gathers warnings.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import jinja2

from newsletter import __version__
from newsletter.config import Config, load_config
from newsletter.content import ContentSet, Item, load_content
from newsletter.dates import Period
from newsletter.errors import NewsletterError, Problem
from newsletter.feeds import FeedEntry, FeedsResult, ingest_feeds
from newsletter.inline import inline_css
from newsletter.outbox import (
    CLIP_LIMIT_BYTES,
    FILES,
    IssueFiles,
    compose_message,
    read_manifest,
    sent_at,
    write_issue,
)
from newsletter.personal import FIELDS as PERSONAL_FIELDS
from newsletter.personal import fill
from newsletter.project import Project
from newsletter.render import (
    Rendered,
    localized,
    make_environment,
    render_alert,
    render_issue,
)
from newsletter.select import NewsStory, calls_as_of, items_of, select_issue
from newsletter.state import NewsRecord


class IssueSent(NewsletterError):
    """The issue has gone out to subscribers: rebuilding it would change what they got."""


@dataclass
class LanguageIssue:
    """What `build` wrote (or found unchanged) for one language."""

    language: str
    directory: Path
    subject: str
    size_bytes: int
    section_counts: dict[str, int]
    warnings: list[Problem]
    unchanged: bool = False


@dataclass
class BuildResult:
    period: Period
    issues: list[LanguageIssue]
    warnings: list[Problem]
    """Project-wide warnings (feeds, content); per-language ones are on each issue."""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Inputs:
    """Loaded and ingested inputs: everything select needs."""

    config: Config
    content: ContentSet
    feeds: FeedsResult


def load_inputs(
    project: Project, *, offline: bool = False, timings: dict[str, float] | None = None
) -> Inputs:
    timings = {} if timings is None else timings
    started = time.perf_counter()
    config = load_config(project.root)
    content = load_content(
        project.content_dir, config.newsletter.languages, config.newsletter.default_language
    )
    timings["load"] = time.perf_counter() - started
    started = time.perf_counter()
    feeds = ingest_feeds(
        config.feeds,
        project.root,
        project.cache_dir,
        offline=offline,
        user_agent=f"newsletter/{__version__}",
    )
    timings["ingest"] = time.perf_counter() - started
    return Inputs(config, content, feeds)


def build(
    project: Project,
    *,
    period: Period | None = None,
    languages: Sequence[str] = (),
    now: datetime | None = None,
    offline: bool = False,
    write: bool = True,
    force: bool = False,
) -> BuildResult:
    """Build one period's issue in each language into `outbox/<period>/<lang>/`.

    Raises NewsletterError for bad input; problems that do not stop a build are warnings.
    """
    timings: dict[str, float] = {}
    inputs = load_inputs(project, offline=offline, timings=timings)
    config = inputs.config
    now = now or datetime.now(config.tz)
    period = period or Period.of(now.astimezone(config.tz))
    went_out = sent_at(project.outbox_dir / str(period))
    if write and went_out and not force:
        raise IssueSent(
            Problem(
                f"{period} was sent on {went_out}; its outbox stays as subscribers got it "
                "(build --force rebuilds it anyway)",
                project.outbox_dir / str(period),
            )
        )
    languages = list(languages) or list(config.newsletter.languages)
    unknown = [lang for lang in languages if lang not in config.newsletter.languages]
    if unknown:
        raise NewsletterError(
            Problem(
                f"language {unknown[0]!r} is not in newsletter.languages "
                f"({', '.join(config.newsletter.languages)})",
                project.config_path,
            )
        )

    started = time.perf_counter()
    record = NewsRecord(project.state_db)
    selection = select_issue(
        config,
        inputs.content,
        inputs.feeds.entries,
        period,
        now,
        already_sent=record.sent_before(period),
    )
    timings["select"] = time.perf_counter() - started

    project_warnings = [*inputs.content.warnings, *inputs.feeds.warnings, *selection.warnings]
    env = make_environment(project.template_dirs())
    locale_dirs = [d / "locales" for d in project.template_dirs()]
    started = time.perf_counter()
    renders = [render_issue(config, selection, lang, env, locale_dirs) for lang in languages]
    timings["render"] = time.perf_counter() - started
    issues = publish(
        project, config, renders, str(period), now, project_warnings, write=write, timings=timings
    )
    started = time.perf_counter()
    if write:
        record.record(period, selection.news_keys)
    timings["outbox"] = time.perf_counter() - started
    return BuildResult(period, issues, project_warnings, timings)


def build_alert(
    project: Project,
    *,
    call_ids: Sequence[str],
    lead_days: int,
    day: date,
    now: datetime,
    write: bool = True,
) -> tuple[str, list[LanguageIssue]] | None:
    """Build a deadline alert listing the given calls, in every language, into
    `outbox/alert-<day>-<lead>d/<lang>/`. None when every call has closed in the meantime."""
    config = load_config(project.root)
    content = load_content(
        project.content_dir, config.newsletter.languages, config.newsletter.default_language
    )
    wanted = [call for call in content.calls if call.id in set(call_ids)]
    rules = config.selection
    listings = [
        listing
        for listing in calls_as_of(
            wanted, now, rules.calls_opening_within_days, rules.closing_soon_days
        )
        if listing.status == "open"
    ]
    if not listings:
        return None
    issue_id = f"alert-{day}-{lead_days}d"
    env = make_environment(project.template_dirs())
    locale_dirs = [d / "locales" for d in project.template_dirs()]
    renders = [
        render_alert(
            config,
            listings,
            lead_days=lead_days,
            issue_id=issue_id,
            day=day,
            now=now,
            language=language,
            env=env,
            locale_dirs=locale_dirs,
        )
        for language in config.newsletter.languages
    ]
    issues = publish(
        project,
        config,
        renders,
        issue_id,
        now,
        list(content.warnings),
        write=write,
        edition="alert",
    )
    return issue_id, issues


def publish(
    project: Project,
    config: Config,
    renders: list[Rendered],
    issue_id: str,
    now: datetime,
    project_warnings: list[Problem],
    *,
    write: bool = True,
    timings: dict[str, float] | None = None,
    edition: str = "digest",
) -> list[LanguageIssue]:
    """Inline, compose and write each language's render to `outbox/<issue_id>/<lang>/`.

    An issue whose fingerprint matches the manifest on disk is left as it is (no inlining).
    """
    timings = {} if timings is None else timings
    timings["inline"] = 0.0
    prepared = []
    for rendered in renders:
        directory = project.outbox_dir / issue_id / rendered.language
        warnings = project_warnings + rendered.warnings
        fingerprint = _fingerprint(rendered, now, warnings)
        previous = read_manifest(directory)
        if previous and previous.get("fingerprint") == fingerprint and _complete(directory):
            prepared.append((rendered, directory, None, previous["size_bytes"]))
            continue
        started = time.perf_counter()
        personal_html = inline_css(rendered.html, str(config.newsletter.website))
        timings["inline"] += time.perf_counter() - started
        files = _issue_files(
            config, issue_id, edition, rendered, personal_html, now, fingerprint, warnings
        )
        prepared.append((rendered, directory, files, files.manifest["size_bytes"]))
    issues = []
    for rendered, directory, files, size in prepared:
        if write and files is not None:
            try:
                write_issue(directory, files)
            except OSError as exc:
                raise NewsletterError(
                    Problem(
                        f"cannot write the issue: {exc.strerror or exc}", exc.filename or directory
                    )
                ) from None
        counts = {s.id: len(s.entries) for s in rendered.sections}
        issues.append(
            LanguageIssue(
                rendered.language,
                directory,
                rendered.subject,
                size,
                counts,
                rendered.warnings + _size_warnings(size),
                unchanged=files is None,
            )
        )
    return issues


def check(project: Project, *, now: datetime | None = None) -> list[Problem]:
    """Validate config, content and templates without writing; return every problem found."""
    try:
        build(project, now=now, offline=True, write=False)
    except NewsletterError as exc:
        return exc.problems
    problems = []
    env = make_environment(project.template_dirs())
    for name in env.list_templates(extensions=["html", "txt"]):
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(
                Problem(
                    f"template syntax error: {exc.message}", exc.filename or name, line=exc.lineno
                )
            )
    return problems


def _fingerprint(rendered: Rendered, now: datetime, warnings: list[Problem]) -> str:
    """What the files depend on: unchanged fingerprint, unchanged files (inlining skipped)."""
    parts = (
        rendered.subject,
        rendered.html,
        rendered.text,
        now.isoformat(),
        __version__,
        *map(str, warnings),
    )
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in FILES)


def _issue_files(
    config: Config,
    issue_id: str,
    edition: str,
    rendered: Rendered,
    personal_html: str,
    now: datetime,
    fingerprint: str,
    warnings: list[Problem],
) -> IssueFiles:
    html = fill(personal_html, rendered.neutral, html_escape=True)
    text = fill(rendered.text, rendered.neutral, html_escape=False)
    identity = config.newsletter
    title = localized(identity.title, rendered.language, identity.default_language)
    list_id = identity.list_id or f"digest.{config.sender.email.rpartition('@')[2]}"
    message = compose_message(
        subject=rendered.subject,
        sender_name=config.sender.name,
        sender_email=config.sender.email,
        reply_to=config.sender.reply_to,
        list_id=list_id,
        list_name=title,
        html=html,
        text=text,
        when=now,
        language=rendered.language,
    )
    size = len(html.encode())
    manifest = {
        "period": issue_id,
        "edition": edition,
        "language": rendered.language,
        "subject": rendered.subject,
        "preheader": rendered.preheader,
        "generated_for": now.isoformat(),
        "generator": f"newsletter {__version__}",
        "size_bytes": size,
        "size_limit_bytes": CLIP_LIMIT_BYTES,
        "sections": {s.id: len(s.entries) for s in rendered.sections},
        "items": [_manifest_item(s, entry) for s, entry in items_of(rendered.sections)],
        "personal_fields": list(PERSONAL_FIELDS),
        "warnings": [str(w) for w in warnings + _size_warnings(size)],
        "fingerprint": fingerprint,
        "message_id_note": "message.eml's Message-ID is derived from its content; "
        "send gives each recipient a new one",
    }
    return IssueFiles(html, text, message, manifest, personal_html, rendered.text)


def _manifest_item(section: str, entry: Item | FeedEntry | NewsStory) -> dict[str, str | None]:
    if isinstance(entry, Item):
        return {
            "id": entry.id,
            "kind": entry.kind,
            "title": entry.title,
            "section": section,
            "link": entry.url,
        }
    return {  # a story from a feed
        "id": entry.key,
        "kind": "feed_entry",
        "title": entry.title,
        "section": section,
        "link": entry.link,
        "source": entry.source,
    }


def _size_warnings(size: int) -> list[Problem]:
    if size > CLIP_LIMIT_BYTES:
        return [
            Problem(
                f"HTML is {size / 1024:.1f} KB, over Gmail's 102 KB clipping limit; "
                "lower the section limits"
            )
        ]
    return []
