"""The mailing list: validation, CSV import in its real-world shapes, status rules, the CLI."""

from __future__ import annotations

import csv
import io
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import console_script
from smtpserver import built_project

from newsletter.cli import cli
from newsletter.errors import NewsletterError
from newsletter.project import Project
from newsletter.subscribers import (
    InvalidAddress,
    MailingList,
    effective_language,
    normalise_email,
)


@pytest.fixture
def mailing_list(tmp_path: Path):
    with MailingList(tmp_path / ".newsletter" / "mailing.sqlite3") as the_list:
        yield the_list


def _write(path: Path, text: str, *, encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


# addresses


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("jane@example.org", "jane@example.org"),
        ("  Jane.Doe@EXAMPLE.Org ", "Jane.Doe@example.org"),
        ("taro@例え.jp", "taro@xn--r8jz45g.jp"),
    ],
)
def test_addresses_are_normalised(given: str, stored: str) -> None:
    assert normalise_email(given) == stored


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "jane",
        "jane@",
        "@example.org",
        "a@b",
        "two@@example.org",
        "a b@example.org",
        "jane@example.org\r\nBcc: x@y.org",
        "名前@example.jp",
    ],
)
def test_bad_addresses_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(InvalidAddress) as caught:
        normalise_email(bad)
    assert str(caught.value)


def test_effective_language_falls_back_to_primary_subtag_then_default() -> None:
    assert effective_language("ja", ["en", "ja"], "en") == "ja"
    assert effective_language("ja-JP", ["en", "ja"], "en") == "ja"
    assert effective_language("", ["en", "ja"], "en") == "en"
    assert effective_language("fr", ["en", "ja"], "en") == "en"


# import


def test_import_handles_bom_semicolons_quotes_and_windows_line_ends(
    tmp_path: Path, mailing_list: MailingList
) -> None:
    path = _write(
        tmp_path / "list.csv",
        "\ufeffEmail;Name;Language;Organisation\n"
        'jane@example.org;"Doe; Jane";en;"ACME ""Labs"""\n'
        'taro@example.jp;"佐藤\n太郎";ja;JST\n'
        "\n"
        "plain@example.org;;;\n",
        newline="\r\n",
    )
    report = mailing_list.import_csv(path)
    assert (report.added, report.problems) == (3, [])
    jane = mailing_list.get("jane@example.org")
    assert jane is not None
    assert (jane.name, jane.language, jane.status) == ("Doe; Jane", "en", "subscribed")
    assert jane.attributes == {"Organisation": 'ACME "Labs"'}
    taro = mailing_list.get("taro@example.jp")
    assert taro is not None and taro.name == "佐藤 太郎"
    plain = mailing_list.get("plain@example.org")
    assert plain is not None and (plain.name, plain.language, plain.attributes) == ("", "", {})


def test_bad_rows_are_reported_with_line_and_reason_and_the_rest_imported(
    tmp_path: Path, mailing_list: MailingList
) -> None:
    path = _write(
        tmp_path / "list.csv",
        "email,name,language\n"
        "good@example.org,Good,en\n"
        "not-an-address,Bad,en\n"
        ",No address,en\n"
        "odd@example.org,Odd,english!\n"
        '"multi@example.org","Multi\nLine",en\n'
        "extra@example.org,Extra,en,surplus\n"
        "last@example.org,Last,ja\n",
    )
    report = mailing_list.import_csv(path)
    assert report.added == 3
    problems = {p.line: p.message for p in report.problems}
    assert sorted(problems) == [3, 4, 5, 8]
    assert "not-an-address" in problems[3]
    assert "no email address" in problems[4]
    assert "language" in problems[5]
    assert "fields" in problems[8]
    assert all(str(p).startswith(f"{path}:") for p in report.problems)


def test_an_unterminated_quote_is_reported_and_the_rest_still_imported(
    tmp_path: Path, mailing_list: MailingList
) -> None:
    path = _write(
        tmp_path / "list.csv",
        "email,name,language\n"
        "first@example.org,First,en\n"
        'open@example.org,"Never closed,en\n'
        "after@example.org,After,en\n"
        'stray@example.org,"Quoted" tail,en\n'
        "last@example.org,Last,ja\n",
    )
    report = mailing_list.import_csv(path)
    problems = {p.line: p.message for p in report.problems}
    assert sorted(problems) == [3, 5], report.problems
    assert "not closed" in problems[3] and "missing quote" in problems[3]
    assert "quote" in problems[5]
    assert [s.email for s in mailing_list.subscribers()] == [
        "first@example.org",
        "after@example.org",
        "last@example.org",
    ]
    assert report.added == 3


def test_language_codes_are_case_normalised(tmp_path: Path, mailing_list: MailingList) -> None:
    path = _write(
        tmp_path / "list.csv",
        "email,language\na@example.org,EN\nb@example.org,pt_br\nc@example.org,JA-jp\n",
    )
    report = mailing_list.import_csv(path)
    assert report.problems == []
    languages = {s.email: s.language for s in mailing_list.subscribers()}
    assert languages == {"a@example.org": "en", "b@example.org": "pt-BR", "c@example.org": "ja-JP"}
    subscriber, _ = mailing_list.add("d@example.org", language="FR")
    assert subscriber.language == "fr"


@pytest.mark.parametrize(
    ("header", "named"),
    [("email,email,name", "`email` twice"), ("email,name,E-mail", "`E-mail` is another name")],
)
def test_duplicate_header_columns_are_refused(
    tmp_path: Path, mailing_list: MailingList, header: str, named: str
) -> None:
    path = _write(tmp_path / "list.csv", f"{header}\na@example.org,b@example.org,A\n")
    with pytest.raises(NewsletterError) as caught:
        mailing_list.import_csv(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:1: the header row has the column")
    assert named in message
    assert list(mailing_list.subscribers()) == []


def test_the_import_summary_counts_each_row_once(tmp_path: Path, mailing_list: MailingList) -> None:
    path = _write(
        tmp_path / "list.csv",
        "email,name\njane@example.org,Jane\njohn@example.org,John\nmary@example.org,Mary\n",
    )
    mailing_list.import_csv(path)
    mailing_list.remove("jane@example.org")
    mailing_list.remove("john@example.org")
    changed = _write(
        tmp_path / "changed.csv",
        "email,name\njane@example.org,Jane\njohn@example.org,John Smith\n"
        "mary@example.org,Mary\nnew@example.org,New\n",
    )
    report = mailing_list.import_csv(changed)
    assert (report.added, report.updated, report.unchanged, report.kept_unsubscribed) == (
        1,
        0,
        1,
        2,
    )
    john = mailing_list.get("john@example.org")
    assert john is not None and (john.status, john.name) == ("unsubscribed", "John Smith")


def test_duplicates_are_merged_and_a_second_import_changes_nothing(
    tmp_path: Path, mailing_list: MailingList
) -> None:
    path = _write(
        tmp_path / "list.csv",
        "email,name,language\n"
        "jane@example.org,,en\n"
        "JANE@Example.ORG,Jane Doe,\n"
        "john@example.org,John,en\n",
    )
    first = mailing_list.import_csv(path)
    assert (first.added, first.merged) == (2, 1)
    jane = mailing_list.get("jane@example.org")
    assert jane is not None and (jane.email, jane.name, jane.language) == (
        "jane@example.org",
        "Jane Doe",
        "en",
    )
    before = list(mailing_list.subscribers())
    second = mailing_list.import_csv(path)
    assert (second.added, second.updated, second.unchanged) == (0, 0, 2)
    assert list(mailing_list.subscribers()) == before


def test_unsubscribed_addresses_stay_unsubscribed_when_reimported(
    tmp_path: Path, mailing_list: MailingList
) -> None:
    path = _write(tmp_path / "list.csv", "email,name\njane@example.org,Jane\n")
    mailing_list.import_csv(path)
    mailing_list.remove("jane@example.org")
    report = mailing_list.import_csv(path)
    assert report.kept_unsubscribed == 1
    jane = mailing_list.get("jane@example.org")
    assert jane is not None and jane.status == "unsubscribed"


def test_a_status_column_can_only_suppress(tmp_path: Path, mailing_list: MailingList) -> None:
    mailing_list.add("was-subscribed@example.org")
    mailing_list.add("gone@example.org")
    mailing_list.remove("gone@example.org")
    path = _write(
        tmp_path / "list.csv",
        "email,status,status_reason\n"
        "new-unsub@example.org,unsubscribed,asked by phone\n"
        "was-subscribed@example.org,bounced,mailbox full\n"
        "gone@example.org,subscribed,\n",
    )
    report = mailing_list.import_csv(path)
    assert report.problems == []
    statuses = {s.email: (s.status, s.status_reason) for s in mailing_list.subscribers()}
    assert statuses == {
        "was-subscribed@example.org": ("bounced", "mailbox full"),
        "gone@example.org": ("unsubscribed", "removed by the operator"),
        "new-unsub@example.org": ("unsubscribed", "asked by phone"),
    }


def test_files_that_are_not_utf8_or_have_no_email_column_are_refused(
    tmp_path: Path, mailing_list: MailingList
) -> None:
    latin = _write(tmp_path / "latin.csv", "email,name\nz@example.org,Zoë\n", encoding="latin-1")
    with pytest.raises(NewsletterError, match="UTF-8"):
        mailing_list.import_csv(latin)
    headerless = _write(tmp_path / "none.csv", "address,name\nz@example.org,Z\n")
    with pytest.raises(NewsletterError, match="no `email` column"):
        mailing_list.import_csv(headerless)


# single changes


def test_add_update_remove_and_resubscribe(mailing_list: MailingList) -> None:
    subscriber, outcome = mailing_list.add("jane@example.org", name="Jane", language="ja")
    assert outcome == "added" and subscriber.language == "ja"
    _, outcome = mailing_list.add("jane@example.org", name="Jane Doe")
    assert outcome == "updated"
    _, outcome = mailing_list.add("JANE@example.org")
    assert outcome == "unchanged"
    removed = mailing_list.remove("jane@example.org")
    assert removed.status == "unsubscribed" and removed.status_changed
    with pytest.raises(NewsletterError, match="--resubscribe"):
        mailing_list.add("jane@example.org")
    again, outcome = mailing_list.add("jane@example.org", resubscribe=True)
    assert (outcome, again.status, again.name) == ("resubscribed", "subscribed", "Jane Doe")
    with pytest.raises(NewsletterError, match="not on the mailing list"):
        mailing_list.remove("nobody@example.org")


def test_names_lose_control_characters(mailing_list: MailingList) -> None:
    subscriber, _ = mailing_list.add("a@example.org", name="Eve\r\nBcc: x@example.org\x00")
    assert subscriber.name == "Eve Bcc: x@example.org"


def test_export_is_reimportable(tmp_path: Path, mailing_list: MailingList) -> None:
    source = _write(
        tmp_path / "in.csv",
        'email,name,language,team\na@example.org,A,en,red\nb@example.org,"B, Jr",ja,\n',
    )
    mailing_list.import_csv(source)
    mailing_list.remove("b@example.org")
    stream = io.StringIO()
    assert mailing_list.export_csv(stream) == 2
    rows = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert [r["email"] for r in rows] == ["a@example.org", "b@example.org"]
    assert rows[0]["team"] == "red" and rows[1]["status"] == "unsubscribed"
    with MailingList(tmp_path / "other.sqlite3") as other:
        exported = _write(tmp_path / "out.csv", stream.getvalue())
        report = other.import_csv(exported)
        assert report.problems == [] and report.added == 2
        assert [(s.email, s.name, s.status, s.attributes) for s in other.subscribers()] == [
            (s.email, s.name, s.status, s.attributes) for s in mailing_list.subscribers()
        ]


# the CLI


@pytest.fixture
def cli_project(tmp_path: Path) -> Project:
    return built_project(tmp_path / "project")


def _run(project: Project, *args: str):
    return CliRunner().invoke(cli, ["-C", str(project.root), *args], catch_exceptions=False)


def test_cli_subscriber_commands(tmp_path: Path, cli_project: Project) -> None:
    path = _write(tmp_path / "s.csv", "email,name,language\na@example.org,A,en\nbad,B,en\n")
    result = _run(cli_project, "subscribers", "import", str(path))
    assert result.exit_code == 1
    assert "added 1" in result.output
    # every count the summary prints is one docs/sending.md explains
    summary = result.output.splitlines()[0]
    counts = re.findall(r"([a-z][a-z ]*?) \d+", summary)
    assert counts == [
        "added",
        "updated",
        "unchanged",
        "duplicates merged",
        "kept unsubscribed",
        "skipped",
    ]
    docs = (Path(__file__).parents[1] / "docs" / "sending.md").read_text()
    for count in counts:
        assert f"`{count}`" in docs, count
    assert f"error: {path}:3: skipped:" in result.output
    assert "Traceback" not in result.output

    assert _run(cli_project, "subscribers", "add", "b@example.org", "--name", "B").output == (
        "added: b@example.org\n"
    )
    assert _run(cli_project, "subscribers", "remove", "a@example.org").exit_code == 0
    refused = _run(cli_project, "subscribers", "add", "a@example.org")
    assert refused.exit_code == 1 and "--resubscribe" in refused.output
    assert _run(cli_project, "subscribers", "add", "a@example.org", "--resubscribe").exit_code == 0
    assert _run(cli_project, "subscribers", "remove", "b@example.org").exit_code == 0

    listing = _run(cli_project, "subscribers", "list").output.splitlines()
    assert listing[0] == "a@example.org\tA\ten\tsubscribed"
    assert listing[1].startswith("b@example.org\tB\t-\tunsubscribed ")
    count = _run(cli_project, "subscribers", "count").output
    assert count == "subscribed 1\nunsubscribed 1\nbounced 0\ntotal 2\n"
    exported = _run(cli_project, "subscribers", "export").output
    assert exported.splitlines()[0] == "email,name,language,status,status_changed,status_reason"
    assert len(exported.splitlines()) == 3
    bad = _run(cli_project, "subscribers", "add", "not an address")
    assert bad.exit_code == 1 and bad.output.startswith("error: ")
    assert (cli_project.state_dir / "mailing.sqlite3").is_file()


def test_cli_import_reports_csv_errors_on_one_line_each(
    tmp_path: Path, cli_project: Project
) -> None:
    huge = "x" * (csv.field_size_limit() + 10)
    path = _write(
        tmp_path / "s.csv",
        f'email,name\na@example.org,A\nb@example.org,"{huge}"\nc@example.org,C\n'
        'd@example.org,"open\ne@example.org,E\n',
    )
    result = _run(cli_project, "subscribers", "import", str(path))
    assert result.exit_code == 1
    assert "unexpected" not in result.output and "Traceback" not in result.output
    assert f"error: {path}:3: field too large" in result.output
    assert f"error: {path}:5: a quoted field opened on this line is not closed" in result.output
    assert "added 3," in result.output
    emails = _run(cli_project, "subscribers", "list").output
    assert [line.split("\t")[0] for line in emails.splitlines()] == [
        "a@example.org",
        "c@example.org",
        "e@example.org",
    ]
    duplicate = _write(tmp_path / "d.csv", "email,email,name\na@example.org,a@example.org,A\n")
    refused = _run(cli_project, "subscribers", "import", str(duplicate))
    assert refused.exit_code == 1
    assert refused.output.startswith(f"error: {duplicate}:1: the header row has the column `email`")


@pytest.mark.parametrize("command", ["list", "export"])
def test_output_cut_short_by_a_closed_pipe_is_quiet(
    tmp_path: Path, cli_project: Project, command: str
) -> None:
    """`newsletter subscribers list | head -1`: the reader goes away; no traceback."""
    rows = "".join(f"reader{i:05d}@example.org,Reader {i},en\n" for i in range(4000))
    with MailingList(cli_project.state_dir / "mailing.sqlite3") as mailing_list:
        mailing_list.import_csv(_write(tmp_path / "s.csv", "email,name,language\n" + rows))
    process = subprocess.Popen(
        [console_script(), "-C", str(cli_project.root), "subscribers", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # like `head -1` exiting: the output is now far larger than the pipe
    err = process.stderr.read().decode()
    process.wait(timeout=60)
    assert first
    assert err == "", err
    assert process.returncode in (0, 141)
