"""The call log's schema and its named, ordered migrations (simonw/llm's ``migrations.py``):
each is applied once, recorded in a ``migrations`` table and in ``PRAGMA user_version``, and a
log written by an older fscale is brought up to date the first time it is opened, inside one
write transaction (:func:`migrate`). Append new ones at the end of :data:`MIGRATIONS`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator

from .rows import replay_ratings

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts REAL NOT NULL,
    question_hash TEXT,
    context_hash TEXT,
    question TEXT,
    context TEXT,
    labels TEXT,
    members TEXT,
    answer TEXT,
    status TEXT,
    confidence REAL,
    decided_early INTEGER,
    elapsed_s REAL,
    calls_made INTEGER,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS calls_by_id ON calls(id);
CREATE TABLE IF NOT EXISTS replies (
    call_seq INTEGER NOT NULL REFERENCES calls(seq),
    role TEXT NOT NULL,
    model TEXT NOT NULL,
    answer TEXT,
    status TEXT,
    latency_s REAL,
    error TEXT,
    substitute_for TEXT,
    raw TEXT,
    thinking TEXT,
    tokens INTEGER
);
CREATE INDEX IF NOT EXISTS replies_by_call ON replies(call_seq);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_seq INTEGER NOT NULL REFERENCES calls(seq),
    call_id TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    label TEXT,
    prefer TEXT,
    over TEXT,
    changes TEXT
);
CREATE TABLE IF NOT EXISTS ratings (
    model TEXT PRIMARY KEY,
    rating REAL NOT NULL,
    games INTEGER NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0,
    agree INTEGER NOT NULL DEFAULT 0,
    disagree INTEGER NOT NULL DEFAULT 0,
    feedback INTEGER NOT NULL DEFAULT 0,
    last_seen REAL
);
CREATE TABLE IF NOT EXISTS rating_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    ts REAL NOT NULL,
    rating REAL NOT NULL,
    call_id TEXT,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_model ON rating_history(model, seq);
"""


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A short write transaction holding the database's write lock from its first line."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _m0001_initial_schema(conn: sqlite3.Connection) -> None:
    """The tables of the first call log (a no-op on a database an older fscale created)."""
    for statement in _schema_statements():
        conn.execute(statement)


def _m0002_feedback_state(conn: sqlite3.Connection) -> None:
    """Feedback rows get a ``state`` (current / superseded / undone), the time it ended, and
    ``after_seq``, the last call committed before them (their place in a replay). On an old log,
    earlier verdicts on a call that got a later one of the same group become ``superseded`` and
    the ratings are replayed: the latest feedback is the one that counts."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(feedback)")}
    for column, decl in (("state", "TEXT NOT NULL DEFAULT 'current'"), ("ended_ts", "REAL"),
                         ("after_seq", "INTEGER")):
        if column not in have:
            conn.execute(f"ALTER TABLE feedback ADD COLUMN {column} {decl}")
    conn.execute(
        "UPDATE feedback SET after_seq = MAX(call_seq, COALESCE("
        "(SELECT MAX(c.seq) FROM calls c WHERE c.ts <= feedback.ts), 0)) WHERE after_seq IS NULL")
    conn.execute("CREATE INDEX IF NOT EXISTS feedback_by_call ON feedback(call_seq, state)")
    group = "(CASE {t}.kind WHEN 'prefer' THEN 'prefer' ELSE 'verdict' END)"
    later = (f"FROM feedback AS f2 WHERE f2.call_seq = feedback.call_seq AND f2.seq > feedback.seq "
             f"AND {group.format(t='f2')} = {group.format(t='feedback')}")
    cur = conn.execute(f"UPDATE feedback SET state = 'superseded', ended_ts = (SELECT MIN(f2.ts) "
                       f"{later}) WHERE state = 'current' AND EXISTS (SELECT 1 {later})")
    if cur.rowcount:
        replay_ratings(conn)


#: Named schema migrations, applied in this order, each once (recorded in ``migrations``).
#: Append new ones at the end; never rename or reorder applied ones.
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("0001_initial_schema", _m0001_initial_schema),
    ("0002_feedback_state", _m0002_feedback_state),
]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Bring the database up to date; returns the names of the migrations applied now.

    ``PRAGMA user_version`` = number of migrations applied makes the usual case one read; the
    ``migrations`` table (name, time) is the record. All pending ones run in one
    ``BEGIN IMMEDIATE`` transaction, so two processes opening an old log migrate it once.
    A log from a newer fscale (a higher version) is left alone.
    """
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) >= len(MIGRATIONS):
        return []
    applied: list[str] = []
    with transaction(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, "
                     "applied_at REAL NOT NULL)")
        done = {r[0] for r in conn.execute("SELECT name FROM migrations")}
        for name, step in MIGRATIONS:
            if name not in done:
                step(conn)
                conn.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                             (name, time.time()))
                applied.append(name)
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute(f"PRAGMA user_version = {max(version, len(MIGRATIONS))}")
    return applied


def _schema_statements() -> list[str]:
    # One by one: executescript() would commit the surrounding BEGIN IMMEDIATE.
    return [s.strip() for s in SCHEMA.split(";") if s.strip()]
