"""The call log as the engine and its views use it.

Writes (every finished call, and the ratings it moves) go to the engine's background writer:
one thread, in order, so the event loop never waits on SQLite's lock (another process may hold
it for seconds). Reads for views (history, one call, ratings, feedback) are blocking calls that
open their own short-lived connection: the CLI calls them directly, the TUI from thread workers.
The engine itself reads a snapshot (the Elo ratings and the label-free accuracy estimates of
:mod:`.reliability`, used for the challengers' choice and ``--tie-break rating``) refreshed in a
thread at most once a second; the estimates are refitted incrementally (only new calls are
read, EM starts from the last fit).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..base import storage
from ..base.background import BackgroundWriter
from ..base.errors import ExitCode, FscaleError
from .store import (CallRecord, LearningStore, ReplyRecord, is_damage, quarantine_damaged,
                      record_from_scale)
from .ratings import ModelRating
from .reliability import PRIOR_A, PRIOR_B, Estimate, ReliabilityTracker

if TYPE_CHECKING:
    from ..base.settings import Settings

T = TypeVar("T")

#: Oldest ratings snapshot the engine uses before refreshing it in the background.
SNAPSHOT_MAX_AGE_S = 1.0
#: How long a call waits for the first ratings snapshot before it goes on without it.
SNAPSHOT_WAIT_S = 0.25


def _warn(message: str, key: str | None = None) -> None:
    storage.warn(message, key)


class CallLog:
    """Logging calls, learning ratings from them, and reading them back."""

    def __init__(self, settings: Settings, writer: BackgroundWriter, *,
                 origin: str | None = None) -> None:
        self.settings = settings
        self.writer = writer
        #: Who made the calls (e.g. "mcp"), stored as ``extra.origin`` on each (None: not said).
        self.origin = origin
        self._snapshot: dict[str, ModelRating] | None = None
        #: The label-free estimates of the last snapshot, and the tracker that refits them.
        self.estimates: dict[str, Estimate] = {}
        self._tracker = ReliabilityTracker(family_of=self.family_of)
        self._snapshot_at = 0.0
        self._loading: asyncio.Task[Any] | None = None
        #: When set, finished calls go here instead of the log (a Ray actor hands its records
        #: back to the driver, which writes them once): ``sink(record, learn)``.
        self.sink: Callable[[CallRecord, bool], None] | None = None
        #: Calls this process could not write to the log (a full or read-only home).
        self.unlogged = 0

    @property
    def path(self) -> Any:
        return LearningStore.for_settings(self.settings).path

    def family_of(self, alias: str) -> str:
        """A model's family (config), so one line's shared mistakes do not vouch for each other."""
        model = self.settings.models.get(alias)
        if model is not None and model.family:
            return str(model.family)
        from ..catalog.builtins import family_of

        return family_of(alias)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.get("log_calls"))

    def open(self) -> LearningStore:
        """A store for the calling thread (close it, or use it as a context manager)."""
        return LearningStore.for_settings(self.settings)

    # -- writing (engine side, never blocks) ----------------------------------------------
    def _writer_store(self) -> LearningStore:
        store = self.writer.local.get("calllog")
        if store is None:
            store = self.writer.local["calllog"] = self.open()
            self.writer.on_close(store.close)
        return store

    def record(self, record: CallRecord, *, learn: bool = True) -> None:
        """Log one call (and learn from it) on the writer thread; a failure is a warning."""
        if not self.enabled:
            return
        if self.origin is not None:
            record.extra.setdefault("origin", self.origin)
        if self.sink is not None:
            self.sink(record, learn)
            return
        keep_text = bool(self.settings.get("log_text"))

        def write() -> None:
            try:
                self._writer_store().record_call(record, learn=learn, keep_text=keep_text)
            except (sqlite3.Error, OSError) as exc:
                self.unlogged += 1
                store = self.writer.local.pop("calllog", None)
                if store is not None:  # a fresh connection for the next call (space may return)
                    store.close()
                why = storage.home_problem(exc, self.path) or f"{type(exc).__name__}: {exc}"
                # Once per process: a batch on a full disk says it once, not once per item.
                _warn(f"warning: the call log cannot be written ({why}); calls of this run "
                      "are not logged", key="calllog-write")

        self.writer.submit(write)

    def record_scale(self, request: Any, result: Any) -> None:
        self.record(record_from_scale(request, result))

    def record_generate(self, request: Any, result: Any) -> None:
        """Generate calls are logged (kind ``generate``) but move no rating."""
        replies = [ReplyRecord(model=c.model, role="candidate", answer=c.answer,
                               status="answered" if c.ok else "failed", latency_s=c.latency_s,
                               error=c.error, raw=c.text) for c in result.all_outputs]
        replies += [ReplyRecord(model=v.judge, role="judge",
                                answer=None if v.choice_index is None else str(v.choice_index),
                                status="failed" if v.error else "answered",
                                latency_s=v.latency_s, error=v.error, raw=v.raw)
                    for v in result.judge_votes]
        self.record(CallRecord(
            id=result.id, kind="generate", question=request.question, context=request.context,
            members=list(result.generators), answer=result.answer, status=result.status,
            elapsed_s=result.elapsed_s, calls_made=result.calls_made, replies=replies,
            extra={"strategy": result.strategy, "winner_index": result.winner_index,
                   "judges": list(result.judges), "item_id": request.item_id,
                   "usage": result.usage, "spend": result.spend.to_dict()}),
            learn=False)

    # -- ratings snapshot for the engine ----------------------------------------------------
    def _read_ratings(self) -> dict[str, ModelRating]:
        """The Elo table (and, as a side effect, ``estimates`` brought up to date)."""
        from .rows import refresh_tracker

        path = LearningStore.for_settings(self.settings).path
        if not path.exists():
            return {}
        try:
            conn = storage.open_sqlite(path, timeout=1.0, readonly=True)
        except sqlite3.Error:
            return {}
        try:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM ratings").fetchall()
        except sqlite3.Error:
            conn.close()
            return {}
        try:
            self.estimates = dict(refresh_tracker(conn, self._tracker))
        except (sqlite3.Error, ValueError) as exc:  # keep the last estimates, start afresh
            self._tracker.reset()
            _warn(f"warning: the accuracy estimates were not refreshed ({type(exc).__name__}: "
                  f"{exc})")
        finally:
            conn.close()
        return {r["model"]: ModelRating(model=r["model"], rating=r["rating"], games=r["games"],
                                        calls=r["calls"], agree=r["agree"],
                                        disagree=r["disagree"], feedback=r["feedback"],
                                        last_seen=r["last_seen"]) for r in rows}

    async def ratings_snapshot(self) -> dict[str, ModelRating]:
        """Current ratings for engine decisions; read in a thread, never blocking the loop."""
        now = time.monotonic()
        if self._snapshot is not None and now - self._snapshot_at < SNAPSHOT_MAX_AGE_S:
            return self._snapshot
        if self._loading is None or self._loading.done():
            async def load() -> None:
                table = await asyncio.to_thread(self._read_ratings)
                self._snapshot, self._snapshot_at = table, time.monotonic()

            self._loading = asyncio.ensure_future(load())
        if self._snapshot is None:
            try:
                await asyncio.wait_for(asyncio.shield(self._loading), SNAPSHOT_WAIT_S)
            except (TimeoutError, asyncio.TimeoutError):
                return {}
            except Exception:  # an unreadable log must not stop the call
                return {}
        return self._snapshot or {}

    def rating_of(self, alias: str) -> float:
        """``--tie-break rating``'s key: the last snapshot's label-free accuracy estimate (the
        prior's mean when unknown). Not Elo: the estimate does not trust a bad majority, and a
        tie is exactly where the majority says nothing."""
        entry = self.estimates.get(alias)
        return entry.accuracy if entry is not None else PRIOR_A / (PRIOR_A + PRIOR_B)

    async def close(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)

    # -- reading and feedback (views; blocking) --------------------------------------------
    def _read(self, fn: Callable[[LearningStore], T], *, write: bool = False) -> T:
        """Run ``fn`` on a fresh store; a log damaged past its header is moved aside (a fresh
        one starts next time) and reported as one clear error.

        A home that cannot be written (read-only, full, denied) still answers reads: the log
        is opened read-only (an absent log reads as empty). A write there, or a log that cannot
        be read at all, is a :class:`~..errors.StateError` (one line, exit 2)."""
        path = self.path
        try:
            with self.open() as store:
                return fn(store)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc) and quarantine_damaged():
                raise FscaleError(f"the call log is damaged ({exc}); it was moved aside, run the "
                                  "command again", ExitCode.INTERNAL_ERROR) from None
            if storage.home_problem(exc, path) is None:
                raise
            failure: BaseException = exc
        except OSError as exc:
            if storage.home_problem(exc, path) is None:
                raise
            failure = exc
        if write:
            raise storage.state_error(failure, path, "write the call log") from None
        try:
            with LearningStore(path if path.exists() else Path(":memory:"),
                               readonly=path.exists()) as store:
                return fn(store)
        except (sqlite3.OperationalError, OSError) as exc:
            raise storage.state_error(exc, path, "read the call log") from None

    def history(self, limit: int = 20, text: str | None = None) -> list[dict[str, Any]]:
        """Newest first; ``text`` filters on id, item id, question, answer and status (SQL)."""
        return self._read(lambda store: store.recent(limit, text=text))

    def call(self, call_id: str) -> dict[str, Any]:
        return self._read(lambda store: store.get(call_id))

    def ratings(self) -> dict[str, ModelRating]:
        return self._read(lambda store: store.ratings())

    def reliability(self) -> dict[str, Estimate]:
        """Each model's label-free accuracy estimate from the whole log (:mod:`.reliability`)."""
        return self._read(lambda store: store.reliability(self.family_of))

    def rating_history(self, models: Sequence[str] | None = None
                       ) -> dict[str, list[tuple[float, float]]]:
        return self._read(lambda store: store.history(models))

    def feedback(self, call_id: str, kind: str, **fields: Any) -> dict[str, Any]:
        """Record feedback; the latest of a group on a call replaces the earlier one (then the
        outcome's ``replaced`` names it and ``changes`` are the net rating changes)."""
        outcome = self._read(lambda store: store.add_feedback(call_id, kind, **fields),
                             write=True)
        self._snapshot_at = 0.0
        return outcome

    def undo_feedback(self, call_id: str) -> dict[str, Any]:
        """Take back the current feedback on a call (the latest one); the ratings are replayed
        from the log without it. Returns ``{"id", "undone": {kind, label, prefer, over, ts,
        state, ...}, "changes": {model: delta}, "feedback": [kinds still current]}``; a call
        with nothing to undo (or an unknown id) is a UsageError."""
        outcome = self._read(lambda store: store.undo_feedback(call_id), write=True)
        self._snapshot_at = 0.0
        return outcome
