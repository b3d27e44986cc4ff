"""Crash safety: the installed `newsletter` script, killed with SIGKILL in the middle of a send,
then run again. Every subscriber must end up with the issue exactly once, except the messages
that were in flight at the moment of the kill (at most one per connection), which the next run
sends again: the server may have taken them before the ledger could say so.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from smtpserver import PERIOD, SmtpServer, built_project

SUBSCRIBERS = 2000


def _console_script() -> str:
    beside = Path(sys.executable).parent / "newsletter"
    found = str(beside) if beside.exists() else shutil.which("newsletter")
    if not found:
        pytest.skip("the newsletter console script is not installed (pip install -e .)")
    return found


@pytest.mark.parametrize("connections", [1, 2])
def test_sigkill_mid_send_then_resume(tmp_path: Path, connections: int) -> None:
    project = built_project(tmp_path / "project")
    csv_path = tmp_path / "subscribers.csv"
    rows = [
        f"reader{i:05d}@example.org,Reader {i},{'ja' if i % 4 == 0 else 'en'}"
        for i in range(SUBSCRIBERS)
    ]
    csv_path.write_text("email,name,language\n" + "\n".join(rows) + "\n", encoding="utf-8")
    script = _console_script()
    base = [script, "-C", str(project.root)]
    imported = subprocess.run(
        [*base, "subscribers", "import", str(csv_path)], capture_output=True, text=True, timeout=120
    )
    assert imported.returncode == 0, imported.stderr
    addresses = {f"reader{i:05d}@example.org" for i in range(SUBSCRIBERS)}
    command = [*base, "send", PERIOD, "--connections", str(connections)]

    with SmtpServer() as server:
        env = {**os.environ, **server.env()}
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            reached = server.recorder.wait_for(SUBSCRIBERS // 3, timeout=240)
        finally:
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
        assert reached, "the first run did not get a third of the way"
        assert process.returncode == -signal.SIGKILL
        time.sleep(0.2)  # let the server finish with connections cut mid-message
        before_resume = len(server.recorder.messages)
        assert before_resume < SUBSCRIBERS, "the kill came too late to test anything"

        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        counts = dict(server.counts)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert set(counts) == addresses, "somebody was skipped"
    duplicates = {address: n for address, n in counts.items() if n > 1}
    assert all(n == 2 for n in duplicates.values())
    assert len(duplicates) <= connections, duplicates
    sent_now = int(resumed.stdout.split("sent ", 1)[1].split(",", 1)[0])
    assert sent_now == SUBSCRIBERS - before_resume + len(duplicates)
    if duplicates:
        assert "in flight when an earlier run stopped" in resumed.stderr
    with sqlite3.connect(project.state_dir / "mailing.sqlite3") as db:
        states = dict(db.execute("SELECT state, count(*) FROM deliveries GROUP BY state"))
    assert states == {"sent": SUBSCRIBERS}


def test_ctrl_c_stops_cleanly_and_the_next_run_finishes(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C): the workers finish and record the message in hand, so nothing is in
    doubt and nobody gets the issue twice; the summary so far is printed, exit 130."""
    project = built_project(tmp_path / "project")
    count = 600
    csv_path = tmp_path / "subscribers.csv"
    rows = [f"reader{i:05d}@example.org,,en" for i in range(count)]
    csv_path.write_text("email,name,language\n" + "\n".join(rows) + "\n", encoding="utf-8")
    base = [_console_script(), "-C", str(project.root)]
    subprocess.run([*base, "subscribers", "import", str(csv_path)], check=True, timeout=120)
    command = [*base, "send", PERIOD, "--connections", "2"]
    with SmtpServer() as server:
        env = {**os.environ, **server.env()}
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert server.recorder.wait_for(count // 4, timeout=240)
        finally:
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert err.splitlines()[-1] == "interrupted" and "Traceback" not in err
        with sqlite3.connect(project.state_dir / "mailing.sqlite3") as db:
            states = dict(db.execute("SELECT state, count(*) FROM deliveries GROUP BY state"))
        assert "sending" not in states
        sent = len(server.recorder.messages)
        assert states["sent"] == sent < count
        # the summary so far: what was sent, and that the rest was not reached
        assert f"sent {sent}, failed 0, pending 0, skipped 0, not reached {count - sent}" in out
        assert "in flight" not in err
        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        counts = dict(server.counts)
    assert resumed.returncode == 0, resumed.stderr
    assert "in flight" not in resumed.stderr
    assert len(counts) == count and set(counts.values()) == {1}
