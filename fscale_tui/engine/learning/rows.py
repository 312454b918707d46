"""The call log's rows as the learning reads them: feedback verdicts, the rating replay (every
rating event of the log in commit order, :func:`replay_ratings`) and the rows of the label-free
accuracy estimate (:func:`reliability_rows`, :func:`label_feedback`, :func:`refresh_tracker`).
Reads of the tables ``migrations.py`` creates; the store (``store.py``) writes them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..base.errors import UsageError
from . import ratings as R

if TYPE_CHECKING:  # numpy loads only when the estimates are asked for
    from .reliability import Call, Estimate, ReliabilityTracker

#: Feedback kinds that replace each other on one call: the latest of a group is the current one.
#: ``confirm``/``reject``/``override`` are one group, the verdict on the call's label (a later
#: ``--override NO`` replaces an earlier ``--confirm``); ``prefer`` is the other, the verdict
#: on which model answered better (a later ``--prefer`` replaces an earlier one).
FEEDBACK_GROUPS = {"confirm": "verdict", "reject": "verdict", "override": "verdict",
                   "prefer": "prefer"}
#: Feedback row states: ``current`` counts in the ratings; the others are kept for the record.
CURRENT, SUPERSEDED, UNDONE = "current", "superseded", "undone"

#: Reply statuses that say something about a model's judgement (failures and cancellations don't).
RATED_STATUSES = ("answered", "no_answer")
#: Reply roles that take part in the rating games of a call.
RATED_ROLES = ("member", "challenger")


def verdict(kind: str, decided: str | None, labels: list[str], rated: list[R.Reply],
             label: str | None, prefer: str | None, over: str | None, call_id: str
             ) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    """(truth, known-wrong label, preference pairs) for one piece of feedback."""
    if kind in ("confirm", "reject") and decided is None:
        raise UsageError(f"call {call_id!r} made no decision to {kind}; use --override LABEL")
    if kind == "confirm":
        return decided, None, []
    if kind == "reject":
        others = [lab for lab in labels if lab != decided]
        return (others[0], None, []) if len(others) == 1 else (None, decided, [])
    if kind == "override":
        match = [lab for lab in labels if label is not None and lab.casefold() == label.strip().casefold()]
        if not match:
            raise UsageError(f"--override {label!r} is not one of the call's labels: {', '.join(labels)}")
        return match[0], None, []
    if kind == "prefer":
        by_model = {r.model: r.answer for r in rated}
        for name in (prefer, over):
            if name is not None and name not in by_model:
                raise UsageError(f"model {name!r} did not reply in call {call_id!r} "
                                 f"(repliers: {', '.join(sorted(by_model))})")
        assert prefer is not None
        if over is not None:
            if over == prefer:
                raise UsageError("--prefer and --over name the same model")
            return None, None, [(prefer, over)]
        losers = [m for m, a in by_model.items() if m != prefer and a != by_model[prefer]]
        if not losers:
            raise UsageError(f"every model agreed with {prefer!r} in call {call_id!r}: "
                             "name the other side with --over MODEL")
        return None, None, [(prefer, m) for m in losers]
    raise UsageError(f"unknown feedback kind {kind!r}")


# -- the rating replay ---------------------------------------------------------------------------
def log_events(conn: sqlite3.Connection) -> Iterator[R.Event]:
    """Every rating event of the log in commit order: each call's consensus games (by ``seq``),
    and each *current* feedback right after the last call committed before it (``after_seq``)."""
    feedback: dict[int, list[sqlite3.Row]] = {}
    for f in conn.execute("SELECT * FROM feedback WHERE state = ? ORDER BY after_seq, seq",
                          (CURRENT,)):
        feedback.setdefault(int(f["after_seq"]), []).append(f)
    calls = {r["seq"]: r for r in conn.execute(
        "SELECT seq, id, ts, answer, labels FROM calls ORDER BY seq")}
    rated: dict[int, list[R.Reply]] = {}
    marks_r, marks_s = ",".join("?" * len(RATED_ROLES)), ",".join("?" * len(RATED_STATUSES))
    for r in conn.execute(f"SELECT call_seq, model, answer FROM replies WHERE role IN ({marks_r}) "
                          f"AND status IN ({marks_s}) ORDER BY call_seq, rowid",
                          (*RATED_ROLES, *RATED_STATUSES)):
        rated.setdefault(r["call_seq"], []).append(R.Reply(r["model"], r["answer"]))
    late = sorted(k for k in feedback if k not in calls)
    for seq in [*calls, *late]:
        call = calls.get(seq)
        if call is not None and seq in rated:
            yield R.Event("consensus", call["ts"], call["id"], tuple(rated[seq]))
        for f in feedback.get(seq, ()):
            target = calls.get(f["call_seq"])
            replies = tuple(rated.get(f["call_seq"], ()))
            if target is None or not replies:
                continue
            try:
                truth, wrong, pairs = verdict(
                    f["kind"], target["answer"], json.loads(target["labels"] or "[]"),
                    list(replies), f["label"], f["prefer"], f["over"], f["call_id"])
            except UsageError:  # cannot happen for a row add_feedback wrote; never stop a replay
                continue
            yield R.Event("feedback", f["ts"], f["call_id"], replies, source=f"feedback:{f['kind']}",
                          truth=truth, wrong=wrong, pairs=tuple(pairs))


def replay_ratings(conn: sqlite3.Connection) -> dict[str, R.ModelRating]:
    """Rewrite ``ratings`` and ``rating_history`` from the log (call inside a write transaction)."""
    table, history = R.replay(log_events(conn))
    conn.execute("DELETE FROM ratings")
    conn.executemany(
        "INSERT INTO ratings (model, rating, games, calls, agree, disagree, feedback, last_seen) "
        "VALUES (?,?,?,?,?,?,?,?)",
        [(m, r.rating, r.games, r.calls, r.agree, r.disagree, r.feedback, r.last_seen)
         for m, r in table.items()])
    conn.execute("DELETE FROM rating_history")
    conn.executemany(
        "INSERT INTO rating_history (model, ts, rating, call_id, source) VALUES (?,?,?,?,?)",
        history)
    return table


# -- the rows of the label-free estimate (reliability.py) ----------------------------------------
def reliability_rows(conn: sqlite3.Connection, after_seq: int = 0
                     ) -> list[tuple[int, Call]]:
    """Every ``scale`` call after ``after_seq`` with its labels and rated replies, in order.

    A rated reply is a member's or challenger's ``answered`` / ``no_answer`` reply (failed and
    cancelled requests say nothing about a model's judgement), as for the Elo games."""
    from .reliability import Call

    calls = {int(row[0]): row[1] for row in conn.execute(
        "SELECT seq, labels FROM calls WHERE seq > ? AND kind = 'scale' ORDER BY seq",
        (after_seq,))}
    marks_r = ",".join("?" * len(RATED_ROLES))
    votes: dict[int, list[tuple[str, str | None]]] = {}
    members: dict[int, list[tuple[str, str, float | None]]] = {}
    for r in conn.execute(  # a range on the replies_by_call index: only the new calls' rows
            f"SELECT call_seq, model, answer, status, role, latency_s FROM replies "
            f"WHERE call_seq > ? AND role IN ({marks_r}) ORDER BY call_seq, rowid",
            (after_seq, *RATED_ROLES)):
        if r[0] not in calls:
            continue
        if r[4] == "member":
            members.setdefault(r[0], []).append((r[1], r[3], r[5]))
        if r[3] in RATED_STATUSES:
            votes.setdefault(r[0], []).append((r[1], r[2] if r[3] == "answered" else None))
    return [(seq, Call(json.loads(labels or "[]"), votes.get(seq, []),
                       late=late_members(members.get(seq, []))))
            for seq, labels in calls.items()]


def late_members(members: list[tuple[str, str, float | None]]) -> frozenset[str]:
    """The members of one call (``(model, status, latency_s)``, all asked at once) whose reply
    was waited for only because the ones that arrived before it did not settle the call: those
    rated after the first majority of the panel to arrive (no decision can be made before
    that many votes; an early decision cancels the rest). Whether such a reply exists depends
    on the earlier replies' answers (a third member is heard only when the first two
    disagreed), so its agreement with them is no fair sample of how often they agree.
    Replies without a latency keep the log's order."""
    asked = [m for m in members if m[1] != "replaced"]
    first = len(asked) // 2 + 1
    rated = [m for m in asked if m[1] in RATED_STATUSES]
    if len(rated) <= first:
        return frozenset()
    order = sorted(range(len(rated)), key=lambda i: (rated[i][2] is None, rated[i][2] or 0.0, i))
    return frozenset(rated[i][0] for i in order[first:])


def label_feedback(conn: sqlite3.Connection) -> dict[int, tuple[str | None, str | None]]:
    """``{call seq: (true label, known-wrong label)}`` from the current feedback.

    Label verdicts (confirm / reject / override) say it directly. A ``prefer`` says which
    model's *answer* was better: ``--prefer A`` (over every model that disagreed with it) makes
    A's answer the label; ``--prefer A --over B`` rules B's answer out (and, with two labels,
    makes A's the label). A verdict on the label wins over a preference on the same call."""
    verdicts: dict[int, tuple[str | None, str | None]] = {}
    preferred: dict[int, tuple[str | None, str | None]] = {}
    for f in conn.execute(
            "SELECT f.call_seq, f.call_id, f.kind, f.label, f.prefer, f.over, c.answer, c.labels "
            "FROM feedback f JOIN calls c ON c.seq = f.call_seq WHERE f.state = ? "
            "ORDER BY f.seq", (CURRENT,)):
        seq, labels = int(f["call_seq"]), json.loads(f["labels"] or "[]")
        if f["kind"] == "prefer":
            said = {r["model"]: r["answer"] for r in conn.execute(
                "SELECT model, answer FROM replies WHERE call_seq = ? AND status = 'answered' "
                "AND role IN ('member', 'challenger')", (seq,))}
            best, worse = said.get(f["prefer"]), said.get(f["over"]) if f["over"] else None
            if best is None or best not in labels:
                continue
            if f["over"] is None:
                preferred[seq] = (best, None)
            elif worse is not None and worse != best:
                others = [lab for lab in labels if lab != worse]
                preferred[seq] = (best, None) if len(others) == 1 else (None, worse)
            continue
        try:
            truth, wrong, _ = verdict(f["kind"], f["answer"], labels, [], f["label"], None,
                                       None, f["call_id"])
        except UsageError:  # cannot happen for a row add_feedback wrote
            continue
        verdicts[seq] = (truth, wrong)
    out = dict(preferred)
    for seq, (truth, wrong) in verdicts.items():
        if truth is None and seq in preferred:  # a reject ruled one label out; keep the rest
            p_truth, p_wrong = preferred[seq]
            truth = p_truth if p_truth != wrong else None
            wrong = wrong if wrong is not None else p_wrong
        out[seq] = (truth, wrong)
    return out


def refresh_tracker(conn: sqlite3.Connection, tracker: ReliabilityTracker) -> dict[str, Estimate]:
    """Bring ``tracker`` up to date with the log: the calls it has not seen, the current label
    feedback; a log that restarted (moved aside) starts the tracker afresh."""
    top = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM calls").fetchone()[0])
    if top < tracker.last_seq:
        tracker.reset()
    return tracker.refresh(reliability_rows(conn, tracker.last_seq), label_feedback(conn))
