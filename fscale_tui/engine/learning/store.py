"""The call log's store: one SQLite file in the data directory (design §7, §9); what it writes
and how it keeps it readable. Its schema and migrations are ``migrations.py``, the rows the
learning reads ``rows.py``.

``<data_dir>/learning.db`` holds every logged call (id, time, question/context hashes and, unless
told otherwise, their text; each member's and the challenger's raw reply, parsed vote, latency
and error; the decision), the feedback given on calls, the current rating of each model and the
rating history (one row per change, for plots).

Several processes may write at once (a batch in one terminal, the TUI in another): the database
runs in WAL mode with a busy timeout, and each call is written *and* its rating changes applied
in one short ``BEGIN IMMEDIATE`` transaction, so ratings are read and written under the same
write lock and no update is lost.

Feedback: the latest verdict on a call replaces the earlier one (see :data:`.rows.FEEDBACK_GROUPS`),
``undo_feedback`` takes the current one back, and either way the ratings are recomputed by
replaying the whole log (:func:`.rows.replay_ratings`), never patched. Feedback rows are kept, marked
``superseded`` or ``undone``, so ``history show`` tells what happened.

Schema changes are named, ordered migrations (``migrations.py``), recorded in a ``migrations``
table and in ``PRAGMA user_version``; a database written by an older fscale is brought up to
date the first time it is opened, inside one write transaction.

What is stored: ``log_calls = false`` (config ``[defaults]`` or ``FSCALE_LOG_CALLS=0``) turns the
log and the learning off. ``log_text = false`` (or ``fscale scale --no-log``) keeps only hashes,
votes, latencies and the decision: no question, context, raw reply or reasoning text.

Every stored text passes the redactor (an error body can quote an API key), and long texts are
capped at :data:`TEXT_CAP_BYTES` (64 KiB) each, with the full length and sha256 kept in
``extra["truncated"]``. The file is created 0600; a file SQLite cannot read ("file is not a
database") is moved aside to ``learning.db.corrupt-<time>-<pid>`` with a warning and a fresh,
empty log is started.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base.errors import UsageError
from ..base.redact import redact
from . import ratings as R
from .migrations import migrate, transaction
from .rows import (CURRENT, FEEDBACK_GROUPS, RATED_ROLES, RATED_STATUSES, SUPERSEDED, UNDONE,
                   refresh_tracker, replay_ratings, verdict)

if TYPE_CHECKING:  # numpy loads only when the estimates are asked for
    from .reliability import Estimate
    from ..base.settings import Settings

DB_NAME = "learning.db"
BUSY_TIMEOUT_MS = 30_000

#: Stored text is capped (README "What the call log keeps"): question, context, raw replies and
#: reasoning keep their first TEXT_CAP_BYTES of UTF-8 (cut at a character boundary). The hash
#: columns are of the whole text, and ``extra["truncated"]`` says, per capped field, its full
#: length in characters and bytes and the sha256 of the whole.
TEXT_CAP_BYTES = 64 * 1024


def cap_text(text: str | None, name: str, truncated: dict[str, Any]) -> str | None:
    """``text`` redacted and capped to :data:`TEXT_CAP_BYTES`; notes a cut in ``truncated``."""
    if text is None:
        return None
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > TEXT_CAP_BYTES:
        truncated[name] = {"chars": len(text), "bytes": len(data),
                           "sha256": hashlib.sha256(data).hexdigest(),
                           "kept_bytes": TEXT_CAP_BYTES}
        text = data[:TEXT_CAP_BYTES].decode("utf-8", "ignore")
    return redact(text)


#: Call-log files opened by this process (for :func:`quarantine_damaged`).
OPENED: set[Path] = set()


def _move_db_aside(path: Path, reason: str) -> None:
    """Move a broken database and its -wal/-shm/-journal files aside, with a warning."""
    from ..base import storage

    for suffix in ("-wal", "-shm", "-journal"):  # they belong to the broken file
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, side.with_name(f"{side.name}.corrupt-{os.getpid()}"))
    storage.move_aside(path, reason + "; a new empty call log is started")


def is_damage(exc: BaseException) -> bool:
    """A database error that means the file is damaged (not "locked", "busy", "readonly")."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def quarantine_damaged(paths: Iterable[Path] | None = None) -> list[Path]:
    """Damage found *after* opening (a malformed page): move aside every call log this process
    opened (or ``paths``) that fails SQLite's ``quick_check``, so a fresh one is started."""
    from ..base import storage

    moved = []
    for path in sorted(OPENED if paths is None else paths):
        if not path.exists():
            continue
        with storage.locked(path):
            try:
                conn = storage.open_sqlite(path, timeout=BUSY_TIMEOUT_MS / 1000)
                try:
                    verdict = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
                finally:
                    conn.close()
                reason = None if verdict == "ok" else f"quick_check: {verdict}"
            except sqlite3.OperationalError:
                continue
            except sqlite3.DatabaseError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if reason:
                _move_db_aside(path, reason)
                moved.append(path)
    return moved


def text_hash(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class ReplyRecord:
    model: str
    role: str = "member"  # member | challenger | candidate | judge | ...
    answer: str | None = None
    status: str = "answered"
    latency_s: float | None = None
    error: str | None = None
    substitute_for: str | None = None
    raw: str | None = None
    thinking: str | None = None
    tokens: int | None = None


@dataclass
class CallRecord:
    """One call as the log stores it (scale calls, generate calls, replays)."""

    id: str
    kind: str = "scale"
    question: str | None = None
    context: str | None = None
    labels: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    answer: str | None = None
    status: str = "decided"
    confidence: float | None = None
    decided_early: bool = False
    elapsed_s: float | None = None
    calls_made: int | None = None
    replies: list[ReplyRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    ts: float | None = None


def record_from_scale(request: Any, result: Any) -> CallRecord:
    """A CallRecord from a finished scale call (a ScaleRequest and its ScaleResult)."""
    replies = [ReplyRecord(model=v.model, role="member", answer=v.answer, status=v.status,
                           latency_s=v.latency_s, error=v.error, substitute_for=v.substitute_for,
                           raw=v.raw, thinking=v.thinking or None, tokens=v.tokens)
               for v in result.votes]
    for challenger in result.challengers:
        replies.append(ReplyRecord(model=challenger.model, role="challenger",
                                   answer=challenger.answer, status=challenger.status,
                                   latency_s=challenger.latency_s, error=challenger.error,
                                   raw=challenger.raw, thinking=challenger.thinking or None,
                                   tokens=challenger.tokens))
    extra: dict[str, Any] = {"counts": result.counts, "tied": result.tied,
                             "tie_broken_by": result.tie_broken_by,
                             "challenger_calls": getattr(result, "challenger_calls", 0),
                             "item_id": getattr(result, "item_id", None),
                             "usage": getattr(result, "usage", None),
                             "spend": result.spend.to_dict() if hasattr(result, "spend") else None}
    if getattr(result, "auto", False):
        extra.update(auto=True, stages=[s.to_dict() for s in result.stages],
                     calibrated=result.calibrated, signal=result.signal, route=result.route)
    return CallRecord(id=result.id, kind="scale", question=request.question, context=request.context,
                      labels=list(result.answers), members=list(result.members),
                      answer=result.answer, status=result.status, confidence=result.confidence,
                      decided_early=result.decided_early, elapsed_s=result.elapsed_s,
                      calls_made=result.calls_made, replies=replies, extra=extra)


def rated_replies(replies: Sequence[ReplyRecord]) -> list[R.Reply]:
    return [R.Reply(r.model, r.answer) for r in replies
            if r.role in RATED_ROLES and r.status in RATED_STATUSES]


class LearningStore:
    """The call log + ratings database. Open with ``LearningStore.for_settings(settings)``."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        #: Reads only (a home that cannot be written): nothing is created or migrated.
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> "LearningStore":
        return cls(settings.paths.data_dir / DB_NAME)

    # -- connection ---------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open_or_recover()
        return self._conn

    def _open_or_recover(self) -> sqlite3.Connection:
        """Open the database; a corrupt one is moved aside with a warning and a fresh one started.

        Corruption (``DatabaseError`` that is not an ``OperationalError`` such as "locked") is
        re-checked under the file's cross-process lock, so two processes that both find it broken
        move it aside once and then share the fresh file.
        """
        from ..base import storage

        if self.readonly or str(self.path) == ":memory:":
            return self._open()
        storage.ensure_dir(self.path.parent)
        OPENED.add(self.path)
        try:
            return self._open()
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError:
            pass
        with storage.locked(self.path):
            try:
                return self._open()
            except sqlite3.OperationalError:
                raise
            except sqlite3.DatabaseError as exc:
                _move_db_aside(self.path, f"{type(exc).__name__}: {exc}")
            return self._open()

    def _open(self) -> sqlite3.Connection:
        from ..base import storage

        conn = storage.open_sqlite(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   readonly=self.readonly)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if self.readonly:
                return conn
            if str(self.path) != ":memory:":
                storage.use_wal(conn, timeout=BUSY_TIMEOUT_MS / 1000)
            conn.execute("PRAGMA synchronous = NORMAL")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "LearningStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self.conn)

    # -- writing calls ------------------------------------------------------------------------
    def record_call(self, record: CallRecord, *, learn: bool = True, keep_text: bool = True) -> int:
        """Log one call and (``learn``) apply its consensus games to the ratings, atomically.

        A damaged file found while writing is moved aside and the call written to a fresh one
        (learning never stops silently because of a broken file)."""
        try:
            return self._record_call(record, learn=learn, keep_text=keep_text)
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            self.close()
            if not quarantine_damaged([self.path]):
                raise
            return self._record_call(record, learn=learn, keep_text=keep_text)

    def _record_call(self, record: CallRecord, *, learn: bool, keep_text: bool) -> int:
        now = record.ts if record.ts is not None else time.time()
        # Every stored text passes the redactor (errors and raw replies can quote keys) and the
        # long ones are capped (a 20 MB context is not stored whole on every call).
        truncated: dict[str, Any] = {}
        question = cap_text(record.question, "question", truncated) if keep_text else None
        context = cap_text(record.context, "context", truncated) if keep_text else None
        rows = [(r.role, r.model, redact(r.answer), r.status, r.latency_s, redact(r.error),
                 r.substitute_for,
                 cap_text(r.raw, f"replies[{i}].raw", truncated) if keep_text else None,
                 cap_text(r.thinking, f"replies[{i}].thinking", truncated) if keep_text else None,
                 r.tokens)
                for i, r in enumerate(record.replies)]
        extra = dict(record.extra)
        if truncated:
            extra["truncated"] = truncated
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO calls (id, kind, ts, question_hash, context_hash, question, context, "
                "labels, members, answer, status, confidence, decided_early, elapsed_s, calls_made, "
                "extra) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (record.id, record.kind, now, text_hash(record.question), text_hash(record.context),
                 question, context,
                 redact(json.dumps(record.labels)), json.dumps(record.members), redact(record.answer),
                 record.status, record.confidence, int(bool(record.decided_early)),
                 record.elapsed_s, record.calls_made, redact(json.dumps(extra, default=str))))
            assert cur.lastrowid is not None  # an INSERT sets it
            seq = int(cur.lastrowid)
            conn.executemany(
                "INSERT INTO replies (call_seq, role, model, answer, status, latency_s, error, "
                "substitute_for, raw, thinking, tokens) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(seq, *row) for row in rows])
            if learn:
                replies = rated_replies(record.replies)
                if replies:
                    self._learn(conn, replies, call_id=record.id, source="consensus", now=now,
                                replied=[r.model for r in replies])
        return seq

    def _learn(self, conn: sqlite3.Connection, replies: Sequence[R.Reply], *, call_id: str,
               source: str, now: float, replied: Sequence[str] = (),
               update: R.Update | None = None) -> dict[str, float]:
        """Read the involved ratings, apply the games, write them back (inside a transaction)."""
        models = sorted({r.model for r in replies} | set(replied)
                        | set(update.delta if update else ()))
        table = _load(conn, models)
        if update is None:
            update = R.consensus_update(replies, table)
        touched = R.apply(update, table, now=now, replied=replied)
        conn.executemany(
            "INSERT INTO ratings (model, rating, games, calls, agree, disagree, feedback, last_seen) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(model) DO UPDATE SET rating=excluded.rating, "
            "games=excluded.games, calls=excluded.calls, agree=excluded.agree, "
            "disagree=excluded.disagree, feedback=excluded.feedback, last_seen=excluded.last_seen",
            [(m, table[m].rating, table[m].games, table[m].calls, table[m].agree, table[m].disagree,
              table[m].feedback, table[m].last_seen) for m in touched])
        changed = [m for m in touched if update.delta.get(m)]
        conn.executemany(
            "INSERT INTO rating_history (model, ts, rating, call_id, source) VALUES (?,?,?,?,?)",
            [(m, now, table[m].rating, call_id, source) for m in changed])
        return {m: round(update.delta[m], 3) for m in changed}

    # -- reading ------------------------------------------------------------------------------
    def ratings(self) -> dict[str, R.ModelRating]:
        return _load(self.conn, None)

    def reliability(self, family_of: Callable[[str], str] | None = None) -> dict[str, Estimate]:
        """Each model's label-free accuracy estimate (Dawid–Skene over the whole log);
        ``family_of`` groups models whose mistakes are alike (see :func:`.reliability.fit`)."""
        from .reliability import ReliabilityTracker

        return refresh_tracker(self.conn, ReliabilityTracker(family_of=family_of))

    def rating_values(self) -> dict[str, float]:
        return {row["model"]: row["rating"]
                for row in self.conn.execute("SELECT model, rating FROM ratings")}

    def history(self, models: Sequence[str] | None = None) -> dict[str, list[tuple[float, float]]]:
        """Rating history per model: ``[(time, rating), ...]`` oldest first."""
        out: dict[str, list[tuple[float, float]]] = {}
        rows = self.conn.execute("SELECT model, ts, rating FROM rating_history ORDER BY seq")
        wanted = set(models) if models else None
        for row in rows:
            if wanted is None or row["model"] in wanted:
                out.setdefault(row["model"], []).append((row["ts"], row["rating"]))
        return out

    def recent(self, limit: int = 20, text: str | None = None) -> list[dict[str, Any]]:
        """Newest first; ``text`` keeps calls whose id, item id, question, answer or status
        contains it (case-insensitive, filtered in SQL)."""
        if text:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = self.conn.execute(
                "SELECT * FROM calls WHERE id LIKE ?1 ESCAPE '\\' OR question LIKE ?1 ESCAPE '\\' "
                "OR answer LIKE ?1 ESCAPE '\\' OR status LIKE ?1 ESCAPE '\\' "
                "OR json_extract(extra, '$.item_id') LIKE ?1 ESCAPE '\\' "
                "ORDER BY seq DESC LIMIT ?2", (like, limit)).fetchall()
        else:
            rows = self.conn.execute("SELECT * FROM calls ORDER BY seq DESC LIMIT ?",
                                     (limit,)).fetchall()
        out = []
        for row in rows:
            item = _call_summary(row)
            item["feedback"] = [f["kind"] for f in self.conn.execute(
                "SELECT kind FROM feedback WHERE call_seq = ? AND state = ? ORDER BY seq",
                (row["seq"], CURRENT))]
            out.append(item)
        return out

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def _find(self, conn: sqlite3.Connection, call_id: str) -> sqlite3.Row:
        """The call with this id; a batch item's id when exactly one call has it; ``#N`` is
        row N of the log. Anything ambiguous is a usage error listing the candidates."""
        call_id = call_id.strip()
        rows: list[sqlite3.Row]
        if call_id.startswith("#") and call_id[1:].isdigit():
            rows = conn.execute("SELECT * FROM calls WHERE seq = ?", (int(call_id[1:]),)).fetchall()
        else:
            rows = conn.execute("SELECT * FROM calls WHERE id = ? ORDER BY seq", (call_id,)).fetchall()
            if len(rows) > 1:  # logged by a version that reused batch ids as call ids
                refs = ", ".join(f"#{r['seq']}" for r in rows)
                raise UsageError(f"call id {call_id!r} was logged {len(rows)} times: "
                                 f"name one of {refs}")
            if not rows:
                rows = conn.execute("SELECT * FROM calls WHERE json_extract(extra, '$.item_id') = ? "
                                    "ORDER BY seq", (call_id,)).fetchall()
                if len(rows) > 1:
                    ids = ", ".join(r["id"] for r in rows)
                    raise UsageError(f"batch item id {call_id!r} matches {len(rows)} calls: "
                                     f"name one of {ids}")
        if not rows:
            raise UsageError(f"no call with id {call_id!r} in the call log (see 'fscale history')")
        return rows[0]

    def get(self, call_id: str) -> dict[str, Any]:
        """One call with its replies and feedback; an unknown id is a UsageError."""
        row = self._find(self.conn, call_id)
        item = _call_summary(row)
        item.update({"question": row["question"], "context": row["context"],
                     "question_hash": row["question_hash"], "context_hash": row["context_hash"],
                     "confidence": row["confidence"], "elapsed_s": row["elapsed_s"],
                     "calls_made": row["calls_made"], "decided_early": bool(row["decided_early"]),
                     "extra": json.loads(row["extra"] or "{}")})
        # What the call spent (decision + shadows); older logs: from the flat figures.
        from ..base.spend import Spend

        extra = item["extra"] if isinstance(item["extra"], dict) else {}
        item["spend"] = Spend.from_dict(extra.get("spend") or {
            "calls_made": row["calls_made"], **extra}).to_dict()
        item["replies"] = [
            {k: r[k] for k in ("role", "model", "answer", "status", "latency_s", "error",
                               "substitute_for", "raw", "thinking", "tokens")}
            for r in self.conn.execute("SELECT * FROM replies WHERE call_seq = ? ORDER BY rowid",
                                       (row["seq"],))]
        # Every feedback row, oldest first; ``state`` says which one counts (``current``).
        item["feedback"] = [
            _feedback_dict(f)
            for f in self.conn.execute("SELECT * FROM feedback WHERE call_seq = ? ORDER BY seq",
                                       (row["seq"],))]
        return item

    # -- feedback -----------------------------------------------------------------------------
    def add_feedback(self, call_id: str, kind: str, *, label: str | None = None,
                     prefer: str | None = None, over: str | None = None,
                     now: float | None = None) -> dict[str, Any]:
        """Record a verdict on a logged call and apply it to every model that replied.

        ``kind``: ``confirm`` (the decision was right), ``reject`` (it was wrong; with two labels
        the other one is right), ``override`` (``label`` is right), ``prefer`` (model ``prefer``
        gave a better answer than ``over``, or than every replier who disagreed with it).

        The latest feedback of a group (:data:`FEEDBACK_GROUPS`) on a call replaces the earlier
        one: that one is marked ``superseded`` and the ratings are replayed from the log, so it
        no longer counts. ``changes`` is the net rating change of each model; ``replaced`` the
        feedback this one replaced (or None).
        """
        now = time.time() if now is None else now
        if kind not in FEEDBACK_GROUPS:
            raise UsageError(f"unknown feedback kind {kind!r}")
        with self.transaction() as conn:
            row = self._find(conn, call_id)
            call_id = row["id"]
            rated = _rated_of(conn, row["seq"])
            if not rated:
                raise UsageError(f"call {call_id!r} has no model replies to learn from")
            truth, wrong, pairs = verdict(kind, row["answer"], json.loads(row["labels"] or "[]"),
                                           rated, label, prefer, over, call_id)
            previous = [f for f in conn.execute(
                "SELECT * FROM feedback WHERE call_seq = ? AND state = ? ORDER BY seq",
                (row["seq"], CURRENT)) if FEEDBACK_GROUPS.get(f["kind"]) == FEEDBACK_GROUPS[kind]]
            after_seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM calls").fetchone()[0])
            stored_label = truth if truth is not None else label
            if not previous:  # the common case: it lands at the end of the log, apply it there
                table = _load(conn, sorted({r.model for r in rated} | {m for p in pairs for m in p}))
                update = R.verdict_update(rated, table, truth=truth, wrong=wrong, pairs=pairs)
                changes = self._learn(conn, rated, call_id=call_id, source=f"feedback:{kind}",
                                      now=now, update=update)
                conn.execute(
                    "INSERT INTO feedback (call_seq, call_id, ts, kind, label, prefer, over, changes, "
                    "state, after_seq) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (row["seq"], call_id, now, kind, stored_label, prefer, over,
                     json.dumps(changes), CURRENT, after_seq))
            else:
                before = _load(conn, None)
                conn.executemany("UPDATE feedback SET state = ?, ended_ts = ? WHERE seq = ?",
                                 [(SUPERSEDED, now, f["seq"]) for f in previous])
                cur = conn.execute(
                    "INSERT INTO feedback (call_seq, call_id, ts, kind, label, prefer, over, "
                    "state, after_seq) VALUES (?,?,?,?,?,?,?,?,?)",
                    (row["seq"], call_id, now, kind, stored_label, prefer, over, CURRENT,
                     after_seq))
                changes = _net_changes(before, replay_ratings(conn))
                conn.execute("UPDATE feedback SET changes = ? WHERE seq = ?",
                             (json.dumps(changes), cur.lastrowid))
        return {"id": call_id, "kind": kind, "truth": truth, "wrong": wrong,
                "pairs": [list(p) for p in pairs], "changes": changes,
                "replaced": ({**_feedback_dict(previous[-1]), "state": SUPERSEDED, "ended_ts": now}
                             if previous else None)}

    def undo_feedback(self, call_id: str, *, now: float | None = None) -> dict[str, Any]:
        """Take back the current feedback on a call (the latest, when there are two: a verdict and
        a preference); the ratings are replayed from the log without it.

        The row stays in the log, marked ``undone``; an earlier feedback it had replaced does
        not come back. No current feedback on the call is a UsageError.
        """
        now = time.time() if now is None else now
        with self.transaction() as conn:
            row = self._find(conn, call_id)
            target = conn.execute(
                "SELECT * FROM feedback WHERE call_seq = ? AND state = ? ORDER BY seq DESC LIMIT 1",
                (row["seq"], CURRENT)).fetchone()
            if target is None:
                raise UsageError(f"call {row['id']!r} has no feedback to undo")
            before = _load(conn, None)
            conn.execute("UPDATE feedback SET state = ?, ended_ts = ? WHERE seq = ?",
                         (UNDONE, now, target["seq"]))
            changes = _net_changes(before, replay_ratings(conn))
            undone = {**_feedback_dict(target), "state": UNDONE, "ended_ts": now}
            remaining = [f["kind"] for f in conn.execute(
                "SELECT kind FROM feedback WHERE call_seq = ? AND state = ? ORDER BY seq",
                (row["seq"], CURRENT))]
        return {"id": row["id"], "undone": undone, "changes": changes,
                "feedback": remaining}

    def replay(self) -> dict[str, R.ModelRating]:
        """Recompute the ratings and their history from the whole log (one write transaction)."""
        with self.transaction() as conn:
            return replay_ratings(conn)


def _load(conn: sqlite3.Connection, models: Sequence[str] | None) -> dict[str, R.ModelRating]:
    if models is None:
        rows = conn.execute("SELECT * FROM ratings").fetchall()
    else:
        if not models:
            return {}
        marks = ",".join("?" * len(models))
        rows = conn.execute(f"SELECT * FROM ratings WHERE model IN ({marks})", list(models)).fetchall()
    return {row["model"]: R.ModelRating(model=row["model"], rating=row["rating"], games=row["games"],
                                        calls=row["calls"], agree=row["agree"],
                                        disagree=row["disagree"], feedback=row["feedback"],
                                        last_seen=row["last_seen"])
            for row in rows}


def _call_summary(row: sqlite3.Row) -> dict[str, Any]:
    question = row["question"]
    return {"id": row["id"], "seq": row["seq"], "kind": row["kind"], "ts": row["ts"],
            "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["ts"])),
            "question": question, "question_hash": row["question_hash"],
            "labels": json.loads(row["labels"] or "[]"), "members": json.loads(row["members"] or "[]"),
            "answer": row["answer"], "status": row["status"],
            "item_id": json.loads(row["extra"] or "{}").get("item_id"), "schema": 1}


def _feedback_dict(f: sqlite3.Row) -> dict[str, Any]:
    return {"kind": f["kind"], "label": f["label"], "prefer": f["prefer"], "over": f["over"],
            "ts": f["ts"], "changes": json.loads(f["changes"] or "{}"), "state": f["state"],
            "ended_ts": f["ended_ts"]}


def _rated_of(conn: sqlite3.Connection, call_seq: int) -> list[R.Reply]:
    return rated_replies([ReplyRecord(model=r["model"], role=r["role"], answer=r["answer"],
                                      status=r["status"])
                          for r in conn.execute("SELECT model, role, answer, status FROM replies "
                                                "WHERE call_seq = ? ORDER BY rowid", (call_seq,))])


def _net_changes(before: dict[str, R.ModelRating], after: dict[str, R.ModelRating]
                 ) -> dict[str, float]:
    """Each model's rating change (rounded like the incremental changes; unchanged left out)."""
    out = {}
    for m in sorted(set(before) | set(after)):
        old = before[m].rating if m in before else R.BASE
        new = after[m].rating if m in after else R.BASE
        if new != old:
            out[m] = round(new - old, 3)
    return out


__all__ = ["CallRecord", "LearningStore", "ReplyRecord", "record_from_scale"]
