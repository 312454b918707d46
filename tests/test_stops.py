"""Stops are recoverable: SIGTERM is handled like Ctrl-C (nothing new sent, the call-log
writer drained, one line, exit 143 / 130), and ``--batch FILE --resume OUT`` finishes a stopped
batch so that OUT holds every item once. Real processes, real signals, the loopback server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fscale_tui.engine.learning.store import LearningStore
from tests.conftest import REPO, Behaviour, read_rest, run_cli, write_config

N = 300


def _items(path: Path, n: int = N) -> Path:
    path.write_text("".join(json.dumps({"question": f"What is 6*7 ({i})?", "id": f"item-{i}"})
                            + "\n" for i in range(n)))
    return path


def _logged_ids(home: Path) -> set[str]:
    with LearningStore(home / "data" / "learning.db") as store:
        return {row[0] for row in store.conn.execute("SELECT id FROM calls")}


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def start_batch(home: Path, out: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, FSCALE_HOME=str(home))
    with open(out, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "fscale_tui", *args], cwd=REPO, env=env,
                                stdout=fh, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True)


def stop_after(proc: subprocess.Popen, out: Path, lines: int, sig: int,
               timeout: float = 120) -> tuple[int, str]:
    """Send ``sig`` once ``out`` has at least ``lines`` lines; -> (exit code, stderr)."""
    deadline = time.monotonic() + timeout
    while out.read_bytes().count(b"\n") < lines:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the batch ended or stalled before {lines} lines: "
                                 f"{proc.communicate()[1]}")
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_a_stopped_batch_logs_every_printed_line_and_resume_finishes_it(
        server, fscale_home, tmp_path, sig, code, word):
    write_config(fscale_home, server)
    server.set_default(Behaviour(reply="YES", latency=0.02))
    items = _items(tmp_path / "items.jsonl")
    out = tmp_path / "out.jsonl"
    proc = start_batch(fscale_home, out, "scale", "--batch", str(items), "-a", "YES,NO",
                       "--concurrency", "8", "-q")
    rc, err = stop_after(proc, out, 40, sig)
    assert rc == code, err
    assert err.strip().count("\n") == 0 and err.startswith(f"fscale: {word}: "), err
    assert f"of {N} items done" in err and "--resume" in err
    printed = _lines(out)
    assert 40 <= len(printed) < N
    assert {x["id"] for x in printed} <= _logged_ids(fscale_home)  # every printed line is logged
    sent = server.count()
    # --resume runs only the rest and appends it: every item once.
    proc = run_cli("scale", "--batch", str(items), "-a", "YES,NO", "--resume", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # the results went to OUT
    assert f"{len(printed)} of {N} items already done" in proc.stderr
    final = _lines(out)
    assert sorted(x["item_id"] for x in final) == sorted(f"item-{i}" for i in range(N))
    assert {x["index"] for x in final} == set(range(N))
    assert server.count() - sent <= 3 * (N - len(printed))  # nothing done twice
    assert {x["id"] for x in final} <= _logged_ids(fscale_home)


def test_resume_cuts_a_half_written_line_and_runs_that_item_again(server, fscale_home, tmp_path):
    write_config(fscale_home, server)
    server.set_default(Behaviour(reply="YES"))
    items = _items(tmp_path / "items.jsonl", 6)
    out = tmp_path / "out.jsonl"
    first = run_cli("scale", "--batch", str(items), "-a", "YES,NO")
    lines = first.stdout.splitlines()
    out.write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])  # killed mid-line
    proc = run_cli("scale", "--batch", str(items), "-a", "YES,NO", "--resume", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "3 of 6 items already done (a half-written last line was cut off)" in proc.stderr
    assert sorted(x["item_id"] for x in _lines(out)) == [f"item-{i}" for i in range(6)]


def test_generate_batch_resumes_too_and_resume_needs_a_batch(server, fscale_home, tmp_path):
    write_config(fscale_home, server)
    server.set_default(Behaviour(reply="The answer is 42."))
    items = _items(tmp_path / "items.jsonl", 5)
    out = tmp_path / "out.jsonl"
    done = run_cli("generate", "--batch", str(items), "-s", "vote", "-k", "2")
    out.write_text("".join(x + "\n" for x in done.stdout.splitlines()[:2]))
    sent = server.count()
    proc = run_cli("generate", "--batch", str(items), "-s", "vote", "-k", "2", "--resume",
                   str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(x["item_id"] for x in _lines(out)) == [f"item-{i}" for i in range(5)]
    assert {x["status"] for x in _lines(out)} == {"decided"}
    assert server.count() - sent == 3 * 2
    assert "item 4:" in proc.stderr and "item 0:" not in proc.stderr  # places in the file
    bad = run_cli("scale", "q?", "-a", "YES,NO", "--resume", str(out))
    assert bad.returncode == 2 and "--resume finishes a --batch" in bad.stderr


def test_sigterm_during_one_call_is_one_line_and_143(server, fscale_home, tmp_path):
    write_config(fscale_home, server)
    server.set_default(Behaviour(reply="YES", latency=30))
    env = dict(os.environ, FSCALE_HOME=str(fscale_home))
    proc = subprocess.Popen([sys.executable, "-m", "fscale_tui", "scale", "q?", "-a", "YES,NO"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    while server.count() < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and out == ""
    assert [x for x in err.splitlines() if x.startswith("fscale:")] == ["fscale: terminated"], err


def test_sigterm_quits_the_tui_like_ctrl_q_with_143(server, fscale_home):
    """The TUI on a real pseudo-terminal: SIGTERM restores the terminal, closes the engine and
    exits 143 with one line (it used to die at once, or raise inside the UI loop)."""
    import pty
    import select

    write_config(fscale_home, server)
    master, slave = pty.openpty()
    env = dict(os.environ, FSCALE_HOME=str(fscale_home), TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-m", "fscale_tui", "tui"], cwd=REPO, env=env,
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"Question" not in seen and time.monotonic() < deadline:  # the Ask screen is drawn
            if select.select([master], [], [], 0.1)[0]:
                seen += os.read(master, 65536)
        proc.send_signal(signal.SIGTERM)
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        code = proc.wait(timeout=30)
        seen += read_rest(master, 0.2)  # what it wrote on its way out
    finally:
        os.close(master)
    assert code == 143
    assert b"fscale: terminated" in seen
    assert b"\x1b[?1049l" in seen  # the alternate screen was left: the terminal is restored
