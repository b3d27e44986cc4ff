"""Send benchmark: message production, `newsletter send` against a plain smtplib loop, memory.

Usage (from the repository root; not part of the test suite):

    python benchmarks/bench_send.py [--produce 100000] [--messages 3000] [--connections 1,2]
                                    [--memory 100000] [--no-full-memory] [--save] [--check]

It needs Postfix's `smtp-sink` (Debian package `postfix`, a C SMTP sink, so that the client is
what is measured). When `smtp-sink` is missing it runs `apt-get install postfix` (as root, or
with sudo), then starts its own sink on 127.0.0.1 and stops it at the end.

What it measures, on a copy of the shipped project with the 2026-11 issue built (≈50 KB HTML):

1. **production**: `IssueMessages.render()` for `--produce` recipients (English issue, names
   and addresses all different), messages per second; for reference, the same message built
   with `email.message.EmailMessage` for 300 recipients.
2. **baseline**: a plain smtplib loop into the sink, `SMTP.sendmail()` of one pre-built message
   (the bytes `render()` makes) for `--messages` recipients, on each connection count of
   `--connections` (threads, one connection each).
3. **send**: `newsletter.send.send_issue()` with the ledger, `--messages` fresh subscribers,
   same connection counts; wall time from the call to its return.
4. **memory**: peak RSS of the `newsletter` console script for `--memory` subscribers, with
   `send --dry-run` (every message built) and, unless `--no-full-memory`, a real `send` into the
   sink with 2 connections.

Targets (issue 4): production ≥ 20,000 messages/s; send ≥ 0.8 × baseline on each connection
count; peak memory < 200 MB for 100,000 subscribers. `--check` exits 1 when one is missed;
`--save` writes JSON to benchmarks/results/ (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from newsletter.build import build  # noqa: E402
from newsletter.config import load_config  # noqa: E402
from newsletter.dates import Period  # noqa: E402
from newsletter.messages import Recipient  # noqa: E402
from newsletter.project import Project  # noqa: E402
from newsletter.send import compile_issues, send_issue  # noqa: E402
from newsletter.subscribers import DB_NAME, MailingList  # noqa: E402

PERIOD = "2026-11"
NOW = "2026-11-25T09:00:00+01:00"
SECRET = "benchmark-secret-0123456789abcdef"
TARGET_PRODUCTION = 20_000
TARGET_RATIO = 0.8
TARGET_MEMORY_MB = 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--produce", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", default="1,2")
    parser.add_argument("--memory", type=int, default=100_000)
    parser.add_argument("--no-full-memory", action="store_true")
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    connection_counts = [int(c) for c in args.connections.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-send-"))
    results: dict[str, object] = {"machine": os.uname().nodename, "cpus": os.cpu_count()}
    sink = None
    try:
        project = _project(work / "project")
        results["production"] = _production(project, args.produce)
        sink = Sink()
        results["sink"] = f"smtp-sink on 127.0.0.1:{sink.port}"
        rows = []
        for connections in connection_counts:
            baseline = _baseline(project, sink.port, args.messages, connections)
            ours = _send(project, work, sink.port, args.messages, connections)
            rows.append(
                {
                    "connections": connections,
                    "baseline_per_s": baseline,
                    "send_per_s": ours,
                    "ratio": ours / baseline,
                }
            )
            print(
                f"send, {connections} connection(s): smtplib loop {baseline:,.0f}/s, "
                f"newsletter send {ours:,.0f}/s, ratio {ours / baseline:.2f} "
                f"(target ≥ {TARGET_RATIO})",
                flush=True,
            )
        results["send"] = rows
        results["memory"] = _memory(work, args.memory, sink.port, full=not args.no_full_memory)
    finally:
        if sink:
            sink.stop()
        shutil.rmtree(work, ignore_errors=True)

    missed = _missed(results)
    print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    if args.save:
        out = REPO / "benchmarks" / "results"
        out.mkdir(exist_ok=True)
        path = out / f"send-{datetime.now():%Y%m%d-%H%M%S}.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"saved {path}")
    return 1 if args.check and missed else 0


# setup


def _project(destination: Path) -> Project:
    destination.mkdir(parents=True)
    shutil.copy(REPO / "newsletter.toml", destination / "newsletter.toml")
    shutil.copytree(REPO / "content", destination / "content")
    shutil.copytree(REPO / "templates", destination / "templates")
    project = Project.at(destination)
    build(project, period=Period.parse(PERIOD), now=datetime.fromisoformat(NOW), offline=True)
    size = (project.outbox_dir / PERIOD / "en" / "index.html").stat().st_size
    print(f"issue {PERIOD}: en HTML {size / 1024:.1f} KB", flush=True)
    return project


def _subscribe(project: Project, count: int, directory: Path) -> float:
    """Import `count` subscribers from a CSV file (as a user would); returns seconds taken."""
    shutil.rmtree(project.state_dir, ignore_errors=True)
    csv_path = directory / f"subscribers-{count}.csv"
    if not csv_path.exists():
        lines = ["email,name,language"]
        lines += [f"reader{i:06d}@example.org,Reader {i},en" for i in range(count)]
        csv_path.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    with MailingList(project.state_dir / DB_NAME) as mailing_list:
        report = mailing_list.import_csv(csv_path)
    assert report.added == count, report
    return time.perf_counter() - started


class Sink:
    """Postfix's smtp-sink on a free loopback port (installed with apt-get when missing)."""

    def __init__(self) -> None:
        binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        if not Path(binary).exists():
            _install_postfix()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [binary, f"127.0.0.1:{self.port}", "256"]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "nobody"]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _install_postfix() -> None:
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("installing postfix (for smtp-sink) with apt-get ...", flush=True)
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


# measures


def _production(project: Project, count: int) -> dict[str, float]:
    config = load_config(project.root)
    started = time.perf_counter()
    issue = compile_issues(
        project, config, PERIOD, ["en"], SECRET.encode(), datetime.fromisoformat(NOW)
    )["en"]
    compile_time = time.perf_counter() - started
    recipients = [Recipient(f"reader{i:06d}@example.org", f"Reader {i}") for i in range(count)]
    size = 0
    started = time.perf_counter()
    for recipient in recipients:
        size += len(issue.render(recipient))
    rate = count / (time.perf_counter() - started)
    reference = _email_message_rate(project, 300)
    print(
        f"production: {rate:,.0f} messages/s over {count:,} recipients "
        f"(target ≥ {TARGET_PRODUCTION:,}); compile once {compile_time * 1000:.0f} ms; "
        f"average message {size / count / 1024:.1f} KB; EmailMessage per recipient "
        f"{reference:,.0f}/s",
        flush=True,
    )
    return {
        "messages_per_s": rate,
        "compile_ms": compile_time * 1000,
        "message_kb": size / count / 1024,
        "email_message_per_s": reference,
    }


def _email_message_rate(project: Project, count: int) -> float:
    """The naive way, for reference: one EmailMessage per recipient."""
    directory = project.outbox_dir / PERIOD / "en"
    html = (directory / "personal.html").read_text()
    text = (directory / "personal.txt").read_text()
    started = time.perf_counter()
    for i in range(count):
        values = {
            "nl-personal:greeting": f"Dear Reader {i},",
            "nl-personal:unsubscribe_url": f"https://example.org/unsubscribe/?token={i}",
            "nl-personal:view_url": "https://example.org/2026-11/en/",
        }
        body_html, body_text = html, text
        for marker, value in values.items():
            body_html = body_html.replace(marker, value)
            body_text = body_text.replace(marker, value)
        message = EmailMessage(policy=SMTP)
        message["From"] = Address("Digest", addr_spec="digest@example.org")
        message["To"] = Address(f"Reader {i}", addr_spec=f"reader{i}@example.org")
        message["Subject"] = "EU–Japan Research & Innovation Digest — November 2026"
        message.set_content(body_text, cte="quoted-printable")
        message.add_alternative(body_html, subtype="html", cte="quoted-printable")
        message.as_bytes()
    return count / (time.perf_counter() - started)


def _baseline(project: Project, port: int, count: int, connections: int) -> float:
    """A plain smtplib loop: sendmail() of one pre-built message, one thread per connection."""
    config = load_config(project.root)
    issue = compile_issues(
        project, config, PERIOD, ["en"], SECRET.encode(), datetime.fromisoformat(NOW)
    )["en"]
    message = issue.render(Recipient("reader@example.org", "Reader"))
    share = [
        count // connections + (1 if i < count % connections else 0) for i in range(connections)
    ]

    def loop(index: int, n: int) -> None:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            for i in range(n):
                smtp.sendmail("digest@example.org", [f"r{index}-{i}@example.org"], message)

    threads = [threading.Thread(target=loop, args=(i, n)) for i, n in enumerate(share)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count / (time.perf_counter() - started)


def _send(project: Project, work: Path, port: int, count: int, connections: int) -> float:
    _subscribe(project, count, work)
    env = {
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SMTP_SECURITY": "none",
        "NEWSLETTER_SECRET": SECRET,
    }
    started = time.perf_counter()
    report = send_issue(project, PERIOD, connections=connections, env=env)
    elapsed = time.perf_counter() - started
    assert report.sent == count and report.ok, report
    return count / elapsed


def _memory(work: Path, count: int, port: int, *, full: bool) -> dict[str, float]:
    """Peak RSS of the console script, each run in a fresh child process."""
    project = Project.at(work / "project")
    import_seconds = _subscribe(project, count, work)
    print(f"import of {count:,} subscribers from CSV: {import_seconds:.1f} s", flush=True)
    script = shutil.which("newsletter") or str(Path(sys.executable).parent / "newsletter")
    env = {
        **os.environ,
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SECRET": SECRET,
    }
    results: dict[str, float] = {"subscribers": count, "import_s": import_seconds}
    runs = [("dry_run", ["--dry-run"])]
    if full:
        runs.append(("send_2_connections", ["--connections", "2"]))
    for name, options in runs:
        code = (
            "import resource, subprocess, sys, time;"
            "t = time.perf_counter();"
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
            "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024;"
            "print(p.returncode, peak, time.perf_counter() - t);"
            "print(p.stdout[-400:], p.stderr[-400:], file=sys.stderr)"
        )
        command = [sys.executable, "-c", code, script, "-C", str(project.root), "send", PERIOD]
        done = subprocess.run([*command, *options], capture_output=True, text=True, env=env)
        returncode, peak, seconds = done.stdout.split()
        assert returncode == "0", done.stderr
        results[f"{name}_peak_mb"] = float(peak)
        results[f"{name}_s"] = float(seconds)
        print(
            f"memory, {name.replace('_', ' ')} of {count:,}: peak RSS {float(peak):.0f} MB in "
            f"{float(seconds):.0f} s (target < {TARGET_MEMORY_MB} MB)",
            flush=True,
        )
    return results


def _missed(results: dict) -> list[str]:
    missed = []
    if results["production"]["messages_per_s"] < TARGET_PRODUCTION:
        missed.append("production rate")
    for row in results["send"]:
        if row["ratio"] < TARGET_RATIO:
            missed.append(f"send ratio on {row['connections']} connection(s)")
    for key, value in results["memory"].items():
        if key.endswith("_peak_mb") and value >= TARGET_MEMORY_MB:
            missed.append(key)
    return missed


if __name__ == "__main__":
    sys.exit(main())
