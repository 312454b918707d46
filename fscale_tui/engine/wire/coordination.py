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

    Redis is allowed to misbehave. Every command has a deadline (:data:`REDIS_TIMEOUT_S`);
    a connection error, a timeout, a reply of the wrong type (``+OK`` where an integer or a
    map is due) or out of range (a delay no real reservation can need) is one and the same
    failure: **one** warning, and the embedded backend until Redis answers again. Redis is
    tried again after a back-off (1 s, doubling to 30 s) and used again as soon as it
    answers; the sends this process made meanwhile are added to the shared record then.
    The client speaks RESP2 (no ``HELLO`` handshake to get wrong).

    **A Redis that lost its data** (restarted empty, flushed): a token in ``fscale:epoch``,
    checked by the reservation script, changes; each process then adds its own sends of the
    last window back to the record before its next reservation (and says so once), so the
    fleet-wide limit still holds.

    **A bad URL** (a port out of range, a broken IPv6 address, an unknown scheme) is a
    configuration error (exit 2); ``config show`` still shows it, masked. A password is
    masked wherever a URL is shown, in the userinfo (``:pass@``) or as a query parameter
    (``?password=…``), and registered with the redactor.

``redis`` and ``ray`` are imported only when a Redis URL is configured: one-shot commands
without one never import them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..base import storage
from ..base.redact import is_secret_param, url_secrets
from .ratelimit import WINDOW_S, Clock, SendLimiter, make_limiter, window_from_env

if TYPE_CHECKING:  # redis (the [fleet] extra) is imported only when FSCALE_REDIS_URL is set
    import redis
    import redis.asyncio
    from redis.commands.core import AsyncScript
    from ..base.settings import Settings

T = TypeVar("T")

REDIS_ENV = "FSCALE_REDIS_URL"
#: Seconds a Redis command (or connection attempt) may take before the backend is given up.
REDIS_TIMEOUT_S = 2.0
#: Back-off before Redis is tried again after a failure: first, then doubling up to the last.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
#: Holds a token that changes when Redis loses fscale's data (restart without persistence).
EPOCH_KEY = "fscale:epoch"
#: Query parameters of a Redis URL whose value is a secret.
#: Seconds between two refreshes of the local copy of the shared health verdicts and counts.
REFRESH_S = 1.0
PREFIX = "fscale:"
DRAWS_FILE = "challenger.json"
SPEND_FILE = "spend.sqlite3"
#: Calls the spend ledger keeps (the budget looks at the last 200; older ones are pruned).
SPEND_KEEP = 1000
#: The spend reservation, atomic on the server (``spend_view`` and ``allowed`` over the list's
#: entries, then the caller's pending ones of ARGV[6] it does not have; window ARGV[1], share
#: ARGV[2]): what is left once the reservations of calls in flight are taken, at most ARGV[3];
#: when any, the entry ``[ARGV[4], 0, k]`` is pushed (ARGV[4]: the call id as JSON; written as
#: ``json.dumps`` writes it, so ``record`` can remove it by value). Returns what was granted.
_SPEND_RESERVE_LUA = """
local n = tonumber(ARGV[1])
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[5]) - 1)
local finished, written, held = {}, {}, {}
for i = #items, 1, -1 do
  local e = cjson.decode(items[i])
  if tonumber(e[2]) == 0 and tonumber(e[3]) > 0 then
    held[tostring(e[1])] = tonumber(e[3])
  else
    written[tostring(e[1])] = true
    finished[#finished + 1] = e
  end
end
for _, e in ipairs(cjson.decode(ARGV[6])) do
  if not written[tostring(e[1])] then
    held[tostring(e[1])] = nil
    finished[#finished + 1] = e
  end
end
local holding = 0
for _, k in pairs(held) do holding = holding + k end
local d, x = 0, 0
for i = math.max(1, #finished - n + 1), #finished do
  d = d + tonumber(finished[i][2]); x = x + tonumber(finished[i][3])
end
local k = math.floor(tonumber(ARGV[2]) * d - x + 1e-9)
k = math.max(0, math.min(tonumber(ARGV[3]), math.max(0, k) - holding))
if k > 0 then
  redis.call('LPUSH', KEYS[1], '[' .. ARGV[4] .. ', 0, ' .. string.format('%d', k) .. ']')
  redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[5]) - 1)
end
return k
"""

_warned: set[str] = set()


def safe_url(url: str | None) -> str:
    """The URL with every password replaced by ``***`` (the userinfo's and a query parameter's)
    for every message and ``config show``; a URL that cannot even be split shows its scheme."""
    if not url:
        return ""
    from urllib.parse import parse_qsl, urlencode

    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, hostport = netloc.rsplit("@", 1)
            if ":" in userinfo:
                netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
        query = parts.query
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_param(k) for k, _ in pairs):
            query = urlencode([(k, "***" if is_secret_param(k) else v) for k, v in pairs],
                              safe="*")
        shown = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        scheme = url.split("://", 1)[0] if "://" in url else "redis"
        return f"{scheme}://***"
    for secret in url_secrets(url):  # a value the parser saw differently (escaped, repeated)
        shown = shown.replace(secret, "***")
    return shown


def check_url(url: str) -> str | None:
    """Why ``url`` is not a usable Redis URL (words without the URL), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError: out of range, not a number
        host = parts.hostname
    except ValueError as exc:
        return str(exc).lower()
    if parts.scheme not in ("redis", "rediss", "unix"):
        return f"the scheme must be redis://, rediss:// or unix://, not {parts.scheme or 'none'}"
    if parts.scheme != "unix" and not host:
        return "no host"
    if port == 0:
        return "port 0"
    db = parts.path.lstrip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        return f"the database must be a number, not {db!r}"
    return None


def redis_url(settings: Settings) -> tuple[str | None, str]:
    """``(url, where it came from)``: the environment wins over ``[fleet] redis_url``."""
    env = getattr(settings, "env", {}) or {}
    if env.get(REDIS_ENV):
        return env[REDIS_ENV], "env"
    fleet = (getattr(settings, "user_config", {}) or {}).get("fleet") or {}
    if isinstance(fleet, dict) and fleet.get("redis_url"):
        return str(fleet["redis_url"]), "config"
    return None, "default"


def _warn_once(message: str, key: str = "redis") -> None:
    if key in _warned:
        return
    _warned.add(key)
    from ..base.output import err

    err.write(f"fscale: warning: {message}\n")
    err.flush()


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

    def record(self, entries: list[tuple[str, int, int]],
               held: Mapping[str, int] | None = None) -> None:
        """Add finished calls; ``held``: call id -> the shadows :meth:`reserve` gave it, whose
        reservation the call's entry replaces."""
        raise NotImplementedError

    def reserve(self, call_id: str, want: int, share: float, size: int,
                pending: Sequence[tuple[str, int, int]] = ()) -> int:
        """Hold up to ``want`` shadows for a call that is starting, atomically across every
        process sharing the ledger: what :func:`allowed` leaves over the last ``size - 1``
        finished calls once the reservations of calls in flight are taken (:func:`spend_view`;
        ``pending``: this process's finished calls not in the ledger yet), added as the entry
        ``(call_id, 0, k)`` until :meth:`record` replaces it. Returns ``k``. Each process's own view of the ledger is
        only read now and then; without this, processes starting together would each spend
        the same budget."""
        raise NotImplementedError


def spend_view(rows: Iterable[tuple[str, int, int]], pending: Sequence[tuple[str, int, int]],
               size: int) -> tuple[list[tuple[int, int]], int]:
    """What a reservation weighs: the last ``size - 1`` finished calls (the ledger's ``rows``,
    oldest first, then the ``pending`` ones it does not have yet: a pending call replaces its
    own reservation) and every shadow still held by a call in flight (a reservation
    ``(id, 0, k)``, wherever it is in the ledger: its call's decisions count as none until it
    finishes, as in ``challenger.allowance``)."""
    finished: list[tuple[int, int]] = []
    written: set[str] = set()
    held: dict[str, int] = {}
    for i, d, x in rows:
        if d == 0 and x > 0:
            held[i] = x
        else:
            written.add(i)
            finished.append((d, x))
    for i, d, x in pending:
        if i not in written:
            held.pop(i, None)
            finished.append((d, x))
    return (finished[-(size - 1):] if size > 1 else []), sum(held.values())


def allowed(entries: Iterable[tuple[int, int]], share: float) -> int:
    """The shadow budget's rule: ``share`` × the decisions of ``entries`` minus their shadows,
    at least 0 (``challenger.allowance`` and the ledgers' reservations use it; the Redis
    script repeats it in Lua)."""
    decision = shadow = 0
    for d, x in entries:
        decision += d
        shadow += x
    return max(0, math.floor(share * decision - shadow + 1e-9))


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

        try:
            storage.update_json(self.path, change)
        except OSError as exc:  # a read-only or full home: said once, the run goes on
            storage.warn_state_unwritten(exc, self.path)


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
            storage.use_wal(conn, timeout=5.0)
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

    def record(self, entries: list[tuple[str, int, int]],
               held: Mapping[str, int] | None = None) -> None:
        if not entries:
            return
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if held:
                    conn.executemany("DELETE FROM calls WHERE id = ? AND decision = 0",
                                     [(i,) for i in held])
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

    def reserve(self, call_id: str, want: int, share: float, size: int,
                pending: Sequence[tuple[str, int, int]] = ()) -> int:
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")  # one process at a time between read and insert
            try:
                rows = conn.execute("SELECT id, decision, shadow FROM calls ORDER BY seq DESC "
                                    "LIMIT ?", (SPEND_KEEP,)).fetchall()
                entries, held = spend_view(reversed(rows), pending, size)
                k = min(int(want), max(0, allowed(entries, share) - held))
                if k > 0:
                    conn.execute("INSERT INTO calls (id, decision, shadow) VALUES (?, 0, ?)",
                                 (call_id, k))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return k

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class EmbeddedCoordination(Coordination):
    name = "embedded"
    _spend: FileSpend

    def __init__(self, settings: Settings, *, note: str = "") -> None:
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
#: KEYS[1] the provider's sorted set, KEYS[2] its sequence counter, KEYS[3] the epoch key.
#: ARGV: rpm, padded window (s), the epoch the caller knows ('' if none), a fresh epoch token,
#: then send times (Redis clock) to add first (a caller re-seeding what Redis lost).
#: Returns {delay until the reserved slot in microseconds, epoch, Redis's time in µs}; the delay
#: is -1 when the caller's epoch is not Redis's: Redis lost the record, re-seed and call again.
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rpm = tonumber(ARGV[1])
local padded = tonumber(ARGV[2])
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[3], epoch)
end
if ARGV[3] ~= '' and ARGV[3] ~= epoch then
  return {-1, epoch, now_us}
end
for i = 5, #ARGV do
  local s = tonumber(ARGV[i])
  if s and s > now - padded then
    redis.call('ZADD', KEYS[1], s, string.format('%.6f', s) .. ':seed:' .. redis.call('INCR', KEYS[2]))
  end
end
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
return {math.floor((slot - now) * 1000000), epoch, now_us}
"""


class RedisReplyError(Exception):
    """A reply of the wrong type or out of range: Redis (or what answers as Redis) misbehaves."""


def _redis_errors() -> tuple[type[BaseException], ...]:
    """Everything a misbehaving Redis can cause in the client or in our reading of a reply:
    all of them are the same failure (one warning, the embedded backend meanwhile)."""
    import redis

    return (redis.RedisError, OSError, asyncio.TimeoutError, TimeoutError, RedisReplyError,
            ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise RedisReplyError(f"expected a string, got {type(value).__name__}")


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RedisReplyError(f"expected an integer, got {type(value).__name__}")
    return value


class RedisLimiter(SendLimiter):
    """The fleet-wide send record (see the module doc); the embedded limiter while Redis fails.

    This process remembers its own sends of the last padded window (in Redis's clock), so it
    can put them back when Redis lost them or when it returns from the embedded backend."""

    def __init__(self, coordination: "RedisCoordination", *, clock: Clock | None = None,
                 window: float = WINDOW_S) -> None:
        self.coordination = coordination
        self.clock = clock
        self.window = window
        self.padded = window + max(1.0, window / 60.0)
        #: The longest wait a real reservation can ask for: a longer one is a bad reply.
        self.max_delay = 60 * self.padded
        self._client: redis.asyncio.Redis | None = None
        self._script: AsyncScript | None = None
        self._fallback: SendLimiter | None = None
        self._epoch: dict[str, str] = {}
        #: key -> this process's send times (Redis clock) of the last padded window
        self._sent: dict[str, list[float]] = {}
        #: key -> sends made on the embedded backend, not yet in Redis
        self._unshared: dict[str, list[float]] = {}
        #: Redis's clock minus ours (sends made while Redis is away are kept in its clock)
        self._offset = 0.0

    def _embedded(self) -> SendLimiter:
        if self._fallback is None:
            self._fallback = self.coordination.embedded.limiter(clock=self.clock)
        return self._fallback

    def _remember(self, key: str, when: float, *, unshared: bool = False) -> None:
        horizon = when - self.padded
        for book in (self._sent, self._unshared) if unshared else (self._sent,):
            times = [t for t in book.get(key, ()) if t > horizon]
            times.append(when)
            book[key] = times

    async def _call(self, key: str, rpm: float, known: str, seeds: list[float]
                    ) -> tuple[int, str, int]:
        if self._client is None or self._script is None:  # set and dropped together
            self._client = self.coordination.async_client()
            self._script = self._client.register_script(_RESERVE_LUA)
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            reply = await self._script(
                keys=[f"{PREFIX}rl:{key}", f"{PREFIX}rlseq:{key}", EPOCH_KEY],
                args=[max(1, int(rpm)), repr(self.padded), known, os.urandom(8).hex(),
                      *[repr(t) for t in seeds]])
        if not isinstance(reply, (list, tuple)) or len(reply) != 3:
            raise RedisReplyError(f"the reservation script answered {type(reply).__name__}")
        micros, epoch, now_us = _integer(reply[0]), _text(reply[1]), _integer(reply[2])
        if micros != -1 and not 0 <= micros <= self.max_delay * 1e6:
            raise RedisReplyError(f"a delay of {micros / 1e6:.0f} s is not a reservation")
        return micros, epoch, now_us

    async def _reserve(self, key: str, rpm: float) -> float:
        seeds = self._unshared.pop(key, [])
        micros, epoch, now_us = await self._call(key, rpm, self._epoch.get(key, ""), seeds)
        if micros == -1:  # Redis lost the record (restarted empty): put our sends back
            _warn_once(f"Redis at {safe_url(self.coordination.url)} lost fscale's send record "
                       "(restarted empty?): this process adds back its sends of the last minute",
                       key="redis-lost")
            seeds = self._sent.get(key, [])
            micros, epoch, now_us = await self._call(key, rpm, epoch, seeds)
            if micros == -1:
                raise RedisReplyError("the epoch changed twice in one reservation")
        self._epoch[key] = epoch
        now = now_us / 1e6
        self._offset = now - time.time()
        delay = micros / 1e6
        self._remember(key, now + delay)
        return delay

    async def acquire(self, key: str, rpm: float, burst: int | None = None) -> float:
        c = self.coordination
        if c.available():
            try:
                delay = await self._reserve(key, rpm)
            except _redis_errors() as exc:
                await self._drop_client()
                c.fail(exc)
            else:
                c.recovered()
                if delay > 0:
                    if self.clock is not None:
                        await self.clock.sleep(delay)
                    else:
                        await asyncio.sleep(delay)
                return delay
        # While Redis is away: never more than rpm of this process's own sends in a window,
        # counting those it reserved through Redis just before (the same rule as the script,
        # reserved at once so concurrent callers cannot all pass), and the embedded limiter.
        now = time.time() + self._offset
        times = sorted(t for t in self._sent.get(key, ()) if t > now - self.padded)
        slot = max([now, *times[-1:]])
        limit = max(1, int(rpm))
        if len(times) >= limit:
            slot = max(slot, times[-limit] + self.padded)
        self._remember(key, slot, unshared=True)
        waited = slot - now
        if waited > 0:
            if self.clock is not None:
                await self.clock.sleep(waited)
            else:
                await asyncio.sleep(waited)
        return waited + await self._embedded().acquire(key, rpm, burst)

    async def _drop_client(self) -> None:
        client, self._client, self._script = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), REDIS_TIMEOUT_S)

    async def aclose(self) -> None:
        await self._drop_client()
        if self._fallback is not None:
            await self._fallback.aclose()


class RedisHealth(HealthBackend):
    shared_refresh = True

    def __init__(self, coordination: "RedisCoordination") -> None:
        self.coordination = coordination

    def load(self) -> dict[str, Any]:
        c = self.coordination

        def read(client: redis.Redis) -> dict[str, Any]:
            keys = sorted(client.scan_iter(match=f"{PREFIX}health:*", count=500))
            values = client.mget(keys) if keys else []
            out: dict[str, Any] = {}
            for k, v in zip(keys, values):
                if v is None:
                    continue
                try:
                    entry = json.loads(v)
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(entry, dict):
                    out[_text(k)[len(PREFIX) + 7:]] = entry
            return out

        return c.run(read, c.embedded.health.load)

    def store(self, alias: str, entry: dict[str, Any], ttl: float | None) -> None:
        c = self.coordination
        ex = None if ttl is None else max(1, int(ttl + 1))
        c.run(lambda client: client.set(f"{PREFIX}health:{alias}", json.dumps(entry), ex=ex),
              lambda: c.embedded.health.store(alias, entry, ttl))


class RedisDraws(DrawCounts):
    def __init__(self, coordination: "RedisCoordination") -> None:
        self.coordination = coordination

    def load(self) -> dict[str, int]:
        c = self.coordination

        def read(client: redis.Redis) -> dict[str, int]:
            raw = client.hgetall(f"{PREFIX}challenger:draws")
            if not isinstance(raw, dict):
                raise RedisReplyError(f"HGETALL answered {type(raw).__name__}")
            return {_text(k): int(v) for k, v in raw.items()}

        return c.run(read, c.embedded.draws.load)

    def add(self, alias: str) -> None:
        c = self.coordination
        c.run(lambda client: client.hincrby(f"{PREFIX}challenger:draws", alias, 1),
              lambda: c.embedded.draws.add(alias))


class RedisSpend(SpendLedger):
    """The spend ledger as one Redis list (newest first), the embedded one while Redis fails."""

    def __init__(self, coordination: "RedisCoordination") -> None:
        self.coordination = coordination

    def recent(self, n: int) -> list[tuple[str, int, int]]:
        c = self.coordination

        def read(client: redis.Redis) -> list[tuple[str, int, int]]:
            out = []
            for item in reversed(client.lrange(f"{PREFIX}spend:calls", 0, max(0, int(n) - 1))):
                i, d, x = json.loads(item)
                out.append((str(i), int(d), int(x)))
            return out

        return c.run(read, lambda: c.embedded.spend.recent(n))

    def record(self, entries: list[tuple[str, int, int]],
               held: Mapping[str, int] | None = None) -> None:
        c = self.coordination
        if not entries:
            return

        def write(client: redis.Redis) -> None:
            pipe = client.pipeline(transaction=True)
            for call_id, k in (held or {}).items():
                pipe.lrem(f"{PREFIX}spend:calls", 1, json.dumps([call_id, 0, int(k)]))
            for entry in entries:
                pipe.lpush(f"{PREFIX}spend:calls", json.dumps(list(entry)))
            pipe.ltrim(f"{PREFIX}spend:calls", 0, SPEND_KEEP - 1)
            pipe.execute()

        c.run(write, lambda: c.embedded.spend.record(entries, held))

    def reserve(self, call_id: str, want: int, share: float, size: int,
                pending: Sequence[tuple[str, int, int]] = ()) -> int:
        c = self.coordination

        def hold(client: redis.Redis) -> int:
            reply = client.eval(_SPEND_RESERVE_LUA, 1, f"{PREFIX}spend:calls", max(0, size - 1),
                                repr(float(share)), int(want), json.dumps(call_id), SPEND_KEEP,
                                json.dumps([list(e) for e in pending]))
            if not isinstance(reply, int) or not 0 <= reply <= want:
                raise RedisReplyError(f"the spend reservation answered {reply!r:.40}")
            return reply

        return c.run(hold, lambda: c.embedded.spend.reserve(call_id, want, share, size, pending))


class RedisCoordination(Coordination):
    def __init__(self, settings: Settings, url: str, source: str) -> None:
        self.settings = settings
        self.url = url
        self.source = source
        self.embedded = EmbeddedCoordination(settings)
        #: Why Redis is not in use now (None while it is).
        self.failed: str | None = None
        self._retry_at = 0.0
        self._backoff = RETRY_FIRST_S
        self._sync: redis.Redis | None = None
        self._lock = threading.Lock()
        self._health = RedisHealth(self)
        self._draws = RedisDraws(self)
        self._spend = RedisSpend(self)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "redis" if self.failed is None else "embedded"

    def _kwargs(self) -> dict[str, Any]:
        # RESP2: no HELLO handshake (a server answering it with +OK broke the client).
        return {"socket_timeout": REDIS_TIMEOUT_S, "socket_connect_timeout": REDIS_TIMEOUT_S,
                "retry_on_timeout": False, "health_check_interval": 0, "protocol": 2}

    def sync_client(self) -> redis.Redis:
        with self._lock:
            if self._sync is None:
                import redis

                self._sync = redis.Redis.from_url(self.url, **self._kwargs())
            return self._sync

    def async_client(self) -> redis.asyncio.Redis:
        import redis.asyncio

        return redis.asyncio.Redis.from_url(self.url, **self._kwargs())

    def available(self) -> bool:
        """Whether to use Redis now: yes while it works, and again once the back-off after a
        failure is over (that call is the retry)."""
        return self.failed is None or time.monotonic() >= self._retry_at

    def run(self, op: Callable[[redis.Redis], T], fallback: Callable[[], T]) -> T:
        """``op(client)`` on Redis (blocking; off the event loop), or ``fallback()`` while
        Redis fails; any failure of ``op`` is one failure of the backend."""
        if self.available():
            try:
                result = op(self.sync_client())
            except _redis_errors() as exc:
                self._drop_sync()
                self.fail(exc)
            else:
                self.recovered()
                return result
        return fallback()

    def _drop_sync(self) -> None:
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def ping(self) -> bool:
        """Reach Redis once (at start); on failure warn once and use the embedded backend."""
        return bool(self.run(lambda client: client.ping() or True, lambda: False))

    def fail(self, exc: BaseException) -> None:
        """One failure (of any kind): the embedded backend until the back-off is over. The
        first one in this process is said once; retries that fail again are silent."""
        with self._lock:
            first = self.failed is None
            self.failed = f"{type(exc).__name__}: {exc}".replace(self.url, safe_url(self.url))
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(RETRY_MAX_S, self._backoff * 2)
        if first:
            _warn_once(f"Redis at {safe_url(self.url)} is unreachable or misbehaves "
                       f"({self.failed}); going on with the embedded backend (limits and health "
                       "shared on this machine only) and trying Redis again now and then")

    def recovered(self) -> None:
        if self.failed is None:
            return
        with self._lock:
            self.failed = None
            self._backoff = RETRY_FIRST_S

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
        self._drop_sync()
        self.embedded.close()


def _url_error(settings: Settings) -> tuple[str | None, str, str | None]:
    """``(url, source, why it is invalid or None)``."""
    url, source = redis_url(settings)
    return url, source, (check_url(url) if url else None)


def describe_settings(settings: Settings) -> dict[str, Any]:
    """What ``config show`` prints about coordination when the URL is invalid (no engine can
    be made): the masked URL and why."""
    url, source, why = _url_error(settings)
    return {"backend": "invalid", "where": safe_url(url), "source": source,
            "shared_by": "nobody: the Redis URL is invalid",
            "note": f"invalid Redis URL ({why})"}


def make_coordination(settings: Settings) -> Coordination:
    """The backend the settings ask for: Redis when a URL is set and reachable, else embedded.
    An invalid URL is a :class:`~.errors.ConfigError` (exit 2) naming where it came from."""
    url, source, why = _url_error(settings)
    if not url:
        return EmbeddedCoordination(settings)
    from ..base.redact import register_secrets

    register_secrets(url_secrets(url))  # the passwords alone: the rest of the URL is no secret
    if why is not None:
        from ..base.errors import ConfigError

        where = REDIS_ENV if source == "env" else "config.toml [fleet] redis_url"
        raise ConfigError(f"{where}: invalid Redis URL {safe_url(url)}: {why}")
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
        #: Entries handed to the writer thread and not written yet (call id -> entry).
        self._queued: dict[str, tuple[str, int, int]] = {}
        self._queue_lock = threading.Lock()

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

    def queued(self, entry: tuple[str, int, int]) -> None:
        """``entry`` is on its way to the ledger (the writer thread has it)."""
        with self._queue_lock:
            self._queued[entry[0]] = entry

    def written(self, call_id: str) -> None:
        """The entry of ``call_id`` reached the ledger (or never will)."""
        with self._queue_lock:
            self._queued.pop(call_id, None)

    def pending(self) -> list[tuple[str, int, int]]:
        """The entries on their way to the ledger, oldest first (a copy:
        :meth:`SpendLedger.reserve` reads it in a thread)."""
        with self._queue_lock:
            return list(self._queued.values())

    def record(self, call_id: str, decision: int, shadow: int) -> tuple[str, int, int]:
        """Count a finished call here at once; the caller writes the entry to the ledger."""
        entry = (call_id, int(decision), int(shadow))
        self._local.append((time.monotonic(), entry))
        self._window.append((entry[1], entry[2]))
        return entry
