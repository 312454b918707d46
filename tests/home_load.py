"""One home, many writers: the TUI (driven by Textual's Pilot in this process) beside CLI
processes that write the call log at the same time. Used by tests/test_home_load.py (seconds)
and bench/home_load.py (minutes, with figures).

What is checked while it runs and at the end:

* **no call lost**: every question the TUI answered and every result a CLI batch printed is in
  the call log, read by another process *while the TUI still runs* (a call the TUI wrote to a
  deleted WAL would be missing there);
* **no "disk I/O error"** nor "cannot read the call log" in any CLI's stderr or on the TUI's
  History screen;
* **no deleted SQLite file held** by the TUI's process (``/proc/self/fd``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BAD_WORDS = ("disk I/O error", "cannot read the call log", "database disk image is malformed",
             "internal error")


def deleted_sqlite_files_held() -> list[str]:
    """Open descriptors of this process that point at deleted SQLite files (db, -wal, -shm)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(" (deleted)") and any(
                x in target for x in (".db", ".sqlite", "-wal", "-shm")):
            held.append(target)
    return held


@dataclass
class Tally:
    """What every participant did and saw (filled from several threads)."""

    printed_ids: set[str] = field(default_factory=set)
    tui_questions: list[str] = field(default_factory=list)
    cli_runs: int = 0
    feedback: int = 0
    problems: list[str] = field(default_factory=list)
    deleted_held_max: int = 0
    visible_after_s: list[float] = field(default_factory=list)
    tui_lost: int = 0
    cli_lost: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


#: How a writer runs ``fscale ARGS`` (env, timeout) -> CompletedProcess; the tests set their
#: ``run_cli`` (a fork of the worker's preloaded fscale: less CPU beside the TUI, same files).
RUN_CLI: Any = None


def _cli(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    if RUN_CLI is not None:
        return RUN_CLI(*args, env={"FSCALE_HOME": str(home)}, timeout=timeout)  # type: ignore[no-any-return]
    env = dict(os.environ, FSCALE_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "fscale_tui", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def writer(home: Path, n: int, deadline: float, tally: Tally, items: int = 12) -> None:
    """One CLI writer: batches (every result logged), now and then history and feedback."""
    path = home.parent / f"writer{n}.jsonl"
    run = 0
    while time.monotonic() < deadline:
        path.write_text("".join(json.dumps({"question": f"writer {n} run {run} item {i}?",
                                            "id": f"w{n}-{run}-{i}"}) + "\n"
                                for i in range(items)))
        proc = _cli(home, "scale", "--batch", str(path), "-a", "YES,NO", "-q")
        ids = [json.loads(x)["id"] for x in proc.stdout.splitlines() if x.strip()]
        with tally.lock:
            tally.cli_runs += 1
            tally.printed_ids.update(ids)
        if proc.returncode != 0 or len(ids) != items:
            tally.problem(f"writer {n} batch exit {proc.returncode}: {proc.stderr[-300:]}")
        for word in BAD_WORDS:
            if word in proc.stderr:
                tally.problem(f"writer {n}: {word}: {proc.stderr[-300:]}")
        if run % 2 == 1 and ids:  # a reader (it may checkpoint the WAL) and a second writer
            for args in (("history", "-n", "5"), ("feedback", ids[0], "--confirm")):
                other = _cli(home, *args)
                if other.returncode != 0 or any(w in other.stderr for w in BAD_WORDS):
                    tally.problem(f"writer {n} {args[0]} exit {other.returncode}: "
                                  f"{other.stderr[-300:]}")
                elif args[0] == "feedback":
                    with tally.lock:
                        tally.feedback += 1
        run += 1


def logged_elsewhere(db: Path, column: str = "question", like: str = "tui %") -> set[str]:
    """Read the call log from another process (never from this one: a second descriptor of
    the file in the TUI's process is the very thing that must not matter)."""
    code = (f"import sqlite3, sys, json; c = sqlite3.connect(sys.argv[1], timeout=30); "
            f"print(json.dumps([r[0] for r in c.execute("
            f"\"SELECT {column} FROM calls WHERE {column} LIKE ?\", (sys.argv[2],))]))")
    out = subprocess.run([sys.executable, "-c", code, str(db), like], capture_output=True,
                         text=True, timeout=120, check=True)
    return set(json.loads(out.stdout))


async def tui_loop(pilot: Any, deadline: float, tally: Tally, db: Path) -> None:
    """Ask, wait for the decision, visit History now and then, check the descriptors."""
    app = pilot.app
    i = 0
    while time.monotonic() < deadline:
        question = f"tui question {i}?"
        screen = app.screen
        screen.query_one("#question").value = question
        screen.query_one("#answers").value = "YES,NO"
        screen.query_one("#question").focus()
        await pilot.press("enter")
        await _until(pilot, lambda: screen.current is not None and screen.current.is_finished,
                     120, "the TUI's call")
        tally.tui_questions.append(question)
        decided = time.monotonic()
        if i % 3 == 0:  # the call is visible to other processes while the TUI runs
            seen = logged_elsewhere(db)
            while question not in seen and time.monotonic() - decided < 30:
                await pilot.pause(0.2)
                seen = logged_elsewhere(db)
            if question in seen:
                tally.visible_after_s.append(time.monotonic() - decided)
            else:
                tally.problem(f"the TUI's {question!r} is not in the log 30 s after its decision")
        if i % 2 == 0:
            await pilot.press("f7")
            await _until(pilot, lambda: type(app.screen).__name__ == "HistoryScreen", 30,
                         "History")
            history = app.screen
            table = history.query_one("#history-table")
            await _until(pilot, lambda: table.row_count > 0 or "cannot" in _note(history), 30,
                         "History rows")
            if any(w in _note(history) for w in BAD_WORDS):
                tally.problem(f"History: {_note(history)}")
            await pilot.press("f2")
            await _until(pilot, lambda: type(app.screen).__name__ == "AskScreen", 30, "Ask")
        held = deleted_sqlite_files_held()
        tally.deleted_held_max = max(tally.deleted_held_max, len(held))
        if held:
            tally.problem(f"the TUI holds deleted files: {held}")
        i += 1


def _note(screen: Any) -> str:
    return str(screen.query_one("#history-note").render())


async def _until(pilot: Any, predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def run(home: Path, seconds: float, writers: int = 4) -> Tally:
    """The TUI and ``writers`` CLI writers on ``home`` for ``seconds``; then every check."""
    from fscale_tui.app import FscaleApp

    tally = Tally()
    db = home / "data" / "learning.db"
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=writer, args=(home, n, deadline, tally), daemon=True)
               for n in range(writers)]
    app = FscaleApp()
    async with app.run_test(size=(110, 32)) as pilot:
        for t in threads:
            t.start()
        await tui_loop(pilot, deadline, tally, db)
        while any(t.is_alive() for t in threads):
            await pilot.pause(0.2)
        # Still running: everything the TUI answered is in the log for other processes.
        missing = set(tally.tui_questions) - logged_elsewhere(db)
        tally.tui_lost = len(missing)
        if missing:
            tally.problem(f"{len(missing)} TUI calls not in the log while it runs: "
                          f"{sorted(missing)[:5]}")
        held = deleted_sqlite_files_held()
        if held:
            tally.problem(f"the TUI holds deleted files at the end: {held}")
    ids = logged_elsewhere(db, "id", "%")
    lost = tally.printed_ids - ids
    tally.cli_lost = len(lost)
    if lost:
        tally.problem(f"{len(lost)} printed CLI results are not in the log: {sorted(lost)[:5]}")
    return tally
