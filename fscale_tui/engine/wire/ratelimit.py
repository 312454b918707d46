"""Send limits: no 60-second window ever sees more than a provider's ``rpm`` requests.

The promise covers every HTTP request fscale sends to a provider (first tries, retries,
connection-reset resends, shadow challengers, probes) from every fscale process that shares one
``FSCALE_HOME``. Three rules make it hold:

* **A token is taken at the moment of sending**: the chat client calls :meth:`SendLimiter.acquire`
  after it holds the provider's concurrency slot and right before the request goes out, once per
  send. Nothing is banked while a request waits for a slot.
* **The bucket is shared**: the embedded backend (:class:`SQLiteLimiter`) keeps each provider's
  state in one SQLite table in the state directory, updated in a single short transaction per
  send, so two processes draw from the same bucket.
* **The arithmetic is a guarantee, not an average**: a generic cell rate algorithm (GCRA) with
  ``capacity`` requests of burst and one more every ``interval = W' / (rpm - capacity)`` seconds,
  where ``W' = window + max(1 s, window / 60)`` (61 s for the 60 s window). Any ``n`` sends it
  allows satisfy ``t_n - t_1 >= (n - 1) * interval - (capacity - 1) * interval``, so a 60 s window
  holds at most ``capacity + 60 / interval < rpm`` of them; the extra second absorbs the delay
  between the reserved time and the request reaching the server.

Each acquire *reserves* the next slot (one transaction: read the theoretical arrival time,
advance it by one interval, write it back) and then sleeps until that slot. A caller cancelled
while it sleeps leaves its slot unused: the limiter errs on the side of sending less.

The backend is behind :class:`SendLimiter` (``async acquire(key, rpm, burst)`` and
``async aclose()``); the coordination backend (:mod:`.coordination`) picks this embedded one or
the Redis one (a sorted set of send times per provider, shared by every host). Time comes from
an injectable :class:`Clock` (wall-clock seconds, shared by processes on one machine; tests pass a
fake one). ``FSCALE_RATE_WINDOW_S`` (**test-only**) shrinks the 60 s window so that tests with
real processes finish in seconds; it is not a user setting and is not listed by ``config show``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

#: The window of the README's promise, in seconds.
WINDOW_S = 60.0
#: Test-only: overrides WINDOW_S (e.g. "2" makes a test's minute last two seconds).
WINDOW_ENV = "FSCALE_RATE_WINDOW_S"
DB_NAME = "ratelimit.sqlite3"


class Clock(Protocol):
    """Where the limiter reads the time and how it waits (tests inject a fake one)."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock seconds (comparable across processes on one machine) and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def shape(rpm: float, burst: int | None, window: float = WINDOW_S) -> tuple[int, float]:
    """``(capacity, interval)`` of the bucket that keeps any ``window`` at or below ``rpm``."""
    if rpm <= 0:
        raise ValueError("rpm must be positive")
    default_burst = max(1, int(rpm // 10))
    capacity = max(1, min(burst or default_burst, int(rpm // 2) or 1))
    padded = window + max(1.0, window / 60.0)
    refill = rpm - capacity
    interval = padded / refill if refill > 0 else padded
    return capacity, interval


def reserve(tat: float | None, now: float, capacity: int, interval: float) -> tuple[float, float]:
    """One GCRA step: ``(send_at, new_tat)`` for a send requested at ``now``."""
    tat = now if tat is None or tat < now else tat
    send_at = tat - (capacity - 1) * interval
    if send_at < now + 1e-3:  # float rounding on epoch seconds (the margin is a whole second)
        send_at = now
    return send_at, tat + interval


class SendLimiter:
    """The interface every backend implements (the embedded one below; Redis later)."""

    async def acquire(self, key: str, rpm: float, burst: int | None = None) -> float:
        """Wait until one more request to ``key`` may be sent now; return the seconds waited."""
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class MemoryLimiter(SendLimiter):
    """One process only: the same arithmetic on a dict (used when no state directory is usable)."""

    def __init__(self, *, clock: Clock | None = None, window: float = WINDOW_S) -> None:
        self.clock = clock or SystemClock()
        self.window = window
        self._tat: dict[str, float] = {}

    async def acquire(self, key: str, rpm: float, burst: int | None = None) -> float:
        capacity, interval = shape(rpm, burst, self.window)
        now = self.clock.now()
        send_at, self._tat[key] = reserve(self._tat.get(key), now, capacity, interval)
        if send_at > now:
            await self.clock.sleep(send_at - now)
        return send_at - now


class SQLiteLimiter(SendLimiter):
    """Shared by every process using the same state directory (one small SQLite table, WAL).

    Fast path: the reservation transaction runs inline on the event loop with a zero busy
    timeout, which takes microseconds when no other process holds the write lock. When another
    process does, the transaction is retried in a worker thread that may wait for the lock, so
    the event loop is never blocked by another process.
    """

    def __init__(self, path: Path, *, clock: Clock | None = None, window: float = WINDOW_S) -> None:
        self.path = Path(path)
        self.clock = clock or SystemClock()
        self.window = window
        self._inline: sqlite3.Connection | None = None
        self._threaded: sqlite3.Connection | None = None
        self._thread_lock = threading.Lock()
        self._fallback: MemoryLimiter | None = None

    def _connect(self, timeout: float) -> sqlite3.Connection:
        from ..base import storage

        conn = storage.open_sqlite(self.path, timeout=timeout, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=%d" % int(timeout * 1000))
        storage.use_wal(conn, timeout=timeout)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS gcra (key TEXT PRIMARY KEY, tat REAL NOT NULL)")
        return conn

    @staticmethod
    def _reserve_in(conn: sqlite3.Connection, key: str, now: float, capacity: int,
                    interval: float) -> float:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT tat FROM gcra WHERE key = ?", (key,)).fetchone()
            send_at, tat = reserve(row[0] if row else None, now, capacity, interval)
            conn.execute("INSERT OR REPLACE INTO gcra (key, tat) VALUES (?, ?)", (key, tat))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return send_at

    def _reserve_threaded(self, key: str, capacity: int, interval: float) -> float:
        with self._thread_lock:
            if self._threaded is None:
                self._threaded = self._connect(timeout=30.0)
            # The time is read once the lock is held, so the reservation is for "now".
            return self._reserve_in(self._threaded, key, self.clock.now(), capacity, interval)

    async def acquire(self, key: str, rpm: float, burst: int | None = None) -> float:
        if self._fallback is not None:
            return await self._fallback.acquire(key, rpm, burst)
        capacity, interval = shape(rpm, burst, self.window)
        send_at: float | None = None
        try:
            if self._inline is None:
                self._inline = self._connect(timeout=0.0)
            now = self.clock.now()
            send_at = self._reserve_in(self._inline, key, now, capacity, interval)
        except (sqlite3.OperationalError, OSError):
            send_at = None  # locked by another process (or being created): wait in a thread
        if send_at is None:
            try:
                send_at = await asyncio.to_thread(self._reserve_threaded, key, capacity, interval)
            except (sqlite3.Error, OSError) as exc:
                # The state directory is unusable (read-only, full disk): limit this process
                # alone, and say so once (not once per request in flight).
                from ..base import storage

                storage.warn_state_unwritten(exc, self.path)
                if self._fallback is None:
                    self._fallback = MemoryLimiter(clock=self.clock, window=self.window)
                return await self._fallback.acquire(key, rpm, burst)
        now = self.clock.now()
        if send_at > now:
            await self.clock.sleep(send_at - now)
        return max(0.0, send_at - now)

    async def aclose(self) -> None:
        for conn in (self._inline, self._threaded):
            if conn is not None:
                conn.close()
        self._inline = self._threaded = None


def window_from_env(env: Mapping[str, str] | None = None) -> float:
    """WINDOW_S, or the test-only override in ``FSCALE_RATE_WINDOW_S``."""
    raw = (os.environ if env is None else env).get(WINDOW_ENV)
    try:
        value = float(raw) if raw else WINDOW_S
    except ValueError:
        value = WINDOW_S
    return value if value > 0 else WINDOW_S


def make_limiter(state_dir: Path | None, env: Mapping[str, str] | None = None, *,
                 clock: Clock | None = None) -> SendLimiter:
    """The embedded limiter shared through ``state_dir`` (per process when there is none)."""
    window = window_from_env(env)
    if state_dir is None:
        return MemoryLimiter(clock=clock, window=window)
    return SQLiteLimiter(Path(state_dir) / DB_NAME, clock=clock, window=window)
