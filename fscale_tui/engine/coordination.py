"""What fscale processes must share, behind one interface: the embedded default or Redis.

Three pieces of state decide whether many processes behave like one:

* **the send record** of each provider (the rate limiter: no 60-second window may see more
  than the provider's ``rpm`` sends, whichever process sent them);
* **health verdicts** (``dead`` / ``unavailable`` / ``rate_limited`` with their TTLs: a model
  found dead by one process is skipped by the others);
* **the challenger's exploration counts** (how often each model was drawn as the shadow
  challenger, so several processes do not all explore the same outsider);
* **the spend ledger** (each recent call's decision and shadow requests: ``shadow_budget``
  bounds the shadows' share over the last 200 calls of all processes, not of each one).

:class:`Coordination` hands out one object for each. Two backends implement it:

``embedded`` (the default, nothing to set up)
    The state directory, as before: ``ratelimit.sqlite3`` (GCRA in one SQLite transaction,
    :class:`.ratelimit.SQLiteLimiter`), ``health.json``, ``challenger.json`` and
    ``spend.sqlite3``. Shared by every process that uses the same ``FSCALE_HOME`` on one
    machine.

``redis`` (``pip install 'fscale[fleet]'``; ``FSCALE_REDIS_URL`` or ``[fleet] redis_url``)
    Shared by every process on every host that uses the same URL.

    - Sends: one Lua script per send (atomic on the server) over a sorted set of reserved send
      times per provider (``fscale:rl:<provider>``). It drops times older than the padded
      window ``W' = window + max(1 s, window/60)``, and reserves ``max(now, last reserved,
      rpm-th most recent + W')``: reserved times never decrease and any ``rpm + 1`` of them
      span at least ``W'``, so no 60-second window holds more than ``rpm`` sends. The time is
      Redis's own clock (``TIME``), so hosts with skewed clocks still agree; the caller sleeps
      until its slot. A caller cancelled while it sleeps leaves its slot unused (fewer sends,
      never more).
    - Health: one key per model (``fscale:health:<alias>``, JSON) that expires with its TTL
      (``dead`` has none). ``is_down`` runs on the event loop, so it reads a local copy that a
      thread refreshes from Redis at most every :data:`REFRESH_S` seconds; verdicts this
      process records are in the copy at once.
    - Exploration counts: one hash (``fscale:challenger:draws``), ``HINCRBY`` per draw.
    - Spend ledger: one list (``fscale:spend:calls``), ``LPUSH`` + ``LTRIM`` per call.

    If Redis cannot be reached (at start or mid-run), fscale prints **one** warning and goes on
    with the embedded backend for the rest of the process: a call is never lost, nor does it
    hang (every Redis command has a short socket timeout).

``redis`` and ``ray`` are imported only when a Redis URL is configured: one-shot commands
without one never import them.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import storage
from .ratelimit import WINDOW_S, Clock, SendLimiter, make_limiter, window_from_env

REDIS_ENV = "FSCALE_REDIS_URL"
#: Seconds a Redis command (or connection attempt) may take before the backend is given up.
REDIS_TIMEOUT_S = 2.0
#: Seconds between two refreshes of the local copy of the shared health verdicts and counts.
REFRESH_S = 1.0
PREFIX = "fscale:"
DRAWS_FILE = "challenger.json"
SPEND_FILE = "spend.sqlite3"
#: Calls the spend ledger keeps (the budget looks at the last 200; older ones are pruned).
SPEND_KEEP = 1000

_warned = False


def safe_url(url: str | None) -> str:
    """The URL with any password replaced by ``***`` (for every message and ``config show``)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "redis://***"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if user else f":***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redis_url(settings: Any) -> tuple[str | None, str]:
    """``(url, where it came from)``: the environment wins over ``[fleet] redis_url``."""
    env = getattr(settings, "env", {}) or {}
    if env.get(REDIS_ENV):
        return env[REDIS_ENV], "env"
    fleet = (getattr(settings, "user_config", {}) or {}).get("fleet") or {}
    if isinstance(fleet, dict) and fleet.get("redis_url"):
        return str(fleet["redis_url"]), "config"
    return None, "default"


def _warn_once(message: str) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    from .redact import redact

    sys.stderr.write(f"fscale: warning: {redact(message)}\n")
    sys.stderr.flush()


# -- the interface -------------------------------------------------------------------------
class HealthBackend:
    """Where health verdicts live. ``load`` and ``store`` block: call them off the event loop."""

    shared_refresh = False  #: True: re-read now and then (other hosts write while we run)

    def load(self) -> dict[str, Any]:
        raise NotImplementedError

    def store(self, alias: str, entry: dict[str, Any], ttl: float | None) -> None:
        raise NotImplementedError


class DrawCounts:
    """How often each model was drawn as the shadow challenger (blocking; off the loop)."""

    def load(self) -> dict[str, int]:
        raise NotImplementedError

    def add(self, alias: str) -> None:
        raise NotImplementedError


class SpendLedger:
    """Each recent call's decision and shadow requests, shared by the processes (blocking)."""

    def recent(self, n: int) -> list[tuple[str, int, int]]:
        """The last ``n`` calls as ``(call id, decision, shadow)``, oldest first."""
        raise NotImplementedError

    def record(self, entries: list[tuple[str, int, int]]) -> None:
        raise NotImplementedError


class Coordination:
    """One per engine: the limiter (one per HTTP client), health, exploration counts and the
    spend ledger."""

    name = "embedded"
    _health: HealthBackend
    _draws: DrawCounts
    _spend: SpendLedger

    def limiter(self, *, clock: Clock | None = None) -> SendLimiter:
        raise NotImplementedError

    @property
    def health(self) -> HealthBackend:
        return self._health

    @property
    def draws(self) -> DrawCounts:
        return self._draws

    @property
    def spend(self) -> SpendLedger:
        return self._spend

    def describe(self) -> dict[str, Any]:
        """What ``config show`` and ``health`` print: backend, where, and why (no secret)."""
        raise NotImplementedError

    def close(self) -> None:
        return None


# -- embedded ------------------------------------------------------------------------------
class FileHealth(HealthBackend):
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "health.json"

    def load(self) -> dict[str, Any]:
        return storage.read_json(self.path)

    def store(self, alias: str, entry: dict[str, Any], ttl: float | None) -> None:
        def change(doc: dict[str, Any]) -> None:
            doc[alias] = entry

        storage.update_json(self.path, change)


class FileDraws(DrawCounts):
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / DRAWS_FILE

    def load(self) -> dict[str, int]:
        return {k: int(v) for k, v in storage.read_json(self.path).items()
                if isinstance(v, (int, float))}

    def add(self, alias: str) -> None:
        def change(doc: dict[str, Any]) -> None:
            doc[alias] = int(doc.get(alias) or 0) + 1

        storage.update_json(self.path, change)


class FileSpend(SpendLedger):
    """``spend.sqlite3`` in the state directory: one row per call (WAL; a write is one small
    transaction on the engine's writer thread, a read one indexed query)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / SPEND_FILE
        self._lock = threading.Lock()
        self._conn: Any = None

    def _db(self) -> Any:
        if self._conn is None:
            conn = storage.open_sqlite(self.path, timeout=5.0, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except Exception:  # another process is switching it now: WAL either way
                pass
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS calls (seq INTEGER PRIMARY KEY "
                         "AUTOINCREMENT, id TEXT, decision INTEGER NOT NULL, shadow INTEGER "
                         "NOT NULL)")
            self._conn = conn
        return self._conn

    def recent(self, n: int) -> list[tuple[str, int, int]]:
        if not self.path.exists():
            return []
        with self._lock:
            rows = self._db().execute("SELECT id, decision, shadow FROM calls ORDER BY seq DESC "
                                      "LIMIT ?", (int(n),)).fetchall()
        return [(str(i), int(d), int(x)) for i, d, x in reversed(rows)]

    def record(self, entries: list[tuple[str, int, int]]) -> None:
        if not entries:
            return
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT INTO calls (id, decision, shadow) VALUES (?, ?, ?)",
                                 [(i, int(d), int(x)) for i, d, x in entries])
                top = conn.execute("SELECT MAX(seq) FROM calls").fetchone()[0] or 0
                if top % 100 < len(entries) or top > 10 * SPEND_KEEP:
                    conn.execute("DELETE FROM calls WHERE seq <= ?", (top - SPEND_KEEP,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class EmbeddedCoordination(Coordination):
    name = "embedded"

    def __init__(self, settings: Any, *, note: str = "") -> None:
        self.settings = settings
        self.state_dir = Path(settings.paths.state_dir)
        self.note = note
        self._health = FileHealth(self.state_dir)
        self._draws = FileDraws(self.state_dir)
        self._spend = FileSpend(self.state_dir)

    def limiter(self, *, clock: Clock | None = None) -> SendLimiter:
        return make_limiter(self.state_dir, self.settings.env, clock=clock)

    def close(self) -> None:
        self._spend.close()

    def describe(self) -> dict[str, Any]:
        out = {"backend": "embedded", "where": str(self.state_dir),
               "shared_by": "processes on this machine using this state directory"}
        if self.note:
            out["note"] = self.note
        return out


# -- redis -----------------------------------------------------------------------------------
#: KEYS[1] the provider's sorted set, KEYS[2] its sequence counter.
#: ARGV: rpm, padded window (s). Returns the delay until the reserved slot, in microseconds.
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm = tonumber(ARGV[1])
local padded = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. tostring(now - padded))
local n = redis.call('ZCARD', KEYS[1])
local slot = now
if n > 0 then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  local l = tonumber(last[2])
  if l > slot then slot = l end
end
if n >= rpm then
  local r = redis.call('ZRANGE', KEYS[1], n - rpm, n - rpm, 'WITHSCORES')
  local edge = tonumber(r[2]) + padded
  if edge > slot then slot = edge end
end
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], slot, string.format('%.6f', slot) .. ':' .. seq)
local ttl = math.ceil((slot - now) + 2 * padded) + 1
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return math.floor((slot - now) * 1000000)
"""


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError, asyncio.TimeoutError, TimeoutError)


class RedisLimiter(SendLimiter):
    """The fleet-wide send record (see the module doc); falls back to the embedded limiter."""

    def __init__(self, coordination: "RedisCoordination", *, clock: Clock | None = None,
                 window: float = WINDOW_S) -> None:
        self.coordination = coordination
        self.clock = clock
        self.window = window
        self._client: Any = None
        self._script: Any = None
        self._fallback: SendLimiter | None = None

    def _embedded(self) -> SendLimiter:
        if self._fallback is None:
            self._fallback = self.coordination.embedded.limiter(clock=self.clock)
        return self._fallback

    async def acquire(self, key: str, rpm: float, burst: int | None = None) -> float:
        if self.coordination.failed is not None:
            return await self._embedded().acquire(key, rpm, burst)
        try:
            if self._client is None:
                self._client = self.coordination.async_client()
                self._script = self._client.register_script(_RESERVE_LUA)
            padded = self.window + max(1.0, self.window / 60.0)
            limit = max(1, int(rpm))
            micros = await self._script(keys=[f"{PREFIX}rl:{key}", f"{PREFIX}rlseq:{key}"],
                                        args=[limit, repr(padded)])
        except _redis_errors() as exc:
            self.coordination.fail(exc)
            return await self._embedded().acquire(key, rpm, burst)
        delay = max(0.0, int(micros) / 1e6)
        if delay > 0:
            if self.clock is not None:
                await self.clock.sleep(delay)
            else:
                await asyncio.sleep(delay)
        return delay

    async def aclose(self) -> None:
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception:  # closing a dead connection must not fail the run
                pass
            self._client = None
        if self._fallback is not None:
            await self._fallback.aclose()


class RedisHealth(HealthBackend):
    shared_refresh = True

    def __init__(self, coordination: "RedisCoordination") -> None:
        self.coordination = coordination

    def load(self) -> dict[str, Any]:
        c = self.coordination
        if c.failed is None:
            try:
                client = c.sync_client()
                keys = sorted(client.scan_iter(match=f"{PREFIX}health:*", count=500))
                values = client.mget(keys) if keys else []
                out: dict[str, Any] = {}
                for k, v in zip(keys, values):
                    if v is None:
                        continue
                    try:
                        out[k.decode()[len(PREFIX) + 7:]] = json.loads(v)
                    except (ValueError, UnicodeDecodeError):
                        continue
                return out
            except _redis_errors() as exc:
                c.fail(exc)
        return c.embedded.health.load()

    def store(self, alias: str, entry: dict[str, Any], ttl: float | None) -> None:
        c = self.coordination
        if c.failed is None:
            try:
                ex = None if ttl is None else max(1, int(ttl + 1))
                c.sync_client().set(f"{PREFIX}health:{alias}", json.dumps(entry), ex=ex)
                return
            except _redis_errors() as exc:
                c.fail(exc)
        c.embedded.health.store(alias, entry, ttl)


class RedisDraws(DrawCounts):
    def __init__(self, coordination: "RedisCoordination") -> None:
        self.coordination = coordination

    def load(self) -> dict[str, int]:
        c = self.coordination
        if c.failed is None:
            try:
                raw = c.sync_client().hgetall(f"{PREFIX}challenger:draws")
                return {k.decode(): int(v) for k, v in raw.items()}
            except _redis_errors() as exc:
                c.fail(exc)
        return c.embedded.draws.load()

    def add(self, alias: str) -> None:
        c = self.coordination
        if c.failed is None:
            try:
                c.sync_client().hincrby(f"{PREFIX}challenger:draws", alias, 1)
                return
            except _redis_errors() as exc:
                c.fail(exc)
        c.embedded.draws.add(alias)


class RedisSpend(SpendLedger):
    def __init__(self, coordination: "RedisCoordination") -> None:
        self.coordination = coordination

    def recent(self, n: int) -> list[tuple[str, int, int]]:
        c = self.coordination
        if c.failed is None:
            try:
                raw = c.sync_client().lrange(f"{PREFIX}spend:calls", 0, max(0, int(n) - 1))
                out = []
                for item in reversed(raw):
                    i, d, x = json.loads(item)
                    out.append((str(i), int(d), int(x)))
                return out
            except _redis_errors() as exc:
                c.fail(exc)
            except (ValueError, TypeError):
                return []
        return c.embedded.spend.recent(n)

    def record(self, entries: list[tuple[str, int, int]]) -> None:
        c = self.coordination
        if c.failed is None and entries:
            try:
                pipe = c.sync_client().pipeline(transaction=True)
                for entry in entries:
                    pipe.lpush(f"{PREFIX}spend:calls", json.dumps(list(entry)))
                pipe.ltrim(f"{PREFIX}spend:calls", 0, SPEND_KEEP - 1)
                pipe.execute()
                return
            except _redis_errors() as exc:
                c.fail(exc)
        c.embedded.spend.record(entries)


class RedisCoordination(Coordination):
    def __init__(self, settings: Any, url: str, source: str) -> None:
        self.settings = settings
        self.url = url
        self.source = source
        self.embedded = EmbeddedCoordination(settings)
        #: Why Redis was given up (None while it is in use).
        self.failed: str | None = None
        self._sync: Any = None
        self._lock = threading.Lock()
        self._health = RedisHealth(self)
        self._draws = RedisDraws(self)
        self._spend = RedisSpend(self)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "redis" if self.failed is None else "embedded"

    def _kwargs(self) -> dict[str, Any]:
        return {"socket_timeout": REDIS_TIMEOUT_S, "socket_connect_timeout": REDIS_TIMEOUT_S,
                "retry_on_timeout": False, "health_check_interval": 0}

    def sync_client(self) -> Any:
        with self._lock:
            if self._sync is None:
                import redis

                self._sync = redis.Redis.from_url(self.url, **self._kwargs())
            return self._sync

    def async_client(self) -> Any:
        import redis.asyncio

        return redis.asyncio.Redis.from_url(self.url, **self._kwargs())

    def ping(self) -> bool:
        """Reach Redis once (at start); on failure warn once and use the embedded backend."""
        try:
            self.sync_client().ping()
            return True
        except _redis_errors() as exc:
            self.fail(exc)
            return False

    def fail(self, exc: BaseException) -> None:
        if self.failed is not None:
            return
        self.failed = f"{type(exc).__name__}: {exc}".replace(self.url, safe_url(self.url))
        _warn_once(f"Redis at {safe_url(self.url)} is unreachable ({self.failed}); going on "
                   "with the embedded backend (limits and health shared on this machine only)")

    def limiter(self, *, clock: Clock | None = None) -> SendLimiter:
        return RedisLimiter(self, clock=clock, window=window_from_env(self.settings.env))

    def describe(self) -> dict[str, Any]:
        if self.failed is not None:
            return {"backend": "embedded", "where": str(self.embedded.state_dir),
                    "shared_by": "processes on this machine using this state directory",
                    "note": f"Redis at {safe_url(self.url)} ({self.source}) is unreachable: "
                            f"{self.failed}"}
        return {"backend": "redis", "where": safe_url(self.url), "source": self.source,
                "shared_by": "every process on every host using this Redis URL"}

    def close(self) -> None:
        self.embedded.close()
        if self._sync is not None:
            try:
                self._sync.close()
            except Exception:
                pass


def make_coordination(settings: Any) -> Coordination:
    """The backend the settings ask for: Redis when a URL is set and reachable, else embedded."""
    url, source = redis_url(settings)
    if not url:
        return EmbeddedCoordination(settings)
    from .redact import register_secrets

    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    register_secrets([password])  # the password alone: the rest of the URL is not a secret
    try:
        import redis  # noqa: F401
    except ImportError:
        _warn_once(f"a Redis URL is set ({source}) but the redis client is not installed "
                   "(pip install 'fscale[fleet]'); going on with the embedded backend")
        return EmbeddedCoordination(settings, note="redis client not installed "
                                                   "(pip install 'fscale[fleet]')")
    coordination = RedisCoordination(settings, url, source)
    coordination.ping()
    return coordination


class SharedView:
    """A local copy of shared state, refreshed in a thread at most every ``refresh_s``.

    ``get()`` never blocks once the first load is done (the first one does, bounded by the
    backend's timeouts), so it is safe on the event loop.
    """

    def __init__(self, load: Any, refresh_s: float = REFRESH_S) -> None:
        self._load = load
        self.refresh_s = refresh_s
        self._data: dict[str, Any] | None = None
        self._at = 0.0
        self._busy = False
        self._lock = threading.Lock()
        #: Written by this process lately, with when (kept over a read that may predate the
        #: write reaching the backend through the background writer).
        self._local: dict[str, tuple[float, Any]] = {}

    def _merged(self, data: dict[str, Any]) -> dict[str, Any]:
        merged = dict(data)
        horizon = time.monotonic() - 10 * self.refresh_s
        self._local = {k: v for k, v in self._local.items() if v[0] >= horizon}
        merged.update({k: v[1] for k, v in self._local.items()})
        return merged

    def _refresh(self) -> None:
        started = time.monotonic()
        try:
            data = self._load()
        except Exception:
            data = self._data or {}
        with self._lock:
            self._data = self._merged(data)
            self._at = started
            self._busy = False

    def get(self, refresh: bool = False) -> dict[str, Any]:
        if self._data is None or refresh:
            self._refresh()
            assert self._data is not None
            return self._data
        if time.monotonic() - self._at >= self.refresh_s:
            with self._lock:
                start = not self._busy
                self._busy = True
            if start:
                threading.Thread(target=self._refresh, name="fscale-shared-refresh",
                                 daemon=True).start()
        return self._data

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._local[key] = (time.monotonic(), value)
            if self._data is not None:
                self._data[key] = value


class SpendWindow:
    """This process's view of the spend ledger: the shared calls (re-read in a thread at most
    every ``refresh_s``), the calls this process recorded since (until the ledger shows them),
    and the shadows of its calls still running (``reserved``). Safe on the event loop once
    loaded: :meth:`window` never blocks, and costs O(1) between two reads of the ledger."""

    def __init__(self, ledger: SpendLedger, size: int, refresh_s: float = REFRESH_S) -> None:
        self.ledger = ledger
        self.size = size
        self.reserved = 0
        self._view = SharedView(self._load, refresh_s)
        #: Calls recorded here (with when), newest last, until a read of the ledger has them.
        self._local: list[tuple[float, tuple[str, int, int]]] = []
        self._shared: Any = None  # the ledger read the window below was built from
        self._window: collections.deque[tuple[int, int]] = collections.deque(maxlen=size)

    def _load(self) -> dict[str, Any]:
        return {"calls": self.ledger.recent(self.size)}

    @property
    def loaded(self) -> bool:
        return self._view._data is not None

    def load(self) -> None:
        """The first read (blocking: run it in a thread)."""
        self._view.get(refresh=True)

    def window(self) -> collections.deque[tuple[int, int]]:
        """``(decision, shadow)`` of the last ``size`` calls, oldest first."""
        calls = self._view.get().get("calls") or []
        if calls is not self._shared:  # a new read of the ledger: rebuild from it
            seen = {entry[0] for entry in calls}
            horizon = time.monotonic() - 10 * self._view.refresh_s
            self._local = [(t, e) for t, e in self._local if e[0] not in seen and t >= horizon]
            self._window.clear()
            self._window.extend((d, x) for _, d, x in [*calls, *(e for _, e in self._local)])
            self._shared = calls
        return self._window

    def record(self, call_id: str, decision: int, shadow: int) -> tuple[str, int, int]:
        """Count a finished call here at once; the caller writes the entry to the ledger."""
        entry = (call_id, int(decision), int(shadow))
        self._local.append((time.monotonic(), entry))
        self._window.append((entry[1], entry[2]))
        return entry
