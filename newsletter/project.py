"""Where a project's files live. Every path the engine touches is derived here."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from newsletter.config import CONFIG_NAME


@dataclass(frozen=True)
class Project:
    """A newsletter project directory (the repository root is the shipped EU–Japan project)."""

    root: Path

    @classmethod
    def at(cls, root: Path | str) -> Project:
        return cls(Path(root).resolve())

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def content_dir(self) -> Path:
        return self.root / "content"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def outbox_dir(self) -> Path:
        return self.root / "outbox"

    @property
    def state_dir(self) -> Path:
        """Generated state (caches, SQLite); never committed."""
        return self.root / ".newsletter"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def state_db(self) -> Path:
        return self.state_dir / "state.sqlite3"

    def template_dirs(self) -> list[Path]:
        """The project's own templates first, then the theme shipped with the engine."""
        dirs = [self.templates_dir] if self.templates_dir.is_dir() else []
        theme = shipped_theme()
        if theme is not None and theme not in dirs:
            dirs.append(theme)
        return dirs


def shipped_theme() -> Path | None:
    """The default theme: inside the installed package (a wheel puts the repository's
    `templates/` there), or the source checkout's `templates/` for an editable install."""
    packaged = Path(str(resources.files("newsletter") / "theme"))
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[1] / "templates"
    return checkout if (checkout / "digest.html").is_file() else None
