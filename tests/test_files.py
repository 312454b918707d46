"""Files on disk: private modes, temp files of killed writers, a corrupt call log, the text cap."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap

from fscale_tui.engine.base import storage
from fscale_tui.engine.catalog.config import update_user_config
from fscale_tui.engine.learning.store import TEXT_CAP_BYTES, CallRecord, LearningStore, ReplyRecord
from fscale_tui.engine.base.paths import Paths
from tests.conftest import REPO, Behaviour, mid, run_cli


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_config_state_and_database_files_are_private(server, stub_config, fscale_home):
    server.script(mid("fast-b"), Behaviour(status=410))
    proc = run_cli("scale", "q?", "-a", "YES,NO", "--models", "fast-a,fast-b", "--json")
    assert proc.returncode in (0, 3), proc.stderr
    update_user_config(Paths.resolve(), lambda doc: doc["panels"].__setitem__("two", ["fast-a"]))
    for path in (fscale_home / "config.toml", fscale_home / "state" / "health.json",
                 fscale_home / "data" / "learning.db"):
        assert path.exists() and _mode(path) == 0o600, (path, oct(_mode(path)))
    for path in (fscale_home / "state", fscale_home / "data"):
        assert _mode(path) == 0o700, path
    for path in fscale_home.rglob("*"):
        if path.is_file():
            assert not _mode(path) & 0o077, path  # locks, -wal and -shm files too


def test_an_old_world_readable_database_is_made_private(fscale_home):
    db = fscale_home / "data" / "learning.db"
    db.parent.mkdir()
    sqlite3.connect(db).close()
    os.chmod(db, 0o644)
    with LearningStore(db) as store:
        assert store.count() == 0
    assert _mode(db) == 0o600


def test_temp_files_of_a_killed_writer_are_removed_on_the_next_write(tmp_path):
    tmp_path = tmp_path / "dir"
    tmp_path.mkdir()
    target = tmp_path / "state.json"
    # A writer that dies (SIGKILL) between creating its temp file and the rename.
    code = textwrap.dedent(f"""
        import os, signal, tempfile
        from pathlib import Path
        from fscale_tui.engine.base import storage
        path = Path({str(target)!r})
        fd, tmp = tempfile.mkstemp(prefix=storage._temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.write(fd, b"half a write")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO)
    assert proc.returncode == -9
    leftovers = list(tmp_path.glob(".state.json.*.tmp"))
    assert len(leftovers) == 1
    # A live writer's temp file (this test process's parent is alive) must not be touched.
    live = tmp_path / f".state.json.{os.getppid()}.abcd.tmp"
    live.write_text("in progress")
    storage.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert not leftovers[0].exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "state.json"])


def test_a_corrupt_learning_db_is_moved_aside_and_a_fresh_one_started(server, stub_config, fscale_home):
    db = fscale_home / "data" / "learning.db"
    db.parent.mkdir()
    db.write_bytes(b"this is not a database\n" * 200)
    proc = run_cli("history")
    assert proc.returncode == 0, proc.stderr
    assert "could not be read" in proc.stderr and "moved aside" in proc.stderr
    assert "internal error" not in proc.stderr
    aside = list(db.parent.glob("learning.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    # Learning goes on in the fresh file.
    proc = run_cli("scale", "q?", "-a", "YES,NO", "-k", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    with LearningStore(db) as store:
        assert store.count() == 1
    for args in (("ratings",), ("feedback", json.loads(proc.stdout)["id"], "--confirm")):
        assert run_cli(*args).returncode == 0, args


def test_stored_text_is_capped_with_hash_and_length(fscale_home):
    context = "é" * (20 * 1024 * 1024 // 2)  # 20 MB of UTF-8
    raw = "x" * (TEXT_CAP_BYTES + 10)
    with LearningStore(fscale_home / "data" / "learning.db") as store:
        store.record_call(CallRecord(id="c1", question="short?", context=context, labels=["YES", "NO"],
                                     answer="YES", replies=[ReplyRecord(model="m", answer="YES", raw=raw)]))
        call = store.get("c1")
    assert call["question"] == "short?"
    stored = call["context"]
    assert context.startswith(stored) and len(stored.encode()) <= TEXT_CAP_BYTES
    assert len(stored.encode()) > TEXT_CAP_BYTES - 4  # cut at a character boundary, not earlier
    info = call["extra"]["truncated"]
    assert info["context"]["chars"] == len(context)
    assert info["context"]["bytes"] == len(context.encode())
    import hashlib
    assert info["context"]["sha256"] == hashlib.sha256(context.encode()).hexdigest()
    assert call["replies"][0]["raw"] == raw[:TEXT_CAP_BYTES] and "replies[0].raw" in info
    assert "question" not in info
    assert (fscale_home / "data" / "learning.db").stat().st_size < 1024 * 1024


def _damaged_db(path) -> None:
    """A real call log whose header is fine but whose pages are overwritten (a torn disk write)."""
    with LearningStore(path) as store:
        for i in range(300):
            store.record_call(CallRecord(id=f"c{i}", question="q" * 2000, labels=["A", "B"], answer="A",
                                         replies=[ReplyRecord(model="m", answer="A")]))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    data[4096 * 3: 4096 * 40] = b"A" * (4096 * 37)
    path.write_bytes(bytes(data))


def test_a_damaged_page_is_found_when_writing_and_a_fresh_log_started(fscale_home):
    db = fscale_home / "data" / "learning.db"
    db.parent.mkdir()
    _damaged_db(db)
    storage.warnings.clear()
    with LearningStore(db) as store:
        store.record_call(CallRecord(id="new", question="q?", labels=["A", "B"], answer="A",
                                     replies=[ReplyRecord(model="m", answer="A")]))
        assert store.count() == 1 and store.get("new")["answer"] == "A"
    assert len(list(db.parent.glob("learning.db.corrupt-*"))) == 1
    assert any("moved aside" in w for w in storage.warnings)


def test_a_damaged_page_found_by_a_reading_command_is_one_line_and_moved_aside(fscale_home):
    db = fscale_home / "data" / "learning.db"
    db.parent.mkdir()
    _damaged_db(db)
    proc = run_cli("history", "-n", "500")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "call log is damaged" in proc.stderr and "moved aside" in proc.stderr
    assert len(list(db.parent.glob("learning.db.corrupt-*"))) == 1
    proc = run_cli("history")
    assert proc.returncode == 0, proc.stderr
