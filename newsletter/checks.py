"""The checks panel of the preview: what could go wrong in a subscriber's inbox, per built issue.

Each check reads only the finished files of one issue folder (index.html, digest.txt,
manifest.json), so it judges exactly what would be sent, whatever template produced it. A check
says `error` when recipients would see something broken (a clipped message, a dead link, a raw
placeholder), `warning` when the issue works but is worse than it should be, `ok` otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from newsletter import personal
from newsletter.outbox import CLIP_LIMIT_BYTES

Status = Literal["ok", "warning", "error"]

NEAR_LIMIT = 0.9
"""Warn once the HTML uses this share of the clipping limit: a few more entries tip it over."""

_RANK = {"ok": 0, "warning": 1, "error": 2}
_TEMPLATE_LEFTOVER = re.compile(r"\{\{|\{%|%\}|\}\}")
_WEB_SCHEMES = {"http", "https"}
_LINK_SCHEMES = _WEB_SCHEMES | {"mailto", "tel", "sms"}
_IMAGE_SCHEMES = _WEB_SCHEMES | {"cid"}
_SPACE = re.compile(r"\s+")
_URL_ATTRIBUTES = {("a", "href"): False, ("area", "href"): False, ("img", "src"): True}
"""Attributes holding a URL, and whether it is an image's; `background` on any element too."""


@dataclass(frozen=True)
class CheckResult:
    """One line of the checks panel; `details` lists each offending place."""

    id: str
    title: str
    status: Status
    summary: str
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "details": list(self.details)}


def worst(results: Iterable[CheckResult]) -> Status:
    statuses = [r.status for r in results]
    return max(statuses, key=_RANK.__getitem__) if statuses else "ok"


def check_issue(directory: Path, *, root: Path | None = None) -> list[CheckResult]:
    """Run every check on the issue in `directory` (outbox/<period>/<lang>/).

    `root` (the project directory) is cut from the paths in build warnings, for shorter lines.
    """
    html = _read_text(directory / "index.html")
    text = _read_text(directory / "digest.txt")
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    missing = [
        name
        for name, value in (("index.html", html), ("digest.txt", text), ("manifest.json", manifest))
        if value is None
    ]
    if missing:
        return [
            CheckResult(
                "files",
                "Issue files",
                "error",
                f"missing or unreadable: {', '.join(missing)}; run `newsletter build`",
            )
        ]
    assert html is not None and text is not None and manifest is not None
    return check_files(html, text, manifest, root=root)


def check_files(
    html: str, text: str, manifest: Mapping[str, Any], *, root: Path | None = None
) -> list[CheckResult]:
    """Every check on one issue's HTML, plain text and manifest, in panel order."""
    document = parse_html(html)
    return [
        check_size(len(html.encode())),
        check_images(document),
        check_links(document),
        check_sections(document, manifest),
        check_placeholders(html, text),
        check_text_items(text, manifest),
        check_build_warnings(manifest, root=root),
    ]


def check_size(size_bytes: int, limit: int = CLIP_LIMIT_BYTES) -> CheckResult:
    share = size_bytes / limit
    summary = f"{size_bytes / 1024:.1f} KB of {limit // 1024} KB ({share:.0%})"
    if size_bytes > limit:
        return CheckResult(
            "size",
            "HTML size",
            "error",
            summary,
            ("Gmail clips the message here and hides the rest; lower the section limits",),
        )
    if share >= NEAR_LIMIT:
        return CheckResult(
            "size",
            "HTML size",
            "warning",
            summary,
            ("close to Gmail's clipping limit; a few more entries will go over",),
        )
    return CheckResult("size", "HTML size", "ok", summary)


def check_images(document: Document) -> CheckResult:
    """Images with no alt attribute; `alt=""` is an explicit choice (decorative) and passes."""
    bad = [
        f"line {img.line}: {img.attrs.get('src') or '(no src)'}"
        for img in document.find("img")
        if img.attrs.get("alt") is None
    ]
    count = len(document.find("img"))
    if bad:
        return CheckResult(
            "alt",
            "Image alt text",
            "warning",
            f"{len(bad)} of {count} image{_s(count)} without alt text",
            tuple(bad),
        )
    summary = f"all {count} image{_s(count)} have alt text" if count else "no images"
    return CheckResult("alt", "Image alt text", "ok", summary)


def check_links(document: Document) -> CheckResult:
    """Links and image sources a mail client cannot follow: relative, malformed, odd schemes."""
    ids = {
        value
        for node in document.nodes
        for value in (node.attrs.get("id"), node.attrs.get("name"))
        if value
    }
    bad = []
    count = 0
    for node in document.nodes:
        for attribute, value in node.attrs.items():
            image = _URL_ATTRIBUTES.get((node.tag, attribute), attribute == "background" or None)
            if image is None:
                continue
            count += 1
            problem = link_problem(value, image=image, ids=ids)
            if problem:
                bad.append(f"line {node.line}: {problem}: {_clip(value)}")
    if bad:
        return CheckResult(
            "links",
            "Links",
            "error",
            f"{len(bad)} of {count} link{_s(count)} will not work in an inbox",
            tuple(bad),
        )
    return CheckResult("links", "Links", "ok", f"all {count} link{_s(count)} look right")


def link_problem(url: str, *, image: bool = False, ids: set[str] | None = None) -> str | None:
    """Why `url` would not work in an email, or None. `ids` are the anchors in the document."""
    if url.startswith(personal.PREFIX):
        return None  # reported by the placeholder check
    if not url.strip():
        return "empty link"
    if url != url.strip() or _SPACE.search(url):
        return "malformed (contains spaces)"
    if url.startswith("#"):
        if image:
            return "relative image source"
        if ids is not None and url[1:] not in ids:
            return "anchor to a missing id"
        return None
    if url.startswith("//"):
        return "protocol-relative (add https:)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"malformed ({exc})"
    scheme = parts.scheme.lower()
    if not scheme:
        return "relative image source" if image else "relative link"
    allowed = _IMAGE_SCHEMES if image else _LINK_SCHEMES
    if scheme not in allowed:
        return f"unsupported scheme {scheme}:"
    if scheme in _WEB_SCHEMES:
        host = parts.hostname or ""
        if not host or ("." not in host and host != "localhost"):
            return "malformed (no domain name)"
    elif not (parts.path or parts.netloc):
        return f"malformed (nothing after {scheme}:)"
    return None


def check_sections(document: Document, manifest: Mapping[str, Any]) -> CheckResult:
    """Configured sections with nothing this period, and headed blocks with nothing under them."""
    details = [
        f"{section}: no entries this period (left out of the issue)"
        for section, count in (manifest.get("sections") or {}).items()
        if not count
    ]
    for node in document.nodes:
        if "section" not in node.attrs.get("class", "").split():
            continue
        heading = next(iter(document.find_in(node, ("h1", "h2", "h3"))), None)
        if heading is None:
            continue
        rest = document.text_of(node).replace(document.text_of(heading), "", 1)
        if not rest.strip():
            title = document.text_of(heading).strip()
            details.append(f"line {node.line}: {title!r} has a heading and nothing under it")
    total = len(manifest.get("sections") or {})
    if details:
        return CheckResult(
            "sections", "Empty sections", "warning", f"{len(details)} empty", tuple(details)
        )
    return CheckResult("sections", "Empty sections", "ok", f"all {total} sections have entries")


def check_placeholders(html: str, text: str) -> CheckResult:
    """Personal markers the build did not fill, and template syntax that reached the output."""
    details = []
    for name, body in (("HTML", html), ("text", text)):
        for field in personal.unfilled(body):
            details.append(f"{name}: {personal.PREFIX}{field} was not filled")
        for match in _TEMPLATE_LEFTOVER.finditer(body):
            line = body.count("\n", 0, match.start()) + 1
            snippet = body[max(0, match.start() - 20) : match.end() + 20].replace("\n", " ")
            details.append(f"{name} line {line}: template syntax left in the output: {snippet!r}")
    if details:
        return CheckResult(
            "placeholders", "Placeholders", "error", f"{len(details)} unfilled", tuple(details)
        )
    return CheckResult("placeholders", "Placeholders", "ok", "none left unfilled")


def check_text_items(text: str, manifest: Mapping[str, Any]) -> CheckResult:
    """Every item of the issue must be in the plain-text version too (whitespace-insensitive)."""
    flat = _flatten(text)
    items = list(manifest.get("items") or [])
    missing = [
        f"{item.get('section', '?')}: {item.get('title', '')}"
        for item in items
        if item.get("title") and _flatten(str(item["title"])) not in flat
    ]
    if missing:
        return CheckResult(
            "text",
            "Plain-text version",
            "warning",
            f"{len(missing)} of {len(items)} items missing",
            tuple(missing),
        )
    return CheckResult("text", "Plain-text version", "ok", f"all {len(items)} items present")


def check_build_warnings(manifest: Mapping[str, Any], *, root: Path | None = None) -> CheckResult:
    """What the build itself warned about: broken feeds, stale cache, missing translations."""
    prefix = f"{root}/" if root is not None else None
    warnings = [
        str(w).replace(prefix, "") if prefix else str(w) for w in manifest.get("warnings") or []
    ]
    warnings = list(dict.fromkeys(warnings))
    if warnings:
        return CheckResult(
            "build",
            "Build warnings",
            "warning",
            f"{len(warnings)} warning{_s(len(warnings))}",
            tuple(warnings),
        )
    return CheckResult("build", "Build warnings", "ok", "none")


# --- a small HTML tree: enough to find elements, their attributes, text and source lines ---

_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "param",
    "source",
    "track",
    "wbr",
}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    line: int
    children: list[Node | str]


class Document:
    """The elements of an HTML file in document order, with their text."""

    def __init__(self, root: Node, nodes: list[Node]):
        self.root = root
        self.nodes = nodes

    def find(self, tag: str) -> list[Node]:
        return [n for n in self.nodes if n.tag == tag]

    def find_in(self, node: Node, tags: tuple[str, ...]) -> list[Node]:
        found = []
        for child in node.children:
            if isinstance(child, Node):
                if child.tag in tags:
                    found.append(child)
                found.extend(self.find_in(child, tags))
        return found

    def text_of(self, node: Node) -> str:
        return "".join(
            child if isinstance(child, str) else self.text_of(child) for child in node.children
        )


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, 1, [])
        self.stack = [self.root]
        self.nodes: list[Node] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: ("" if v is None else v) for k, v in attrs}, self.getpos()[0], [])
        self.stack[-1].children.append(node)
        self.nodes.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        # Close up to the matching element; a stray end tag is ignored, as browsers do.
        for index in range(len(self.stack) - 1, 0, -1):
            if self.stack[index].tag == tag:
                del self.stack[index:]
                return

    def handle_data(self, data: str) -> None:
        if self.stack[-1].tag not in ("style", "script", "title"):
            self.stack[-1].children.append(data)


def parse_html(html: str) -> Document:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return Document(builder.root, builder.nodes)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _flatten(text: str) -> str:
    """Without whitespace: the text version wraps long titles, in Japanese even inside words."""
    return _SPACE.sub("", text).casefold()


def _clip(value: str, width: int = 80) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def _s(count: int) -> str:
    return "" if count == 1 else "s"
