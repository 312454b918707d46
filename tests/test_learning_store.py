"""The call log + ratings database: records, feedback, privacy, several writer processes."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3

import pytest

from fscale_tui.engine.config import load_settings
from fscale_tui.engine.errors import ExitCode, UsageError
from fscale_tui.engine.learning import ratings as R
from fscale_tui.engine.learning.calllog import CallRecord, LearningStore, ReplyRecord


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
    assert out["changes"]["a"] == pytest.approx(-out["changes"]["b"])
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
    from fscale_tui.engine.background import BackgroundWriter
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
    from fscale_tui.engine.config import load_settings
    from fscale_tui.engine.learning.calllog import LearningStore

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
