"""The shadow budget is held in the shared spend ledger: processes that start calls together
cannot spend the same budget twice (the per-process view of the ledger is read only now and
then). Real SQLite files under tmp_path, real processes, a real redis-server."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from fscale_tui.engine.wire.coordination import FileSpend, allowed
from tests.conftest import needs_redis_client, needs_redis_server
from tests.redis_server import RedisServer

SHARE = 0.1
WINDOW = 200
#: 60 earlier calls of 3 decision requests each: 18 shadows of budget, none spent.
EARLIER = [(f"earlier-{i}", 3, 0) for i in range(60)]


def _reserve_file(state_dir: str, worker: int, start: object) -> int:
    ledger = FileSpend(Path(state_dir))
    start.wait()  # type: ignore[attr-defined]
    got = sum(ledger.reserve(f"w{worker}-{i}", 3, SHARE, WINDOW) for i in range(6))
    ledger.close()
    return got


def _redis_coordination(url: str, home: str):  # noqa: ANN202
    import os

    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.wire.coordination import RedisCoordination

    os.environ["FSCALE_HOME"] = home  # a spawned worker's own environment, or monkeypatched
    return RedisCoordination(load_settings(), url, "env")


def _reserve_redis(where: str, worker: int, start: object) -> int:
    coordination = _redis_coordination(*where.split("|"))
    start.wait()  # type: ignore[attr-defined]
    got = sum(coordination.spend.reserve(f"w{worker}-{i}", 3, SHARE, WINDOW) for i in range(6))
    assert coordination.failed is None, coordination.failed
    return got


def _race(target, where: str) -> list[int]:
    """Six processes, released together, each asking 3 shadows for 6 calls (108 wanted)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Event()
        with ctx.Pool(6) as pool:
            pending = [pool.apply_async(target, (where, w, start)) for w in range(6)]
            start.set()
            return [p.get(timeout=120) for p in pending]


def test_processes_starting_together_share_one_file_budget(tmp_path: Path) -> None:
    ledger = FileSpend(tmp_path)
    ledger.record(EARLIER)
    granted = _race(_reserve_file, str(tmp_path))
    # Exactly the budget, not a budget per process (each would have seen 18 alone).
    assert sum(granted) == allowed([(d, x) for _, d, x in EARLIER], SHARE) == 18
    rows = ledger.recent(1000)
    assert sum(x for _, _, x in rows) == 18  # the reservations are in the ledger
    ledger.close()


def test_a_finished_call_replaces_its_reservation(tmp_path: Path) -> None:
    ledger = FileSpend(tmp_path)
    ledger.record(EARLIER)
    assert ledger.reserve("c1", 3, SHARE, WINDOW) == 3
    assert ledger.recent(1) == [("c1", 0, 3)]
    ledger.record([("c1", 3, 2)], {"c1": 3})  # two of its three shadows were sent
    assert ledger.recent(2) == [("earlier-59", 3, 0), ("c1", 3, 2)]
    # A call that failed before deciding gives its reservation back.
    assert ledger.reserve("c2", 3, SHARE, WINDOW) == 3
    ledger.record([("c2", 0, 0)], {"c2": 3})
    assert ledger.recent(1) == [("c2", 0, 0)]
    # Nothing is left once the window's budget is spent.
    assert ledger.reserve("c3", 50, SHARE, WINDOW) == 16  # 183 decisions, 2 shadows: 18.3 - 2
    assert ledger.reserve("c4", 1, SHARE, WINDOW) == 0
    ledger.close()


@needs_redis_client
@needs_redis_server
def test_processes_starting_together_share_one_redis_budget(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    monkeypatch.setenv("FSCALE_HOME", str(tmp_path))

    with RedisServer() as srv:
        client = redis.Redis.from_url(srv.url)
        for entry in EARLIER:
            client.lpush("fscale:spend:calls", json.dumps(list(entry)))
        granted = _race(_reserve_redis, f"{srv.url}|{tmp_path}")
        assert sum(granted) == 18
        ledger = [json.loads(x) for x in client.lrange("fscale:spend:calls", 0, -1)]
        assert sum(e[2] for e in ledger) == 18
        # The entries are what json.dumps writes, so a finished call removes its own by value.
        coordination = _redis_coordination(srv.url, str(tmp_path))
        mine = next(e for e in ledger if e[2])
        coordination.spend.record([(mine[0], 3, 1)], {mine[0]: mine[2]})
        after = [json.loads(x) for x in client.lrange("fscale:spend:calls", 0, -1)]
        assert after[0] == [mine[0], 3, 1] and mine not in after
        assert len(after) == len(ledger)
        client.close()


def test_calls_not_yet_in_the_ledger_count_once(tmp_path: Path) -> None:
    """A process's calls still queued for the ledger (behind the call log's writes) earn
    their budget at once, and are not counted twice once they are written."""
    ledger = FileSpend(tmp_path)
    pending = [(f"p{i}", 3, 0) for i in range(20)]  # 60 decisions: 6 shadows
    assert ledger.reserve("a", 10, SHARE, WINDOW) == 0  # nothing earned, nothing pending
    assert ledger.reserve("b", 10, SHARE, WINDOW, pending) == 6
    ledger.record(pending[:10])  # half of them arrived
    assert ledger.reserve("c", 10, SHARE, WINDOW, pending) == 0  # b holds all 6
    # b finished (its entry waits for the writer): it no longer holds its reservation, it
    # spent 6 shadows on 3 decisions; ten more calls earn 3 shadows.
    pending += [("b", 3, 6)] + [(f"r{i}", 3, 0) for i in range(10)]
    assert ledger.reserve("d", 10, SHARE, WINDOW, pending) == 3  # 93 decisions: 9.3 - 6


@needs_redis_client
@needs_redis_server
def test_calls_not_yet_in_the_redis_ledger_count_once(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSCALE_HOME", str(tmp_path))
    pending = [(f"p{i}", 3, 0) for i in range(20)]
    with RedisServer() as srv:
        spend = _redis_coordination(srv.url, str(tmp_path)).spend
        assert spend.reserve("a", 10, SHARE, WINDOW) == 0
        assert spend.reserve("b", 10, SHARE, WINDOW, pending) == 6
        spend.record(pending[:10])
        assert spend.reserve("c", 10, SHARE, WINDOW, pending) == 0
        pending.append(("q", 30, 0))  # 30 decisions more: 3 shadows
        assert spend.reserve("d", 10, SHARE, WINDOW, pending) == 3
