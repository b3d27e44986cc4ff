"""The documentation keeps up with the code.

The lists checked here come from the code itself (the click group, the pydantic models), so a
new command, table, key, section or content field fails a test until it is documented.
"""

from __future__ import annotations

import re
import runpy
import typing
from pathlib import Path

import pytest
from conftest import REPO
from pydantic import BaseModel

from newsletter.config import Config, Section
from newsletter.content import KINDS, Item

DOCS = REPO / "docs"
CLI_DOCS = REPO / "scripts" / "cli-docs"
_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def _read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of each Markdown heading; a body runs to the next heading of its level
    or higher. `#` lines inside code fences are not headings."""
    lines = text.splitlines()
    headings: list[tuple[int, int, str]] = []
    fenced = False
    for number, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            headings.append((number, len(match.group(1)), match.group(2)))
    found = []
    for index, (number, level, title) in enumerate(headings):
        end = next((n for n, lv, _ in headings[index + 1 :] if lv <= level), len(lines))
        found.append((title, "\n".join(lines[number + 1 : end])))
    return found


def _section(text: str, marker: str, document: str) -> str:
    """The body of the one heading that contains `marker`."""
    matches = [body for title, body in _sections(text) if marker in title]
    assert len(matches) == 1, f"{document} needs exactly one heading containing {marker}"
    return matches[0]


def _code(name: str) -> str:
    return f"`{name}`"


# --- docs/cli.md --------------------------------------------------------------------------------


def test_cli_reference_is_up_to_date() -> None:
    script = runpy.run_path(str(CLI_DOCS))
    document = _read("cli.md")
    fresh = script["updated"](document, script["reference"]())
    if fresh != document:
        pytest.fail(
            "the command reference in docs/cli.md is out of date: run scripts/cli-docs",
            pytrace=False,
        )


def test_cli_reference_covers_every_command() -> None:
    script = runpy.run_path(str(CLI_DOCS))
    document = _read("cli.md")
    paths = [path for path, _command in script["walk"](script["cli"])]
    assert len(paths) > 1
    for path in paths:
        assert f"\n### {' '.join(('newsletter', *path))}\n" in document, path


# --- docs/config.md -----------------------------------------------------------------------------


def _tables() -> list[tuple[str, type[BaseModel]]]:
    """(`[name]` or `[[name]]`, model of its keys) for every top-level table of Config."""
    tables = []
    for name, field in Config.model_fields.items():
        annotation = field.annotation
        if typing.get_origin(annotation) is list:
            (model,) = typing.get_args(annotation)
            tables.append((f"[[{name}]]", model))
        else:
            tables.append((f"[{name}]", annotation))
    return tables


@pytest.mark.parametrize("table, model", _tables(), ids=lambda v: v if isinstance(v, str) else "")
def test_config_doc_has_every_table_and_key(table: str, model: type[BaseModel]) -> None:
    body = _section(_read("config.md"), _code(table), "docs/config.md")
    missing = [key for key in model.model_fields if _code(key) not in body]
    assert not missing, f"docs/config.md: document {', '.join(missing)} under the {table} heading"


def test_config_doc_has_every_section_id() -> None:
    ids = typing.get_args(Section.model_fields["id"].annotation)
    assert ids, "could not read the section ids from config.Section"
    body = _section(_read("config.md"), _code("[[sections]]"), "docs/config.md")
    missing = [section_id for section_id in ids if _code(section_id) not in body]
    assert not missing, f"docs/config.md: describe the section ids {', '.join(missing)}"


# --- docs/content.md ----------------------------------------------------------------------------


def test_content_doc_has_every_common_field() -> None:
    document = _read("content.md")
    fields = [name for name, field in Item.model_fields.items() if not field.exclude]
    missing = [name for name in fields if _code(name) not in document]
    assert not missing, f"docs/content.md: document the common fields {', '.join(missing)}"


@pytest.mark.parametrize("folder", list(KINDS))
def test_content_doc_has_every_field_of_each_kind(folder: str) -> None:
    model = KINDS[folder]
    body = _section(_read("content.md"), _code(f"content/{folder}/"), "docs/content.md")
    own = [name for name in model.model_fields if name not in Item.model_fields]
    missing = [name for name in own if _code(name) not in body]
    assert not missing, (
        f"docs/content.md: document {', '.join(missing)} under the content/{folder}/ heading"
    )
    lines = [line for line in body.splitlines() if line.startswith("Translations may set:")]
    assert len(lines) == 1, f"docs/content.md: say which fields a {model.kind} translation may set"
    named = set(re.findall(r"`([a-z_]+)`", lines[0]))
    assert named == set(model.translatable), (
        f"docs/content.md: a {model.kind} translation may set {', '.join(model.translatable)}"
    )


def test_doc_links_point_at_existing_files() -> None:
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (path.parent / target).exists(), f"{path.name}: broken link to {target}"


def test_doc_anchors_exist() -> None:
    """Links like config.md#selection lead to a heading that exists."""
    anchors = {
        path.name: {_anchor(title) for title, _ in _sections(path.read_text(encoding="utf-8"))}
        for path in DOCS.glob("*.md")
    }
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", text):
            name = Path(target).name if target else path.name
            if name in anchors:
                assert anchor in anchors[name], f"{path.name}: no heading for {target}#{anchor}"


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", title.lower())
    return text.replace(" ", "-")
