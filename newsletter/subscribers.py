"""The mailing list: subscribers in SQLite, with their status, imported from and exported to CSV.

An address is never deleted by `remove` or an unsubscribe: it stays on the list as
`unsubscribed` (or `bounced`) so that no later import can mail it again. Only `add --resubscribe`
brings it back. Addresses are validated (syntax only, no DNS) and normalised; two spellings that
differ only in letter case are one subscriber, the first spelling kept.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import email_validator

from newsletter.errors import NewsletterError, Problem

STATUSES = ("subscribed", "unsubscribed", "bounced")
DB_NAME = "mailing.sqlite3"
"""Subscribers and the delivery ledger share one file in the project's state directory."""

CSV_COLUMNS = ("email", "name", "language", "status", "status_changed", "status_reason")
"""The columns `export` writes first (attributes follow) and `import` reads by name."""

_ALIASES = {"e-mail": "email", "email address": "email", "mail": "email", "lang": "language"}
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PAGE = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscribers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name TEXT NOT NULL DEFAULT '',
    language TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'subscribed'
        CHECK (status IN ('subscribed', 'unsubscribed', 'bounced')),
    status_changed TEXT NOT NULL,
    status_reason TEXT NOT NULL DEFAULT '',
    attributes TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS subscribers_status ON subscribers (status, id);
"""


class InvalidAddress(ValueError):
    """An email address that fails validation; the message says why, for the user."""


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str
    language: str
    """A language code, or "" for the newsletter's default language."""
    status: str
    status_changed: str
    status_reason: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class ImportReport:
    """What an import did; `problems` are the skipped rows, each with its line number."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_unsubscribed: int = 0
    """Rows for addresses that are unsubscribed or bounced: left so, never resubscribed."""
    merged: int = 0
    """Rows that repeat an address given earlier in the same file."""
    problems: list[Problem] = field(default_factory=list)


def now_stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def normalise_email(text: str) -> str:
    """Validated, normalised address (domain lower-cased, IDN domains in ASCII form).

    Syntax only; no DNS look-up. Non-ASCII mailbox names are refused: they need SMTPUTF8,
    which many relays do not offer.
    """
    candidate = text.strip()
    if _CONTROL.search(candidate):
        raise InvalidAddress("contains a control character or line break")
    try:
        result = email_validator.validate_email(
            candidate, check_deliverability=False, allow_smtputf8=False
        )
    except email_validator.EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None
    return result.ascii_email or result.normalized


def clean_name(text: str | None) -> str:
    """One line of text: control characters and line breaks become spaces, runs collapse."""
    return " ".join(_CONTROL.sub(" ", text or "").split())


def clean_language(text: str | None) -> str:
    """A language code in its usual case (`EN` → `en`, `pt_br` → `pt-BR`); ValueError for
    anything that is not one."""
    value = (text or "").strip().replace("_", "-")
    if not value:
        return ""
    primary, _, region = value.partition("-")
    value = primary.lower()
    if region:
        value += "-" + (region.upper() if len(region) == 2 else region)
    if not _LANGUAGE.match(value):
        raise ValueError(f"language {text!r} is not a language code such as en or ja")
    return value


def effective_language(language: str, languages: list[str], default: str) -> str:
    """The issue language a subscriber reads: theirs if built, its primary subtag, else default."""
    if language in languages:
        return language
    primary = language.partition("-")[0].lower()
    return primary if primary in languages else default


def connect(path: Path) -> sqlite3.Connection:
    """The mailing database (WAL: the web app, a send and the CLI may use it at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


def _row(row: tuple[Any, ...]) -> Subscriber:
    return Subscriber(*row[:7], attributes=json.loads(row[7]))


_COLUMNS = "id, email, name, language, status, status_changed, status_reason, attributes"


class MailingList:
    """The subscribers of one project. Every method commits its own changes."""

    def __init__(self, path: Path):
        self.path = path
        self.db = connect(path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> MailingList:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # reading

    def get(self, email: str) -> Subscriber | None:
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM subscribers WHERE email = ?", (email.strip(),)
        ).fetchone()
        return _row(row) if row else None

    def subscribers(self, status: str | None = None) -> Iterator[Subscriber]:
        """Every subscriber (or those with `status`) by id, read a page at a time."""
        after = 0
        where = "AND status = ?" if status else ""
        while True:
            args: tuple[Any, ...] = (after, status, _PAGE) if status else (after, _PAGE)
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM subscribers WHERE id > ? {where} ORDER BY id LIMIT ?",
                args,
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _row(row)
            after = rows[-1][0]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for status, count in self.db.execute(
            "SELECT status, count(*) FROM subscribers GROUP BY status"
        ):
            counts[status] = count
        return counts

    # changing one subscriber

    def add(
        self,
        email: str,
        *,
        name: str | None = None,
        language: str | None = None,
        resubscribe: bool = False,
    ) -> tuple[Subscriber, str]:
        """Add or update one subscriber; returns it and what happened (added, updated, ...).

        An unsubscribed or bounced address is refused unless `resubscribe` is given.
        """
        address = _checked(email)
        try:
            lang = clean_language(language)
        except ValueError as exc:
            raise NewsletterError(Problem(str(exc), field="--lang")) from None
        stamp = now_stamp()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            existing = self.get(address)
            if existing is None:
                self.db.execute(
                    "INSERT INTO subscribers (email, name, language, status, status_changed, "
                    "status_reason, created) VALUES (?, ?, ?, 'subscribed', ?, 'added', ?)",
                    (address, clean_name(name), lang, stamp, stamp),
                )
                outcome = "added"
            else:
                if existing.status != "subscribed" and not resubscribe:
                    raise NewsletterError(
                        Problem(
                            f"{existing.email} is {existing.status} since "
                            f"{existing.status_changed} ({existing.status_reason}); "
                            "add it with --resubscribe only if the person asked again"
                        )
                    )
                new_name = clean_name(name) if name is not None else existing.name
                new_lang = lang if language is not None else existing.language
                resubscribed = existing.status != "subscribed"
                changed = resubscribed or (new_name, new_lang) != (existing.name, existing.language)
                if changed:
                    self.db.execute(
                        "UPDATE subscribers SET name = ?, language = ?, status = 'subscribed', "
                        "status_changed = CASE WHEN status = 'subscribed' THEN status_changed "
                        "ELSE ? END, status_reason = CASE WHEN status = 'subscribed' "
                        "THEN status_reason ELSE 'resubscribed' END WHERE id = ?",
                        (new_name, new_lang, stamp, existing.id),
                    )
                outcome = "resubscribed" if resubscribed else "updated" if changed else "unchanged"
        subscriber = self.get(address)
        assert subscriber is not None
        return subscriber, outcome

    def remove(self, email: str, reason: str = "removed by the operator") -> Subscriber:
        """Unsubscribe an address for good (it stays on the list so no import brings it back)."""
        address = _checked(email)
        if not self.set_status(address, "unsubscribed", reason):
            raise NewsletterError(Problem(f"{address} is not on the mailing list"))
        subscriber = self.get(address)
        assert subscriber is not None
        return subscriber

    def set_status(self, email: str, status: str, reason: str) -> bool:
        """Record `status` (unsubscribed or bounced) with today's date; False if not listed.

        A subscriber already in that status keeps its original date and reason.
        """
        if status not in STATUSES:
            raise ValueError(status)
        with self.db:
            cursor = self.db.execute(
                "UPDATE subscribers SET status = ?, status_changed = ?, status_reason = ? "
                "WHERE email = ? AND status != ?",
                (status, now_stamp(), reason, email, status),
            )
            if cursor.rowcount:
                return True
            return self.get(email) is not None

    # files

    def import_csv(self, path: Path) -> ImportReport:
        """Add and update subscribers from a CSV file; bad rows are reported and skipped.

        Non-empty values in the file replace stored ones; an import never resubscribes an
        unsubscribed or bounced address, and a `status` column of `unsubscribed` or `bounced`
        adds the address as such (to carry over a suppression list). Importing the same file
        twice changes nothing.
        """
        report = ImportReport()
        rows = _read_csv(path, report)
        stamp = now_stamp()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for row in rows.values():
                self._merge(row, stamp, report)
        return report

    def _merge(self, row: _CsvRow, stamp: str, report: ImportReport) -> None:
        existing = self.get(row.email)
        if existing is None:
            status = row.status or "subscribed"
            self.db.execute(
                "INSERT INTO subscribers (email, name, language, status, status_changed, "
                "status_reason, attributes, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.email,
                    row.name,
                    row.language,
                    status,
                    row.status_changed or stamp,
                    row.status_reason or "imported",
                    json.dumps(row.attributes, ensure_ascii=False, sort_keys=True),
                    stamp,
                ),
            )
            report.added += 1
            return
        name = row.name or existing.name
        language = row.language or existing.language
        attributes = {**existing.attributes, **row.attributes}
        status, changed, reason = existing.status, existing.status_changed, existing.status_reason
        kept = existing.status != "subscribed"
        if row.status and not kept:
            status = row.status
            changed, reason = row.status_changed or stamp, row.status_reason or "imported"
        new = (name, language, attributes, status)
        if kept:
            # counted once, as kept: its other details may still be brought up to date
            report.kept_unsubscribed += 1
        if new == (existing.name, existing.language, existing.attributes, existing.status):
            if not kept:
                report.unchanged += 1
            return
        self.db.execute(
            "UPDATE subscribers SET name = ?, language = ?, attributes = ?, status = ?, "
            "status_changed = ?, status_reason = ? WHERE id = ?",
            (
                name,
                language,
                json.dumps(attributes, ensure_ascii=False, sort_keys=True),
                status,
                changed,
                reason,
                existing.id,
            ),
        )
        if not kept:
            report.updated += 1

    def export_csv(self, stream: IO[str], status: str | None = None) -> int:
        """Write the list as CSV (re-importable: same columns); returns the number of rows."""
        keys: set[str] = set()
        for (attributes,) in self.db.execute(
            "SELECT DISTINCT attributes FROM subscribers WHERE attributes != '{}'"
        ):
            keys.update(json.loads(attributes))
        extra = sorted(keys - set(CSV_COLUMNS))
        writer = csv.writer(stream, lineterminator="\r\n")
        writer.writerow([*CSV_COLUMNS, *extra])
        count = 0
        for s in self.subscribers(status):
            writer.writerow(
                [
                    s.email,
                    s.name,
                    s.language,
                    s.status,
                    s.status_changed,
                    s.status_reason,
                    *(s.attributes.get(k, "") for k in extra),
                ]
            )
            count += 1
        return count


def _checked(email: str) -> str:
    try:
        return normalise_email(email)
    except InvalidAddress as exc:
        raise NewsletterError(Problem(f"{email.strip()!r} is not a valid address: {exc}")) from None


@dataclass
class _CsvRow:
    line: int
    email: str
    name: str = ""
    language: str = ""
    status: str = ""
    status_changed: str = ""
    status_reason: str = ""
    attributes: dict[str, str] = field(default_factory=dict)

    def absorb(self, later: _CsvRow) -> None:
        """A later row for the same address: its non-empty values win."""
        for name in ("name", "language", "status", "status_changed", "status_reason"):
            value = getattr(later, name)
            if value:
                setattr(self, name, value)
        self.attributes.update(later.attributes)


def _read_csv(path: Path, report: ImportReport) -> dict[str, _CsvRow]:
    """Parse and validate every row; returns rows by lower-cased address, in file order."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NewsletterError(Problem(f"cannot read: {exc.strerror}", path)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise NewsletterError(
            Problem("not UTF-8 text (save the file as “CSV UTF-8”)", path, line=line)
        ) from None
    lines = io.StringIO(text, newline="").readlines()
    first_line = lines[0] if lines else ""
    delimiter = max(",;\t", key=first_line.count)
    reader = csv.reader(iter(lines), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise NewsletterError(Problem("empty file; expected a header row", path)) from None
    except csv.Error as exc:
        raise NewsletterError(Problem(f"header row: {_csv_reason(exc)}", path, 1)) from None
    columns = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    if "email" not in columns:
        raise NewsletterError(
            Problem(f"no `email` column in the header row (found: {', '.join(header)})", path, 1)
        )
    seen: set[str] = set()
    for name, column in zip(header, columns, strict=True):
        if column and column in seen:
            alias = f" (`{name.strip()}` is another name for it)" if name.strip() != column else ""
            raise NewsletterError(
                Problem(
                    f"the header row has the column `{column}` twice{alias}; "
                    f"found: {', '.join(h.strip() for h in header)}",
                    path,
                    1,
                )
            )
        seen.add(column)
    rows: dict[str, _CsvRow] = {}
    position = reader.line_num
    while position < len(lines):
        # A row the csv module cannot parse (a quote left open, a field over its size limit)
        # is reported and skipped like any other bad row, and reading goes on at the next
        # physical line, so an open quote cannot swallow the rest of the file.
        reader = csv.reader(
            itertools.islice(lines, position, None), delimiter=delimiter, strict=True
        )
        end = position
        try:
            for record in reader:
                line, end = end + 1, position + reader.line_num
                _take_row(columns, header, record, line, path, rows, report)
            break
        except csv.Error as exc:
            line = end + 1
            reason = _csv_reason(exc, spans_lines=position + reader.line_num > line)
            report.problems.append(Problem(f"{reason}; row skipped", path, line=line))
            position = line
    return rows


def _csv_reason(exc: csv.Error, *, spans_lines: bool = False) -> str:
    text = str(exc)
    if "field larger than field limit" in text:
        return f"field too large (over {csv.field_size_limit():,} characters; a missing quote?)"
    if "unexpected end of data" in text or ("expected after" in text and spans_lines):
        return "a quoted field opened on this line is not closed (a missing quote?)"
    if "expected after" in text:
        return "text after the closing quote of a field (a stray or missing quote?)"
    if "NUL" in text:
        return "contains a NUL character"
    return f"not valid CSV: {text}"


def _take_row(
    columns: list[str],
    header: list[str],
    record: list[str],
    line: int,
    path: Path,
    rows: dict[str, _CsvRow],
    report: ImportReport,
) -> None:
    if not any(cell.strip() for cell in record):
        return
    try:
        row = _parse_row(columns, header, record, line)
    except ValueError as exc:
        report.problems.append(Problem(f"skipped: {exc}", path, line=line))
        return
    key = row.email.lower()
    if key in rows:
        rows[key].absorb(row)
        report.merged += 1
    else:
        rows[key] = row


def _parse_row(columns: list[str], header: list[str], record: list[str], line: int) -> _CsvRow:
    if len(record) > len(columns):
        raise ValueError(
            f"{len(record)} fields but the header has {len(columns)} (a missing quote?)"
        )
    values = dict(zip(columns, (cell.strip() for cell in record), strict=False))
    raw = values.get("email", "")
    if not raw:
        raise ValueError("no email address")
    try:
        email = normalise_email(raw)
    except InvalidAddress as exc:
        raise ValueError(f"{raw!r} is not a valid address: {exc}") from None
    status = values.get("status", "").lower()
    if status == "subscribed":
        status = ""
    elif status and status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    attributes = {
        header[i].strip(): values[c]
        for i, c in enumerate(columns[: len(record)])
        if c not in CSV_COLUMNS and values[c]
    }
    return _CsvRow(
        line=line,
        email=email,
        name=clean_name(values.get("name")),
        language=clean_language(values.get("language")),
        status=status,
        status_changed=values.get("status_changed", "") if status else "",
        status_reason=clean_name(values.get("status_reason")) if status else "",
        attributes=attributes,
    )
