"""Content files -> validated items: one Markdown file with YAML front matter per item.

The folder gives the kind; a sibling `<id>.<lang>.md` translates the text fields. Nothing
downstream knows about files: it sees typed items.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar

import frontmatter
import yaml
from markdown_it import MarkdownIt
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)

from newsletter.config import validation_problems
from newsletter.dates import (
    BRUSSELS,
    DEFAULT_DEADLINE_TIME,
    PartialDate,
    parse_date,
    parse_moment,
)
from newsletter.errors import NewsletterError, Problem

_markdown = MarkdownIt("commonmark", {"html": False, "typographer": True}).enable(
    ["replacements", "smartquotes", "table"]
)
_FILE = re.compile(r"^(?P<id>[a-z0-9][a-z0-9_-]*)(?:\.(?P<lang>[a-z]{2,3}))?\.md$")

Partial = Annotated[PartialDate, BeforeValidator(PartialDate.parse)]
Day = Annotated[date, BeforeValidator(parse_date)]


def _deadline(value: object) -> datetime:
    return parse_moment(value, BRUSSELS, DEFAULT_DEADLINE_TIME)


Deadline = Annotated[datetime, BeforeValidator(_deadline)]


class Item(BaseModel):
    """Fields every kind has. Unknown front-matter keys are kept (`extra`) for templates."""

    model_config = ConfigDict(extra="allow", frozen=True, arbitrary_types_allowed=True)
    kind: ClassVar[str] = "item"
    translatable: ClassVar[tuple[str, ...]] = ("title", "summary")

    id: str
    title: str = Field(min_length=1)
    summary: str = ""
    link: HttpUrl | None = None
    tags: list[str] = []
    featured: bool = False
    body: str = ""
    """Markdown source of the body; `body_html` renders it."""
    language: str = "en"
    source: Path | None = Field(default=None, exclude=True)
    translations: dict[str, dict[str, Any]] = Field(default_factory=dict, exclude=True)

    @field_validator("title", "summary")
    @classmethod
    def _single_line(cls, value: str) -> str:
        return " ".join(value.split())

    @cached_property
    def body_html(self) -> str:
        return _markdown.render(self.body) if self.body.strip() else ""

    @property
    def url(self) -> str | None:
        return str(self.link) if self.link else None

    def localized(self, language: str) -> Item | None:
        """This item in `language`, or None when there is no translation for it."""
        if language == self.language:
            return self
        overrides = self.translations.get(language)
        if overrides is None:
            return None
        return self.model_copy(update={**overrides, "language": language})


class Milestone(Item):
    kind: ClassVar[str] = "milestone"
    date: Partial


class FundingCall(Item):
    kind: ClassVar[str] = "call"
    translatable: ClassVar[tuple[str, ...]] = ("title", "summary", "eligibility")
    call_id: str = ""
    programme: str = Field(min_length=1)
    opens: Day | None = None
    deadline: Deadline
    """Aware datetime; a bare date means 17:00 in Brussels, as Horizon Europe deadlines are."""
    budget_eur: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    eligibility: str = ""

    @model_validator(mode="after")
    def _opens_before_deadline(self) -> FundingCall:
        if self.opens is not None and self.opens > self.deadline.date():
            raise ValueError(
                f"opens ({self.opens}) is after the deadline ({self.deadline:%Y-%m-%d})"
            )
        return self


class Project(Item):
    kind: ClassVar[str] = "project"
    acronym: str = Field(min_length=1)
    start: Partial | None = None
    end: Partial | None = None
    coordinator: str = ""
    partners: list[str] = []


class Event(Item):
    kind: ClassVar[str] = "event"
    translatable: ClassVar[tuple[str, ...]] = ("title", "summary", "location")
    date: Day
    starts_at: datetime | None = None
    """Set when `date` was given as a date-time with an offset (e.g. a webinar)."""
    end_date: Day | None = None
    location: str = ""

    @model_validator(mode="before")
    @classmethod
    def _date_time(cls, data: Any) -> Any:
        value = data.get("date") if isinstance(data, dict) else None
        if isinstance(value, datetime) or (isinstance(value, str) and "T" in value):
            try:
                moment = parse_moment(value, BRUSSELS)
            except ValueError:
                return data  # the `date` validator reports it
            return {**data, "date": moment.date(), "starts_at": moment}
        return data

    @field_validator("end_date")
    @classmethod
    def _not_before_start(cls, value: date | None, info: Any) -> date | None:
        start = info.data.get("date")
        if value is not None and start is not None and value < start:
            raise ValueError("end_date is before date")
        return value


class NewsItem(Item):
    kind: ClassVar[str] = "news"
    date: Day


class Contact(Item):
    kind: ClassVar[str] = "contact"
    translatable: ClassVar[tuple[str, ...]] = ("title", "summary", "organisation")
    organisation: str = ""
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = None
    order: int = 100


KINDS: dict[str, type[Item]] = {
    "milestones": Milestone,
    "calls": FundingCall,
    "projects": Project,
    "events": Event,
    "news": NewsItem,
    "contacts": Contact,
}
"""Folder under `content/` -> the model of the items it holds."""


@dataclass
class ContentSet:
    """Every item of a project, by kind, plus the warnings met while loading."""

    milestones: list[Milestone] = field(default_factory=list)
    calls: list[FundingCall] = field(default_factory=list)
    projects: list[Project] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    news: list[NewsItem] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def all(self) -> list[Item]:
        return [
            *self.milestones,
            *self.calls,
            *self.projects,
            *self.events,
            *self.news,
            *self.contacts,
        ]


def load_content(content_dir: Path, languages: list[str], default_language: str) -> ContentSet:
    """Load and validate every item; raise NewsletterError listing every problem found."""
    content = ContentSet()
    problems: list[Problem] = []
    if not content_dir.is_dir():
        raise NewsletterError(Problem("content folder is missing", content_dir))
    for folder, model in KINDS.items():
        directory = content_dir / folder
        if not directory.is_dir():
            continue
        originals: dict[str, Path] = {}
        translations: dict[str, dict[str, Path]] = {}
        for path in sorted(directory.glob("*.md")):
            match = _FILE.match(path.name)
            if not match:
                problems.append(
                    Problem(
                        "file name must be lower-case letters, digits, '-' or '_', then "
                        "'.md' or '.<lang>.md'",
                        path,
                    )
                )
                continue
            item_id, language = match["id"], match["lang"]
            if language is None or language == default_language:
                if item_id in originals:
                    problems.append(Problem(f"duplicate item id {item_id!r}", path))
                    continue
                originals[item_id] = path
            elif language not in languages:
                content.warnings.append(
                    Problem(
                        f"translation into {language!r}, which is not in newsletter.languages; "
                        "ignored",
                        path,
                    )
                )
            else:
                translations.setdefault(item_id, {})[language] = path
        items = getattr(content, folder)
        for item_id, path in originals.items():
            try:
                items.append(
                    _cached_item(
                        model, item_id, path, default_language, translations.pop(item_id, {})
                    )
                )
            except NewsletterError as exc:
                problems.extend(exc.problems)
        for item_id, by_language in translations.items():
            for path in by_language.values():
                problems.append(
                    Problem(f"translation of {item_id!r}, but {item_id}.md is missing", path)
                )
    for path in sorted(content_dir.glob("*.md")):
        if path.name.lower() != "readme.md":
            content.warnings.append(
                Problem(
                    "Markdown file outside a kind folder (milestones, calls, projects, events, "
                    "news, contacts); ignored",
                    path,
                )
            )
    if problems:
        raise NewsletterError(problems)
    return content


def _read(path: Path) -> tuple[dict[str, Any], str, str]:
    """Front matter, body and raw text of one file; YAML errors name the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise NewsletterError(Problem("not UTF-8 text", path)) from None
    except OSError as exc:
        raise NewsletterError(Problem(f"cannot read: {exc.strerror or exc}", path)) from None
    if not text.lstrip().startswith("---"):
        raise NewsletterError(
            Problem("missing YAML front matter (start the file with ---)", path, line=1)
        )
    try:
        post = frontmatter.loads(text)  # libyaml's CSafeLoader when present
    except yaml.MarkedYAMLError as exc:
        mark = exc.context_mark or exc.problem_mark  # where the broken construct starts
        line = mark.line + 2 if mark else None  # +1 for 1-based, +1 for the opening ---
        reason = exc.problem or str(exc)
        raise NewsletterError(
            Problem(f"invalid YAML front matter: {reason}", path, line=line)
        ) from None
    except yaml.YAMLError as exc:
        raise NewsletterError(Problem(f"invalid YAML front matter: {exc}", path)) from None
    except (ValueError, OverflowError) as exc:
        # YAML reads an unquoted 2027-02-30 as a date, and fails on it.
        raise NewsletterError(Problem(f"invalid value in front matter: {exc}", path)) from None
    if not isinstance(post.metadata, dict):
        raise NewsletterError(Problem("front matter must be a mapping of fields", path, line=2))
    return dict(post.metadata), post.content, text


def _line_of(text: str, key: str) -> int | None:
    """Line of `key:` in the front matter, so errors point where the user must look."""
    front = text.split("\n---", 1)[0] if text.startswith("---") else ""
    pattern = re.compile(rf"^{re.escape(key)}\s*:", re.MULTILINE)
    match = pattern.search(front, 3)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _validate(model: type[Item], data: dict[str, Any], path: Path, text: str) -> Item:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, path)
        located = []
        for problem in problems:
            key = (problem.field or "").split(".")[0]
            message = problem.message
            if message == "Field required":
                message = f"required field is missing (a {model.kind} needs `{key}`)"
            located.append(
                Problem(
                    message, path, line=_line_of(text, key) if key else None, field=problem.field
                )
            )
        raise NewsletterError(located) from None


def _cached_item(
    model: type[Item], item_id: str, path: Path, language: str, translation_paths: dict[str, Path]
) -> Item:
    try:
        stats = [_stat_key(path), *(_stat_key(p) for _lang, p in sorted(translation_paths.items()))]
    except OSError:
        return _load_item(model, item_id, path, language, translation_paths)  # reports it
    key = (model, language, *stats)
    item = _parsed.get(key)
    if item is None:
        if len(_parsed) > 20_000:
            _parsed.clear()
        item = _parsed[key] = _load_item(model, item_id, path, language, translation_paths)
    return item


_parsed: dict[tuple[Any, ...], Item] = {}
"""Items already parsed in this process, by file identity: a long-running watcher or preview
re-reads only the files that changed."""


def _stat_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


def _load_item(
    model: type[Item], item_id: str, path: Path, language: str, translation_paths: dict[str, Path]
) -> Item:
    metadata, body, text = _read(path)
    for reserved in ("id", "body", "language", "source", "translations"):
        if reserved in metadata:
            raise NewsletterError(
                Problem(
                    "reserved field name; rename it",
                    path,
                    line=_line_of(text, reserved),
                    field=reserved,
                )
            )
    item = _validate(
        model,
        {**metadata, "id": item_id, "body": body, "language": language, "source": path},
        path,
        text,
    )
    translations: dict[str, dict[str, Any]] = {}
    for lang, tpath in sorted(translation_paths.items()):
        tmeta, tbody, ttext = _read(tpath)
        unknown = sorted(set(tmeta) - set(model.translatable))
        if unknown:
            raise NewsletterError(
                Problem(
                    f"a translation may only set {', '.join(model.translatable)}",
                    tpath,
                    line=_line_of(ttext, unknown[0]),
                    field=unknown[0],
                )
            )
        overrides = {**tmeta, "body": tbody if tbody.strip() else item.body}
        # Validate the merged item so a bad translated field is reported against its own file.
        merged = {**metadata, **overrides, "id": item_id, "language": lang, "source": tpath}
        _validate(model, merged, tpath, ttext)
        translations[lang] = {
            k: " ".join(str(v).split()) if k != "body" else v for k, v in overrides.items()
        }
    return item.model_copy(update={"translations": translations})
