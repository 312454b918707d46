"""The call log + ratings database: records, feedback, privacy, several writer processes."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.base.errors import ExitCode, UsageError
from fscale_tui.engine.learning import ratings as R
from fscale_tui.engine.learning.store import CallRecord, LearningStore, ReplyRecord


def call(call_id: str, answers: dict[str, str | None], *, challenger: tuple[str, str] | None = None,
         decided: str | None = "YES", question: str = "Is it safe?") -> CallRecord:
    replies = [ReplyRecord(model=m, answer=a, status="answered" if a else "no_answer",
                           raw=f"raw {m}: Answer: {a}", latency_s=0.1) for m, a in answers.items()]
    if challenger:
        replies.append(ReplyRecord(model=challenger[0], role="challenger", answer=challenger[1],
                                   raw="shadow", latency_s=0.2))
    return CallRecord(id=call_id, question=question, context="SECRET-CONTEXT", labels=["YES", "NO"],
                      members=list(answers), answer=decided, replies=replies)


@pytest.fixture
def store(fscale_home):
    with LearningStore.for_settings(load_settings()) as s:
        yield s


def test_record_and_read_back_a_call(store, fscale_home):
    store.record_call(call("c1", {"a": "YES", "b": "YES", "c": "NO"}, challenger=("d", "YES")))
    assert (fscale_home / "data" / "learning.db").exists()
    item = store.get("c1")
    assert item["question"] == "Is it safe?" and item["context"] == "SECRET-CONTEXT"
    assert item["question_hash"] and item["context_hash"]
    roles = {(r["role"], r["model"], r["answer"]) for r in item["replies"]}
    assert ("challenger", "d", "YES") in roles and ("member", "c", "NO") in roles
    assert [r["raw"] for r in item["replies"]][0] == "raw a: Answer: YES"
    assert store.recent(5)[0]["id"] == "c1"
    table = store.ratings()
    assert table["c"].rating < R.BASE and table["c"].disagree == 1
    assert table["d"].calls == 1  # the challenger earns evidence like a member
    assert store.history(["c"])["c"][-1][1] == pytest.approx(table["c"].rating)


def test_hashes_only_when_text_is_not_kept(store):
    store.record_call(call("c1", {"a": "YES", "b": "YES"}), keep_text=False)
    item = store.get("c1")
    assert item["question"] is None and item["context"] is None
    assert item["question_hash"] and item["context_hash"]
    assert all(r["raw"] is None and r["thinking"] is None for r in item["replies"])
    db = store.path.read_bytes() + b"".join(p.read_bytes() for p in store.path.parent.glob("*-wal"))
    assert b"SECRET-CONTEXT" not in db and b"Is it safe?" not in db


def test_unknown_id_is_a_usage_error(store):
    with pytest.raises(UsageError, match="no call with id") as info:
        store.add_feedback("nope", "confirm")
    assert info.value.exit_code == ExitCode.USAGE_ERROR
    with pytest.raises(UsageError):
        store.get("nope")


def test_feedback_reaches_every_replier_including_the_challenger_and_is_logged(store):
    store.record_call(call("c1", {"a": "YES", "b": "YES", "c": "NO"}, challenger=("d", "NO")))
    before = store.ratings()
    out = store.add_feedback("c1", "reject")  # two labels: NO was right
    assert out["truth"] == "NO"
    after = store.ratings()
    for m in "cd":
        assert after[m].rating > before[m].rating and after[m].feedback == 1
    for m in "ab":
        assert after[m].rating < before[m].rating
    assert store.get("c1")["feedback"][0]["kind"] == "reject"
    assert store.recent(1)[0]["feedback"] == ["reject"]


def test_feedback_kinds(store):
    store.record_call(call("c1", {"a": "YES", "b": "NO", "c": "YES"}))
    assert store.add_feedback("c1", "override", label="no")["truth"] == "NO"
    out = store.add_feedback("c1", "prefer", prefer="b")
    assert out["pairs"] == [["b", "a"], ["b", "c"]] and out["changes"]["b"] > 0
    out = store.add_feedback("c1", "prefer", prefer="a", over="b")
    # The second preference replaces the first: pairs are zero-sum, so the net change is too.
    assert out["replaced"]["prefer"] == "b" and out["changes"]["a"] > 0
    assert sum(out["changes"].values()) == pytest.approx(0, abs=1e-2)
    with pytest.raises(UsageError, match="not one of the call's labels"):
        store.add_feedback("c1", "override", label="MAYBE")
    with pytest.raises(UsageError, match="did not reply"):
        store.add_feedback("c1", "prefer", prefer="zz")
    store.record_call(call("c2", {"a": "YES", "b": "NO"}, decided=None))
    with pytest.raises(UsageError, match="no decision"):
        store.add_feedback("c2", "confirm")


def test_feedback_counts_more_than_consensus(store):
    for i in range(4):
        store.record_call(call(f"c{i}", {"a": "YES", "b": "YES", "c": "NO"}))
    consensus_loss = R.BASE - store.ratings()["c"].rating
    store.add_feedback("c0", "reject")
    table = store.ratings()
    assert table["c"].rating - (R.BASE - consensus_loss) > consensus_loss * 0.9


def test_repeated_call_ids_are_kept_and_never_picked_silently(store):
    store.record_call(call("same", {"a": "YES", "b": "YES"}, question="first"))
    store.record_call(call("same", {"a": "NO", "b": "NO"}, question="second", decided="NO"))
    assert store.count() == 2
    with pytest.raises(UsageError, match="logged 2 times: name one of #1, #2"):
        store.get("same")
    assert store.get("#1")["question"] == "first" and store.get("#2")["question"] == "second"


def test_other_call_kinds_are_logged_without_moving_ratings(fscale_home):
    from fscale_tui.engine.base.background import BackgroundWriter
    from fscale_tui.engine.learning.service import CallLog

    settings = load_settings()
    writer = BackgroundWriter()
    CallLog(settings, writer).record(CallRecord(
        id="g1", kind="generate", question="Write a haiku", answer="cand 2",
        replies=[ReplyRecord("a", role="candidate", raw="x"),
                 ReplyRecord("b", role="judge", answer="2")]), learn=False)
    writer.close()
    with LearningStore.for_settings(settings) as store:
        item = store.get("g1")
        assert item["kind"] == "generate" and len(item["replies"]) == 2
        assert store.ratings() == {}  # generate calls do not move ratings by default


def _writer(home: str, worker: int, n: int) -> None:
    import os

    os.environ["FSCALE_HOME"] = home
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.learning.store import LearningStore

    with LearningStore.for_settings(load_settings()) as store:
        for i in range(n):
            store.record_call(call(f"w{worker}-{i}", {"a": "YES", "b": "YES", "c": "NO"},
                                   challenger=(f"ch{worker}", "YES")))
            if i % 10 == 0:
                store.add_feedback(f"w{worker}-{i}", "confirm")


def test_concurrent_processes_lose_no_call_and_no_rating_update(fscale_home):
    workers, n = 6, 60
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(fscale_home), w, n)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with LearningStore.for_settings(load_settings()) as store:
        assert store.count() == workers * n
        table = store.ratings()
        # Every call's games landed: counters add up exactly across processes.
        for m in "abc":
            assert table[m].calls == workers * n
        assert table["c"].disagree == workers * n
        assert sum(table[f"ch{w}"].calls for w in range(workers)) == workers * n
        assert sum(r.feedback for r in table.values()) == workers * (n // 10) * 4
        # Consensus games are zero-sum, so the pool's total moves only by the logged feedback
        # changes; a lost read-modify-write (two writers overwriting one rating) would break it.
        conn = sqlite3.connect(store.path)
        changes = [json.loads(c) for (c,) in conn.execute("SELECT changes FROM feedback")]
        assert len(changes) == workers * (n // 10)
        expected = R.BASE * len(table) + sum(sum(c.values()) for c in changes)
        assert sum(r.rating for r in table.values()) == pytest.approx(expected, abs=0.01 * len(changes))
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- replacing and undoing feedback (issue 12 item 8) ----------------------------------------------
def _table(store) -> dict:
    return {m: (r.rating, r.games, r.calls, r.agree, r.disagree, r.feedback, r.last_seen)
            for m, r in store.ratings().items()}


def _log(store, feedback) -> None:
    """Ten calls at fixed times; ``feedback`` (call index -> list of (kind, fields)) is given
    right after that call."""
    for i in range(10):
        answers = {"a": "YES", "b": "YES" if i % 3 else "NO", "c": "NO", "d": "YES"}
        store.record_call(CallRecord(**{**call(f"c{i}", answers).__dict__, "ts": 1000.0 + i}))
        for n, (kind, fields) in enumerate(feedback.get(i, [])):
            store.add_feedback(f"c{i}", kind, now=1000.5 + i + n / 100, **fields)


def test_latest_verdict_replaces_the_earlier_one_exactly(fscale_home, tmp_path):
    """--confirm then --override on one call: only the override counts, and the ratings are
    exactly those of a log that only ever had the override (not +64 then -75.7 on top)."""
    with LearningStore(tmp_path / "clean.db") as clean:
        _log(clean, {2: [("override", {"label": "NO"})], 6: [("prefer", {"prefer": "c"})]})
        expected = _table(clean)
        expected_history = {m: [r for _, r in v] for m, v in clean.history().items()}
    with LearningStore(tmp_path / "fixed.db") as fixed:
        _log(fixed, {2: [("confirm", {}), ("override", {"label": "NO"})],
                     6: [("prefer", {"prefer": "b"}), ("prefer", {"prefer": "c"})]})
        assert _table(fixed) == expected
        assert {m: [r for _, r in v] for m, v in fixed.history().items()} == expected_history
        states = [(f["kind"], f["state"]) for f in fixed.get("c2")["feedback"]]
        assert states == [("confirm", "superseded"), ("override", "current")]
        assert fixed.recent(10, text="c2")[0]["feedback"] == ["override"]
        # a verdict and a preference are different groups: both stay current
        fixed.add_feedback("c6", "confirm", now=2000.0)
        assert [f["state"] for f in fixed.get("c6")["feedback"]] == ["superseded", "current", "current"]


def test_replacing_reports_the_net_change_and_what_it_replaced(store):
    store.record_call(call("c1", {"a": "YES", "b": "YES", "c": "NO"}))
    start = store.ratings()
    first = store.add_feedback("c1", "confirm")
    assert first["replaced"] is None and first["changes"]["c"] < 0
    second = store.add_feedback("c1", "override", label="NO")
    assert second["replaced"]["kind"] == "confirm" and second["replaced"]["state"] == "superseded"
    now = store.ratings()
    for m in "abc":
        assert second["changes"][m] == pytest.approx(now[m].rating - (start[m].rating + first["changes"][m]), abs=1e-3)
        assert now[m].feedback == 1  # one verdict counts, not two
    assert now["c"].rating > start["c"].rating and now["a"].rating < start["a"].rating


def test_undo_takes_the_feedback_back_exactly(fscale_home, tmp_path):
    with LearningStore(tmp_path / "clean.db") as clean:
        _log(clean, {4: [("reject", {})]})
        expected = _table(clean)
    with LearningStore(tmp_path / "undo.db") as log:
        _log(log, {1: [("confirm", {})], 4: [("reject", {})]})
        out = log.undo_feedback("c1", now=5000.0)
        assert out["undone"]["kind"] == "confirm" and out["feedback"] == []
        assert out["undone"]["state"] == "undone" and out["undone"]["ended_ts"] == 5000.0
        assert out["changes"] and _table(log) == expected
        assert [(f["kind"], f["state"], f["ended_ts"]) for f in log.get("c1")["feedback"]] == \
            [("confirm", "undone", 5000.0)]
        with pytest.raises(UsageError, match="has no feedback to undo"):
            log.undo_feedback("c1")
        with pytest.raises(UsageError, match="no call with id"):
            log.undo_feedback("nope")


def test_undo_removes_the_latest_current_feedback_first(store):
    store.record_call(call("c1", {"a": "YES", "b": "NO", "c": "YES"}))
    store.add_feedback("c1", "confirm")
    store.add_feedback("c1", "prefer", prefer="b")
    assert store.undo_feedback("c1")["undone"]["kind"] == "prefer"
    assert store.undo_feedback("c1")["undone"]["kind"] == "confirm"
    assert all(r.feedback == 0 for r in store.ratings().values())


def test_replay_of_an_unchanged_log_changes_nothing(store):
    for i in range(30):
        store.record_call(call(f"c{i}", {"a": "YES", "b": "YES" if i % 2 else "NO", "c": "NO"},
                               challenger=("d", "YES")))
        if i % 7 == 0:
            store.add_feedback(f"c{i}", "reject")
    before, history = _table(store), store.history()
    store.replay()
    assert _table(store) == before and store.history() == history


OLD_SCHEMA = """
CREATE TABLE calls (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, kind TEXT NOT NULL,
    ts REAL NOT NULL, question_hash TEXT, context_hash TEXT, question TEXT, context TEXT,
    labels TEXT, members TEXT, answer TEXT, status TEXT, confidence REAL, decided_early INTEGER,
    elapsed_s REAL, calls_made INTEGER, extra TEXT);
CREATE INDEX calls_by_id ON calls(id);
CREATE TABLE replies (call_seq INTEGER NOT NULL REFERENCES calls(seq), role TEXT NOT NULL,
    model TEXT NOT NULL, answer TEXT, status TEXT, latency_s REAL, error TEXT, substitute_for TEXT,
    raw TEXT, thinking TEXT, tokens INTEGER);
CREATE INDEX replies_by_call ON replies(call_seq);
CREATE TABLE feedback (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_seq INTEGER NOT NULL REFERENCES calls(seq), call_id TEXT NOT NULL, ts REAL NOT NULL,
    kind TEXT NOT NULL, label TEXT, prefer TEXT, over TEXT, changes TEXT);
CREATE TABLE ratings (model TEXT PRIMARY KEY, rating REAL NOT NULL, games INTEGER NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0, agree INTEGER NOT NULL DEFAULT 0,
    disagree INTEGER NOT NULL DEFAULT 0, feedback INTEGER NOT NULL DEFAULT 0, last_seen REAL);
CREATE TABLE rating_history (seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL,
    ts REAL NOT NULL, rating REAL NOT NULL, call_id TEXT, source TEXT NOT NULL);
CREATE INDEX history_by_model ON rating_history(model, seq);
"""


def test_a_log_written_by_the_previous_version_is_migrated_once(fscale_home, tmp_path):
    """An old database (no migrations table, feedback without state) with a confirm and a later
    override on one call: opening it records the migrations, keeps every row, marks the confirm
    superseded and replays the ratings to those of a log with only the override."""
    from fscale_tui.engine.learning.migrations import MIGRATIONS

    with LearningStore(tmp_path / "clean.db") as clean:
        _log(clean, {3: [("override", {"label": "NO"})]})
        expected = _table(clean)
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.executescript(OLD_SCHEMA)
    src = sqlite3.connect(tmp_path / "clean.db")
    for table, cols in (("calls", ("seq, id, kind, ts, question_hash, context_hash, question, "
                                   "context, labels, members, answer, status, confidence, "
                                   "decided_early, elapsed_s, calls_made, extra")),
                        ("replies", ("call_seq, role, model, answer, status, latency_s, error, "
                                     "substitute_for, raw, thinking, tokens"))):
        rows = src.execute(f"SELECT {cols} FROM {table}").fetchall()
        conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({','.join('?' * len(rows[0]))})", rows)
    # what the previous version wrote: both verdicts counted (the ratings table is stale)
    conn.executemany("INSERT INTO feedback (call_seq, call_id, ts, kind, label, changes) "
                     "VALUES (4, 'c3', ?, ?, ?, '{}')",
                     [(1003.5, "confirm", "YES"), (1003.6, "override", "NO")])
    conn.execute("INSERT INTO ratings (model, rating) VALUES ('a', 1234.0)")
    conn.commit()
    conn.close()
    with LearningStore(old) as store:
        assert store.count() == 10
        names = [r[0] for r in store.conn.execute("SELECT name FROM migrations ORDER BY rowid")]
        assert names == [name for name, _ in MIGRATIONS]
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert [(f["kind"], f["state"]) for f in store.get("c3")["feedback"]] == \
            [("confirm", "superseded"), ("override", "current")]
        assert _table(store) == expected
    with LearningStore(old) as again:  # opening it again applies nothing
        assert again.conn.execute("SELECT COUNT(*) FROM migrations").fetchone()[0] == len(MIGRATIONS)


def test_the_tui_call_detail_marks_feedback_that_no_longer_counts(store):
    from fscale_tui.screens.history import detail_markup

    store.record_call(call("c1", {"a": "YES", "b": "YES", "c": "NO"}))
    store.add_feedback("c1", "confirm")
    store.add_feedback("c1", "override", label="NO")
    lines = [ln for ln in detail_markup(store.get("c1")).splitlines() if ln.startswith("feedback")]
    assert "superseded" in lines[0] and "no longer counts" in lines[0]
    assert lines[1] == "feedback: override NO"


def _deleted_sqlite_files_held() -> list[str]:
    from tests.home_load import deleted_sqlite_files_held

    return deleted_sqlite_files_held()


def test_a_second_store_in_one_process_keeps_the_first_ones_wal_alive(fscale_home):
    """The TUI opens the call log twice (the writer thread and History); another process then
    reads it (`fscale history`). Opening the file outside SQLite dropped the first connection's
    locks, so the other process checkpointed and deleted the WAL under it: every later call of
    the TUI went to a deleted file and was lost to every other process."""
    import subprocess
    import sys

    path = LearningStore.for_settings(load_settings()).path
    writer = LearningStore(path)
    writer.record_call(call("tui-1", {"fast-a": "YES", "fast-b": "YES"}))
    reader = LearningStore(path)  # History opens its own store in the same process
    assert reader.conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 1
    count = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
             "print(c.execute('SELECT count(*) FROM calls').fetchone()[0]); c.close()")
    other = subprocess.run([sys.executable, "-c", count, str(path)], capture_output=True,
                           text=True, check=True)
    assert other.stdout.strip() == "1"
    assert _deleted_sqlite_files_held() == []
    writer.record_call(call("tui-2", {"fast-a": "NO", "fast-b": "NO"}))
    other = subprocess.run([sys.executable, "-c", count, str(path)], capture_output=True,
                           text=True, check=True)
    assert other.stdout.strip() == "2"  # the TUI's next call is seen by other processes
    reader.close()
    writer.close()


def test_sqlite_files_are_opened_only_through_the_state_helper():
    """By construction: no module but storage.py opens a SQLite database (nothing may open the
    file outside SQLite, and every database gets the same privacy and discipline)."""
    from pathlib import Path

    import fscale_tui

    root = Path(fscale_tui.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "sqlite3.connect(" in p.read_text() and p.name != "storage.py"]
    assert offenders == []


def _open_together(path: str, barrier, results) -> None:
    from fscale_tui.engine.learning.store import LearningStore

    barrier.wait()
    try:
        with LearningStore(Path(path)) as store:
            store.count()
        results.put("ok")
    except Exception as exc:  # what the process would have died of
        results.put(repr(exc))


def test_processes_opening_a_new_store_together_all_open_it_in_wal(tmp_path):
    """Eight processes opening a new call log at the same moment (CLIs started together on a
    fresh home): some died of "database is locked" when switching it to WAL (6 in 20 rounds)."""
    ctx = multiprocessing.get_context("fork")
    failures = []
    for round_ in range(12):
        path = tmp_path / f"r{round_}" / "learning.db"
        path.parent.mkdir()
        barrier, results = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_open_together, args=(str(path), barrier, results))
                 for _ in range(8)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(60)
        failures += [x for x in outcomes if x != "ok"]
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
    assert not failures, failures
