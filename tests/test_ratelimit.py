"""Send limits: no 60-second window ever sees more than rpm requests, across processes.

The window arithmetic runs on a fake clock (no real waiting); the cross-process test starts real
``fscale`` processes against the loopback server with the test-only ``FSCALE_RATE_WINDOW_S``
shrinking the minute to a few seconds, and checks what the server recorded.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import sqlite3

import pytest
import tomli_w

from fscale_tui.engine.wire.ratelimit import MemoryLimiter, SQLiteLimiter, SendLimiter, make_limiter, shape
from tests.conftest import start_cli, STUB_MODELS, Behaviour, mid


class FakeClock:
    """Time moves only when every task is waiting on it: then it jumps to the next wake-up."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = 0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + max(0.0, seconds), self._seq, fut))
        self._seq += 1
        await fut

    async def run(self, *coros) -> list:
        tasks = [asyncio.ensure_future(c) for c in coros]
        while not all(t.done() for t in tasks):
            for _ in range(10):
                await asyncio.sleep(0)
            if self._sleepers:
                when, _, fut = heapq.heappop(self._sleepers)
                self.t = max(self.t, when)
                fut.set_result(None)
        return [t.result() for t in tasks]


def busiest_window(times: list[float], window: float = 60.0) -> int:
    """The most send times in any half-open window [t, t + window)."""
    times = sorted(times)
    best = i = 0
    for j, t in enumerate(times):
        while t - times[i] >= window:
            i += 1
        best = max(best, j - i + 1)
    return best


async def _hammer(limiter: SendLimiter, clock: FakeClock, key: str, rpm: float, burst: int | None,
                  n: int, tasks: int, out: list[float]) -> None:
    """``tasks`` workers sending as fast as the limiter allows, ``n`` sends in all."""
    remaining = [n]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await limiter.acquire(key, rpm, burst)
            out.append(clock.now())

    await asyncio.gather(*(worker() for _ in range(tasks)))


async def test_two_processes_sharing_the_state_dir_never_exceed_rpm(tmp_path):
    """Two limiters on one SQLite file (as two processes have) draw from one bucket."""
    clock = FakeClock()
    db = tmp_path / "state" / "ratelimit.sqlite3"
    a, b = SQLiteLimiter(db, clock=clock), SQLiteLimiter(db, clock=clock)
    sent: list[float] = []
    await clock.run(_hammer(a, clock, "nim", 60, None, 150, 6, sent),
                    _hammer(b, clock, "nim", 60, None, 150, 6, sent))
    await a.aclose()
    await b.aclose()
    assert len(sent) == 300
    assert 55 <= busiest_window(sent) <= 60  # at the limit, never over it
    # Another provider has its own bucket.
    other = SQLiteLimiter(db, clock=clock)
    assert await other.acquire("github", 60, None) == 0.0
    await other.aclose()


async def test_a_bucket_per_process_is_what_broke_the_promise(tmp_path):
    """The control: the same load on two unshared buckets goes over rpm (what sharing fixes)."""
    clock = FakeClock()
    sent: list[float] = []
    await clock.run(_hammer(MemoryLimiter(clock=clock), clock, "nim", 60, None, 150, 6, sent),
                    _hammer(MemoryLimiter(clock=clock), clock, "nim", 60, None, 150, 6, sent))
    assert busiest_window(sent) > 60


@pytest.mark.parametrize("rpm", [1, 2, 7, 15, 40, 60, 600, 12.5])
@pytest.mark.parametrize("burst", [None, 1, 5, 1000])
async def test_no_window_exceeds_rpm_whatever_the_burst(tmp_path, rpm, burst):
    clock = FakeClock()
    limiter = make_limiter(tmp_path / "state", {}, clock=clock)
    sent: list[float] = []
    n = int(rpm * 4) + 3
    capacity, _ = shape(rpm, burst)
    await clock.run(_hammer(limiter, clock, "p", rpm, burst, n, capacity + 2, sent))
    await limiter.aclose()
    assert busiest_window(sent) <= rpm
    assert sum(t == sent[0] for t in sent) == capacity  # the burst goes out at once, no more


async def test_the_test_only_window_knob_scales_the_minute(tmp_path):
    clock = FakeClock()
    limiter = make_limiter(tmp_path / "state", {"FSCALE_RATE_WINDOW_S": "2"}, clock=clock)
    sent: list[float] = []
    await clock.run(_hammer(limiter, clock, "p", 10, None, 40, 2, sent))
    await limiter.aclose()
    assert busiest_window(sent, 2.0) <= 10 and sent[-1] - sent[0] < 20


async def test_a_lock_held_by_another_process_does_not_block_the_event_loop(tmp_path):
    db = tmp_path / "state" / "ratelimit.sqlite3"
    limiter = SQLiteLimiter(db)
    await limiter.acquire("p", 600, None)  # creates the table
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is in the middle of its transaction
    try:
        pending = asyncio.ensure_future(limiter.acquire("p", 600, None))
        ticks = 0
        for _ in range(5):
            await asyncio.sleep(0.02)
            ticks += 1
        assert ticks == 5 and not pending.done()  # the loop ran; the send waits for the lock
    finally:
        other.execute("COMMIT")
        other.close()
    await asyncio.wait_for(pending, 10)
    await limiter.aclose()


_cli = start_cli


@pytest.mark.xdist_group("serial")  # a rate-limit window
@pytest.mark.slow
def test_two_fscale_processes_keep_the_busiest_window_under_rpm(server, fscale_home, tmp_path):
    """Acceptance: two real processes on one FSCALE_HOME, concurrency 1, a stalled first reply
    and resets that force resends: the busiest window at the server never exceeds rpm, and every
    request the server saw was counted by the process that sent it."""
    rpm, window = 20, 4.0
    doc = {
        "providers": {"stub": {"base_url": server.base_url, "rpm": rpm, "concurrency": 1}},
        "models": {alias: {"provider": "stub", "id": m, "tier": tier, "family": fam}
                   for alias, (m, tier, fam) in STUB_MODELS.items()},
        "panels": {"default": ["fast-a"]},
    }
    (fscale_home / "config.toml").write_text(tomli_w.dumps(doc))
    script = [Behaviour(reply="YES", latency=1.0)]  # the first reply stalls (concurrency 1)
    for i in range(40):
        script.append(Behaviour(reset=True) if i % 4 == 1 else Behaviour(reply="YES"))
    server.script(mid("fast-a"), *script)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"q{i}", "question": f"question {i}?",
                                         "answers": ["YES", "NO"]}) + "\n" for i in range(14)))
    env = {"FSCALE_RATE_WINDOW_S": str(window), "FSCALE_TIMEOUT_FAST": "30"}
    procs = [_cli(fscale_home, "scale", "--batch", str(items), "-k", "1", env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    lines = [json.loads(x) for out, _ in outs for x in out.splitlines()]
    assert len(lines) == 28 and all(x["answer"] == "YES" for x in lines)
    assert server.cancelled(mid("fast-a")) >= 2  # resets happened and were resent
    assert sum(x["calls_made"] for x in lines) == server.count(mid("fast-a"))
    assert server.max_in_window(window) <= rpm


@pytest.mark.xdist_group("serial")  # a rate-limit window
@pytest.mark.slow
def test_a_stalled_reply_does_not_bank_tokens_for_a_burst(server, fscale_home, monkeypatch):
    """Concurrency 1 and a first reply that stalls longer than the window: the requests queued
    behind it must not have taken their tokens while waiting, or they all go out at once."""
    from fscale_tui.engine.wire.client import ChatClient
    from fscale_tui.engine.base.calls import RequestCounter
    from fscale_tui.engine.catalog.config import load_settings

    rpm, window = 10, 2.0
    monkeypatch.setenv("FSCALE_RATE_WINDOW_S", str(window))
    monkeypatch.setenv("FSCALE_TIMEOUT_FAST", "30")
    doc = {
        "providers": {"stub": {"base_url": server.base_url, "rpm": rpm, "concurrency": 1}},
        "models": {alias: {"provider": "stub", "id": m, "tier": tier, "family": fam}
                   for alias, (m, tier, fam) in STUB_MODELS.items()},
    }
    (fscale_home / "config.toml").write_text(tomli_w.dumps(doc))
    server.script(mid("fast-a"), Behaviour(reply="first", latency=window * 1.5), Behaviour(reply="YES"))

    async def main() -> tuple[list, RequestCounter]:
        settings = load_settings()
        counter = RequestCounter()
        async with ChatClient(settings) as client:
            first = asyncio.ensure_future(client.chat(settings.models["fast-a"],
                                                      [{"role": "user", "content": "q0"}], counter=counter))
            await asyncio.sleep(0.05)  # the first request holds the only slot
            rest = [client.chat(settings.models["fast-a"], [{"role": "user", "content": f"q{i}"}],
                                counter=counter) for i in range(1, 14)]
            return await asyncio.gather(first, *rest), counter

    replies, counter = asyncio.run(main())
    assert [r.content for r in replies] == ["first"] + ["YES"] * 13
    assert counter.sent == server.count() == 14
    assert server.max_in_window(window) <= rpm
