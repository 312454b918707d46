"""Hostile and broken homes: every file and folder private, no link followed, and a read-only,
full or blocked home gives one clear line and a documented exit code (never "internal error"),
each warning once — with real file systems: a read-only bind mount and a small full tmpfs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fscale_tui.engine.learning.store import LearningStore
from tests.conftest import Behaviour, mid, run_cli, write_config


def _can_mount() -> bool:
    """Mounting needs root (or a user namespace); the tests that need it say so when skipped."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    where = tempfile.mkdtemp(prefix="fscale-mount-probe-")
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", where],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", where], capture_output=True)
        return ok
    finally:
        os.rmdir(where)


CAN_MOUNT = _can_mount()
needs_mount = pytest.mark.skipif(not CAN_MOUNT, reason="mounting a read-only bind or a tmpfs "
                                                       "needs root (mount(8) was refused)")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.strip()]


def _assert_each_once(stderr: str) -> None:
    lines = [x for x in _lines(stderr) if x.startswith("fscale:")]
    assert len(lines) == len(set(lines)), stderr


@pytest.fixture
def populated(server, fscale_home: Path) -> Path:
    """A home with a config (rpm: the send record is used), a call log and a batch file."""
    write_config(fscale_home, server, rpm=6000)
    server.set_default(Behaviour(reply="YES"))
    proc = run_cli("scale", "q?", "-a", "YES,NO", "--json")
    assert proc.returncode == 0, proc.stderr
    (fscale_home.parent / "items.jsonl").write_text(
        "".join(json.dumps({"question": f"q{i}?", "id": f"i{i}"}) + "\n" for i in range(20)))
    return fscale_home


@contextlib.contextmanager
def _mounted(args: list[str], target: Path) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(args + [str(target)], check=True, capture_output=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextlib.contextmanager
def read_only_home(home: Path) -> Iterator[Path]:
    """``home`` seen through a read-only bind mount (as on a read-only volume)."""
    target = home.parent / "ro-home"
    with _mounted(["mount", "--bind", str(home)], target):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True,
                       capture_output=True)
        yield target


@contextlib.contextmanager
def full_home(home: Path) -> Iterator[Path]:
    """A copy of ``home`` on a small tmpfs that is then filled to the last block."""
    target = home.parent / "full-home"
    with _mounted(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=400", "tmpfs"], target):
        for item in ("config.toml", "data"):
            src = home / item
            if src.is_dir():
                shutil.copytree(src, target / item)
            else:
                shutil.copy2(src, target / item)
        with open(target / "filler", "wb", buffering=0) as fh:
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 4096)
        yield target


# -- finding 10: private files and folders, no link followed --------------------------------------
def test_every_file_and_folder_a_run_creates_is_private(server, fscale_home, tmp_path):
    """profile (data/routing/profiles.jsonl), the send record (state/ratelimit.sqlite3), the call
    log, health: every folder 0700 — parents included — and every file 0600."""
    write_config(fscale_home, server, rpm=6000)
    server.set_default(Behaviour(reply="YES"))
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "question": f"Is {i} even?",
                                         "answers": ["YES", "NO"], "label": "YES"}) + "\n"
                             for i in range(4)))
    old = os.umask(0o022)  # the usual umask: anything not created private shows as 0644/0755
    try:
        for args in (("profile", str(tasks), "--models", "fast-a", "-q"),
                     ("scale", "q?", "-a", "YES,NO", "-q"), ("health",)):
            proc = run_cli(*args)
            assert proc.returncode == 0, (args, proc.stderr)
    finally:
        os.umask(old)
    made = sorted(fscale_home.rglob("*"))
    assert fscale_home / "data" / "routing" / "profiles.jsonl" in made
    assert fscale_home / "state" / "ratelimit.sqlite3" in made
    for path in made:
        if path.name == "config.toml":
            continue  # written by the test
        want = 0o700 if path.is_dir() else 0o600
        assert _mode(path) == want, (str(path.relative_to(fscale_home)), oct(_mode(path)))


def test_a_learning_db_link_is_refused_never_followed(server, stub_config, fscale_home, tmp_path):
    """Another user's file behind a ``learning.db`` link stays untouched: the call is answered
    with one warning, and reading the log is exit 2 naming the link."""
    victim = tmp_path / "someone-elses.db"
    conn = sqlite3.connect(victim)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    before = victim.read_bytes()
    (fscale_home / "data").mkdir(mode=0o700)
    (fscale_home / "data" / "learning.db").symlink_to(victim)
    server.set_default(Behaviour(reply="YES"))
    proc = run_cli("scale", "q?", "-a", "YES,NO")
    assert proc.returncode == 0 and proc.stdout.strip() == "YES", proc.stderr
    assert victim.read_bytes() == before
    warned = [x for x in _lines(proc.stderr) if "call log cannot be written" in x]
    assert len(warned) == 1 and "symbolic link" in warned[0], proc.stderr
    history = run_cli("history")
    assert history.returncode == 2, history.stderr
    assert _lines(history.stderr) == [history.stderr.strip()]
    assert "learning.db" in history.stderr and "symbolic link" in history.stderr
    assert "internal error" not in history.stderr
    assert victim.read_bytes() == before and not (tmp_path / "someone-elses.db-wal").exists()


def test_a_state_file_link_is_moved_aside_not_written_through(server, stub_config, fscale_home,
                                                              tmp_path):
    victim = tmp_path / "notes.json"
    victim.write_text('{"keep": "me"}')
    (fscale_home / "state").mkdir(mode=0o700)
    (fscale_home / "state" / "health.json").symlink_to(victim)
    server.script(mid("fast-b"), Behaviour(status=410))
    proc = run_cli("health")
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == '{"keep": "me"}'
    health = fscale_home / "state" / "health.json"
    assert not health.is_symlink() and json.loads(health.read_text())["fast-b"]["status"] == "dead"
    assert sum("symbolic link" in x for x in _lines(proc.stderr)) == 1, proc.stderr


# -- finding 9: read-only, full and blocked homes -------------------------------------------------
def test_every_state_warning_is_printed_once(server, stub_config, fscale_home):
    (fscale_home / "state").mkdir(mode=0o700)
    (fscale_home / "state" / "health.json").write_text("{broken")
    server.set_default(Behaviour(reply="YES"))
    proc = run_cli("scale", "q?", "-a", "YES,NO")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("could not be read") == 1, proc.stderr


def _check_blocked_home(home: Path, items: Path, why: str) -> None:
    """What every home that cannot be written must do (``why``: the words for the reason)."""
    env = {"FSCALE_HOME": str(home)}
    # Reading works (the log is opened read-only).
    for args in (("history",), ("ratings",), ("evolve",)):
        proc = run_cli(*args, env=env)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "internal error" not in proc.stderr
    assert "q?" in run_cli("history", env=env).stdout
    # Writing is one line and exit 2.
    for args in (("feedback", "#1", "--confirm"), ("panels", "set", "mine", "fast-a,fast-b"),
                 ("evolve", "--apply", "--min-calls", "0", "--size", "2")):
        proc = run_cli(*args, env=env)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        errors = _lines(proc.stderr)
        assert len([x for x in errors if x.startswith("fscale: error:")]) == 1, (args, proc.stderr)
        assert why in proc.stderr and "internal error" not in proc.stderr, (args, proc.stderr)
    # A batch answers every item and says once that nothing was logged.
    proc = run_cli("scale", "--batch", str(items), "-a", "YES,NO", env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(_lines(proc.stdout)) == 20
    assert sum("call log cannot be written" in x for x in _lines(proc.stderr)) == 1, proc.stderr
    assert sum("cannot be written" in x for x in _lines(proc.stderr)) <= 2, proc.stderr
    _assert_each_once(proc.stderr)
    # A health verdict that cannot be stored is said, once.
    proc = run_cli("health", env=env)
    assert proc.returncode in (0, 4), proc.stderr
    assert sum("cannot be written" in x for x in _lines(proc.stderr)) == 1, proc.stderr
    _assert_each_once(proc.stderr)


@needs_mount
def test_a_read_only_home(server, populated):
    server.script(mid("fast-b"), Behaviour(status=410))  # a verdict health wants to store
    with read_only_home(populated) as home:
        _check_blocked_home(home, populated.parent / "items.jsonl", "read-only")


@needs_mount
def test_a_full_home(server, populated):
    server.script(mid("fast-b"), Behaviour(status=410))
    with full_home(populated) as home:
        _check_blocked_home(home, populated.parent / "items.jsonl", "the disk is full")


def test_a_file_where_a_folder_should_be(server, populated):
    """Root ignores permission bits, but not a file in the way of the state folder: no state
    can be written under it, and that is one warning, not a crash."""
    shutil.rmtree(populated / "state", ignore_errors=True)
    (populated / "state").write_text("not a folder")
    server.script(mid("fast-b"), Behaviour(status=410))
    proc = run_cli("scale", "--batch", str(populated.parent / "items.jsonl"), "-a", "YES,NO")
    assert proc.returncode == 0, proc.stderr
    assert len(_lines(proc.stdout)) == 20
    assert sum("a file is in the way of a folder" in x for x in _lines(proc.stderr)) == 1, \
        proc.stderr
    _assert_each_once(proc.stderr)
    with LearningStore(populated / "data" / "learning.db") as store:
        assert store.count() == 21  # the call log is elsewhere and still written


# -- by construction: one helper creates the home's files -----------------------------------------
#: Calls that create or open files for writing, and the places allowed to make them outside
#: engine/storage.py (with why: neither writes into fscale's home).
_CREATORS = r"\.mkdir\(|os\.makedirs|os\.mkdir|os\.open\(|mkstemp|NamedTemporaryFile|" \
            r"sqlite3\.connect|\.write_text\(|\.write_bytes\(|open\([^)]*['\"](w|a|x|r\+)"
_ALLOWED = {
    ("fscale_tui/engine/routing/mmlu.py", "out.mkdir(parents=True, exist_ok=True)"):
        "the output folder the user names for an exported task set, not the home",
    ("fscale_tui/cli/common.py", "devnull = os.open(os.devnull, os.O_WRONLY)"):
        "/dev/null in place of a closed stdout",
    ("fscale_tui/cli/common.py", 'return os.fdopen(data, "w", encoding="utf-8")'):
        "a duplicate of this process's stdout (the results of --batch --ray)",
    ("fscale_tui/cli/resume.py",
     'self._stream = open(self.path, "a", encoding="utf-8")  # the user\'s output file'):
        "the user's --resume output file (results are appended to it), not the home",
}


def test_only_the_storage_module_creates_files_and_folders():
    import re

    from tests.conftest import REPO

    found = []
    for path in sorted((REPO / "fscale_tui").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel == "fscale_tui/engine/base/storage.py":
            continue
        for line in path.read_text().splitlines():
            if re.search(_CREATORS, line) and (rel, line.strip()) not in _ALLOWED:
                found.append(f"{rel}: {line.strip()}")
    assert found == [], "create files and folders through engine/base/storage.py:\n" + "\n".join(found)
