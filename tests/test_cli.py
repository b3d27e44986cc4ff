"""The `newsletter` command as users run it: the installed script, click's runner, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NOW_ISO, REPO, invoke, run_script
from feedserver import FeedServer

from newsletter import __version__
from newsletter.project import Project

RSS = """<?xml version="1.0"?><rss version="2.0"><channel><title>Remote</title>
<link>https://remote.example.org/</link>
<item><title>Remote news from the agency</title><link>/news/1</link><guid>remote-1</guid>
<pubDate>Tue, 24 Nov 2026 20:00:00 GMT</pubDate><description>&lt;p&gt;Hello&lt;/p&gt;</description>
</item></channel></rss>"""


def test_version_and_help() -> None:
    result = run_script("--version")
    assert result.returncode == 0 and __version__ in result.stdout
    for command in ("build", "check", "feeds"):
        result = run_script(command, "--help")
        assert result.returncode == 0 and "Usage: newsletter" in result.stdout, command


def test_python_dash_m_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "build" in result.stdout


def test_installed_script_builds_a_project_elsewhere(project: Project, tmp_path: Path) -> None:
    result = run_script("-C", str(project.root), "build", "--now", NOW_ISO, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "en: " in result.stdout and "KB of 102 KB" in result.stdout
    assert "calls 8" in result.stdout
    manifest = json.loads((project.outbox_dir / "2026-11" / "ja" / "manifest.json").read_text())
    assert manifest["language"] == "ja"


def test_build_summary_lists_sections_and_warnings(project: Project) -> None:
    (project.content_dir / "contacts" / "research-enquiry-service.ja.md").unlink()
    result = invoke(project, "build", "--now", NOW_ISO, "--lang", "ja")
    assert result.exit_code == 0
    assert "ja: " in result.output and "contacts 3" in result.output
    assert "warning:" in result.output and "research-enquiry-service.md" in result.output


def test_period_option(project: Project) -> None:
    result = invoke(project, "build", "--period", "2026-12", "--now", "2026-12-03T08:00:00+01:00")
    assert result.exit_code == 0, result.output
    assert (project.outbox_dir / "2026-12" / "en" / "index.html").is_file()


def test_bad_period_is_a_usage_error(project: Project) -> None:
    result = run_script("-C", str(project.root), "build", "--period", "2026-13")
    assert result.returncode == 2 and "YYYY-MM" in result.stderr


def test_check_passes_on_the_shipped_project() -> None:
    result = run_script("-C", str(REPO), "check", "--now", NOW_ISO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_check_names_file_and_field_without_traceback(project: Project) -> None:
    broken = project.content_dir / "calls" / "erc-2027-starting-grants.md"
    broken.write_text(broken.read_text().replace("deadline:", "deadlin:"))
    result = run_script("-C", str(project.root), "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert any("erc-2027-starting-grants.md" in line and "deadline" in line for line in lines)
    assert all(line.startswith("error: ") for line in lines)


def test_check_reports_template_syntax_errors(project: Project) -> None:
    (project.templates_dir / "partials" / "contacts.txt").write_text("{% if %}\n")
    result = invoke(project, "check")
    assert result.exit_code == 1
    assert "contacts.txt:1: template syntax error" in result.output


def test_not_a_project(tmp_path: Path) -> None:
    result = run_script("-C", str(tmp_path), "build")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {tmp_path}/newsletter.toml: no newsletter.toml here; is this a newsletter "
        "project? (use -C DIR)"
    )


def test_build_and_fetch_feeds_over_http(project: Project) -> None:
    with FeedServer() as server:
        server.set("/remote.xml", RSS, etag='"v1"')
        with project.config_path.open("a") as config:
            config.write(
                f'\n[[feeds]]\nname = "Remote"\nurl = "{server.url("/remote.xml")}"\ntimeout = 2\n'
            )
        fetched = run_script("-C", str(project.root), "feeds", "fetch")
        assert fetched.returncode == 0, fetched.stderr
        assert "Remote: fetched, 1 entries" in fetched.stdout
        result = run_script("-C", str(project.root), "build", "--now", NOW_ISO)
        assert result.returncode == 0, result.stderr
        assert server.downloads("/remote.xml") == 1  # the second request was a 304
        assert server.requests_to("/remote.xml")[-1].header("If-None-Match") == '"v1"'
        html = (project.outbox_dir / "2026-11" / "en" / "index.html").read_text()
        assert "Remote news from the agency" in html
        assert f'href="{server.url("/news/1")}"' in html  # relative to the feed's own URL


def test_unreachable_feed_warns_and_build_goes_on(project: Project) -> None:
    with FeedServer() as server:
        server.set("/gone.xml", "", status=500)
        with project.config_path.open("a") as config:
            config.write(f'\n[[feeds]]\nname = "Flaky"\nurl = "{server.url("/gone.xml")}"\n')
        result = run_script("-C", str(project.root), "build", "--now", NOW_ISO)
    assert result.returncode == 0, result.stderr
    assert "warning: feeds.Flaky:" in result.stderr and "500" in result.stderr
    manifest = json.loads((project.outbox_dir / "2026-11" / "en" / "manifest.json").read_text())
    assert any("feeds.Flaky" in w for w in manifest["warnings"])


def test_feeds_fetch_fails_when_a_feed_has_nothing(project: Project) -> None:
    with FeedServer() as server:
        server.set("/missing.xml", "", status=404)
        with project.config_path.open("a") as config:
            config.write(f'\n[[feeds]]\nname = "Missing"\nurl = "{server.url("/missing.xml")}"\n')
        result = invoke(project, "feeds", "fetch")
    assert result.exit_code == 1
    assert "error: feeds.Missing: no entries, fresh or cached" in result.output


def test_non_editable_install_ships_the_theme(project: Project, tmp_path: Path) -> None:
    """A wheel install works on a project without its own templates (the theme is packaged)."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    (wheel,) = wheels.glob("newsletter-*.whl")
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
        check=True,
        capture_output=True,
    )
    for path in sorted(project.templates_dir.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    project.templates_dir.rmdir()
    result = subprocess.run(
        [str(venv / "bin" / "newsletter"), "-C", str(project.root), "build", "--now", NOW_ISO],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    japanese = (project.outbox_dir / "2026-11" / "ja" / "index.html").read_text()
    assert "公募情報" in japanese  # packaged translations came along too


def test_init_makes_a_project_that_builds_with_every_section(tmp_path: Path) -> None:
    target = tmp_path / "new-newsletter"
    created = run_script("init", str(target), "--title", "Lab News")
    assert created.returncode == 0, created.stderr
    assert (target / "templates" / "digest.html").is_file()
    assert 'title = "Lab News"' in (target / "newsletter.toml").read_text()
    checked = run_script("-C", str(target), "check")
    assert checked.returncode == 0, checked.stderr
    built = run_script("-C", str(target), "build")
    assert built.returncode == 0, built.stderr
    assert "warning" not in built.stderr, built.stderr
    period = next((target / "outbox").iterdir()).name
    manifest = json.loads((target / "outbox" / period / "en" / "manifest.json").read_text())
    assert all(count >= 1 for count in manifest["sections"].values()), manifest["sections"]


def test_init_refuses_a_folder_in_use(project: Project) -> None:
    result = run_script("init", str(project.root))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {project.root}: folder is not empty; choose a new or empty one"
    )


CALL = "---\ntitle: X\nprogramme: ERC\n"
BAD_INPUTS = {
    "now is not a date": (["build", "--now", "garbage"], None, "--now: expected"),
    "now out of range": (["build", "--now", "9999-12-31T23:59"], None, "--now: year out of range"),
    "impossible unquoted date": (
        ["build"],
        ("content/calls/bad.md", CALL + "deadline: 2027-02-30\n---\n"),
        "bad.md: invalid value in front matter: day is out of range for month",
    ),
    "opens after deadline": (
        ["build"],
        ("content/calls/bad.md", CALL + 'opens: "2027-03-01"\ndeadline: "2027-02-20"\n---\n'),
        "bad.md: opens (2027-03-01) is after the deadline",
    ),
    "infinite budget": (
        ["build"],
        ("content/calls/bad.md", CALL + 'deadline: "2027-02-20"\nbudget_eur: .inf\n---\n'),
        "bad.md:5: budget_eur: Input should be a finite number",
    ),
    "template raises": (
        ["build"],
        ("templates/partials/contacts.txt", "{{ 1/0 }}\n"),
        "contacts.txt:1: template error: division by zero",
    ),
    "broken translation file": (
        ["build"],
        ("templates/locales/ja.po", 'msgid "x"\ngarbage\n'),
        "ja.po:2: invalid translation file",
    ),
    "a folder named like a content file": (
        ["build"],
        ("content/news/folder.md/", ""),
        "folder.md: cannot read: Is a directory",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line(project: Project, case: str) -> None:
    args, write, expected = BAD_INPUTS[case]
    if write:
        relative, text = write
        path = project.root / relative
        if relative.endswith("/"):
            path.mkdir(parents=True)
        else:
            path.write_text(text)
    result = run_script("-C", str(project.root), *args)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected in lines[0]


def test_unwritable_outbox_is_named(project: Project) -> None:
    project.outbox_dir.mkdir()
    (project.outbox_dir / "2026-11").write_text("a file where a folder must go")
    result = run_script("-C", str(project.root), "build", "--now", NOW_ISO)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "outbox/2026-11" in result.stderr


def test_project_option_also_after_the_command(project: Project, tmp_path: Path) -> None:
    result = run_script("build", "-C", str(project.root), "--now", NOW_ISO, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (project.outbox_dir / "2026-11" / "en" / "index.html").is_file()
    nested = run_script("feeds", "fetch", "-C", str(project.root), cwd=tmp_path)
    assert nested.returncode == 0 and "EU research news: local" in nested.stdout
