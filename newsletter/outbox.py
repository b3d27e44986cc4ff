"""Write one issue folder: index.html, digest.txt, message.eml and manifest.json, atomically.

Everything is rendered in memory before the first write, and each file is replaced by rename, so
a failed build leaves the previous issue intact. The manifest goes last: a folder whose manifest
names a file's hash is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import Any

CLIP_LIMIT_BYTES = 102 * 1024
"""Gmail clips HTML bodies past about 102 KB and hides the rest behind a link."""

FILES = (
    "index.html",
    "digest.txt",
    "message.eml",
    "personal.html",
    "personal.txt",
    "manifest.json",
)


@dataclass(frozen=True)
class IssueFiles:
    """The finished files of one issue in one language, ready to write."""

    html: str
    text: str
    message: bytes
    manifest: dict[str, Any]
    personal_html: str
    """The HTML with per-recipient markers, for `newsletter send`."""
    personal_text: str


def compose_message(
    *,
    subject: str,
    sender_name: str,
    sender_email: str,
    reply_to: str | None,
    list_id: str,
    list_name: str,
    html: str,
    text: str,
    when: datetime,
    language: str,
) -> bytes:
    """The issue as a complete multipart/alternative message (CRLF, UTF-8, quoted-printable).

    Message-ID and the MIME boundary are derived from the content, so the same inputs give the
    same bytes; `newsletter send` gives each recipient a Message-ID of their own.
    """
    digest = hashlib.sha256(f"{subject}\0{html}\0{text}".encode()).hexdigest()
    domain = sender_email.rpartition("@")[2]
    message = EmailMessage(policy=SMTP)
    message["Subject"] = subject
    message["From"] = Address(sender_name, addr_spec=sender_email)
    if reply_to:
        message["Reply-To"] = reply_to
    message["Date"] = format_datetime(when)
    message["Message-ID"] = f"<{digest[:32]}@{domain}>"
    message["List-Id"] = f"{list_name} <{list_id}>"
    message["Content-Language"] = language
    message["MIME-Version"] = "1.0"
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    message.set_boundary(f"=_{digest[32:56]}")
    return message.as_bytes(policy=SMTP)


def write_issue(directory: Path, files: IssueFiles) -> None:
    """Replace the issue in `directory` file by file, the manifest last."""
    directory.mkdir(parents=True, exist_ok=True)
    hashes = {}
    contents = {
        "index.html": files.html.encode(),
        "digest.txt": files.text.encode(),
        "message.eml": files.message,
        "personal.html": files.personal_html.encode(),
        "personal.txt": files.personal_text.encode(),
    }
    for name, data in contents.items():
        write_atomic(directory / name, data)
        hashes[name] = hashlib.sha256(data).hexdigest()
    manifest = {**files.manifest, "files": hashes}
    text = json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=False) + "\n"
    write_atomic(directory / "manifest.json", text.encode())


SENT_MARKER = ".sent"
"""Written into `outbox/<issue>/` when its first real delivery starts: from then on the issue is
what subscribers got, so builds leave it alone (the archive, and a resumed send, stay true)."""


def mark_sent(issue_dir: Path, when: datetime) -> None:
    marker = issue_dir / SENT_MARKER
    if not marker.exists():
        write_atomic(marker, f"{when.isoformat()}\n".encode())


def sent_at(issue_dir: Path) -> str | None:
    """When the issue in `issue_dir` started going out, or None if it never did."""
    try:
        return (issue_dir / SENT_MARKER).read_text(encoding="utf-8").strip() or "unknown time"
    except OSError:
        return None


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
