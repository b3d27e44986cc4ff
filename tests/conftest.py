"""Shared fixtures: a temporary copy of the shipped EU–Japan project, and ways to run the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import cli
from newsletter.project import Project

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=ZoneInfo("Europe/Brussels"))
"""The issue time the shipped content is written around; tests never read the system clock."""
NOW_ISO = NOW.isoformat()


def copy_project(destination: Path) -> Project:
    """A private copy of the repository's own project (config, content, templates)."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "newsletter.toml", destination / "newsletter.toml")
    shutil.copytree(REPO / "content", destination / "content")
    shutil.copytree(REPO / "templates", destination / "templates")
    return Project.at(destination)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return copy_project(tmp_path / "project")


def invoke(project: Project, *args: str) -> Result:
    """Run the CLI in-process with click's runner, against `project`."""
    return CliRunner().invoke(cli, ["-C", str(project.root), *args], catch_exceptions=False)


def console_script() -> str:
    """The installed `newsletter` script (next to this Python, else on PATH)."""
    beside = Path(sys.executable).parent / "newsletter"
    found = str(beside) if beside.exists() else shutil.which("newsletter")
    assert found, "the newsletter console script is not installed (pip install -e .)"
    return found


def run_script(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script in a subprocess, as a user would."""
    return subprocess.run(
        [console_script(), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
