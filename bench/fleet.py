"""Beyond one machine: in-process batch vs Ray Data, and the fleet-wide rate limit over Redis.

1. Throughput: N scale items (k=3, zero-latency loopback replies, every call logged, no
   challenger) through ``Engine.scale_batch`` in this process, then through Ray Data
   (``fscale_tui.integrations.ray.run_requests``: a local cluster, ``--actors`` actors, the call
   log written by the driver). The loopback server runs in its own process. Ray's start-up
   (``ray.init``) is reported apart from the batch.
2. Fleet limit: 3 real ``fscale scale --batch`` processes, each with its OWN state directory
   (three "hosts"), sharing one provider with ``rpm`` through a real ``redis-server`` on
   loopback; the busiest window the server saw, next to the same run without Redis. The
   test-only ``FSCALE_RATE_WINDOW_S`` shrinks the minute so the run takes seconds.

Needs the [fleet] and [ray] extras and redis-server on PATH.

Usage: python bench/fleet.py [--items 2000] [--actors 2] [--concurrency 16]
                             [--rpm 30] [--window 6] [--per-host 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = {"m-a": "bench/a", "m-b": "bench/b", "m-c": "bench/c"}


def start_server(script: dict) -> tuple[subprocess.Popen, str]:
    path = Path(tempfile.mkstemp(suffix=".json")[1])
    path.write_text(json.dumps(script))
    proc = subprocess.Popen([sys.executable, "-m", "tests.oai_server", "--port", "0",
                             "--script", str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split()[1]


def write_config(home: Path, base_url: str, *, rpm: float | None = None,
                 concurrency: int = 64) -> None:
    import tomli_w

    provider: dict = {"base_url": base_url, "concurrency": concurrency}
    if rpm:
        provider["rpm"] = rpm
    doc = {"providers": {"bench": provider},
           "models": {a: {"provider": "bench", "id": m, "tier": "fast", "family": a}
                      for a, m in MODELS.items()},
           "panels": {"default": list(MODELS)}}
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(tomli_w.dumps(doc))


def requests(n: int) -> list:
    from fscale_tui.engine.requests import scale_request

    return [scale_request(f"question {i}?", ("YES", "NO"), k=3, item_id=f"q{i}")
            for i in range(n)]


def in_process(n: int, concurrency: int) -> float:
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.session import Engine

    items = requests(n)

    async def go() -> float:
        async with Engine(load_settings().with_overrides(challenger=False)) as engine:
            t0 = time.perf_counter()
            done = 0
            async for _, outcome in engine.scale_batch(items, concurrency=concurrency):
                assert not isinstance(outcome, Exception), outcome
                done += 1
            elapsed = time.perf_counter() - t0
        assert done == n
        return elapsed

    return asyncio.run(go())


def on_ray(n: int, actors: int, concurrency: int) -> tuple[float, float]:
    from fscale_tui.integrations.ray import ensure_ray, run_requests

    t0 = time.perf_counter()
    ensure_ray(None, num_cpus=2)
    started = time.perf_counter() - t0
    items = requests(n)
    t0 = time.perf_counter()
    got = list(run_requests("scale", items, actors=actors, item_concurrency=concurrency,
                            overrides={"challenger": False}))
    elapsed = time.perf_counter() - t0
    assert [i for i, _ in got] == list(range(n))
    return started, elapsed


def fleet(rpm: float, window: float, per_host: int, redis_url: str | None) -> tuple[int, int]:
    from tests.oai_server import Behaviour, StubOpenAIServer

    with StubOpenAIServer() as srv, tempfile.TemporaryDirectory() as tmp:
        srv.script("bench/a", Behaviour(reply="YES"))
        batch = Path(tmp) / "items.jsonl"
        batch.write_text("".join(json.dumps({"id": f"q{i}", "question": f"q {i}?",
                                             "answers": ["YES", "NO"]}) + "\n"
                                 for i in range(per_host)))
        procs = []
        for h in range(3):
            home = Path(tmp) / f"host{h}"
            write_config(home, srv.base_url, rpm=rpm, concurrency=8)
            env = dict(os.environ, FSCALE_HOME=str(home), FSCALE_RATE_WINDOW_S=str(window),
                       FSCALE_CHALLENGER="0", FSCALE_LOCAL="off")
            env.pop("FSCALE_REDIS_URL", None)
            if redis_url:
                env["FSCALE_REDIS_URL"] = redis_url
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "fscale_tui", "scale", "--batch", str(batch), "-m", "m-a",
                 "-q"], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True))
        for p in procs:
            _, err = p.communicate(timeout=600)
            if p.returncode != 0:
                raise SystemExit(err)
        return srv.max_in_window(window), srv.count()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16, help="items in flight (per actor)")
    ap.add_argument("--rpm", type=float, default=30)
    ap.add_argument("--window", type=float, default=6.0)
    ap.add_argument("--per-host", type=int, default=30)
    args = ap.parse_args()

    server, base = start_server({"__default__": {"reply": "YES"}})
    home = Path(tempfile.mkdtemp(prefix="fscale-bench-fleet-"))
    os.environ.update(FSCALE_HOME=str(home), FSCALE_LOCAL="off", FSCALE_CHALLENGER="0")
    os.environ.pop("FSCALE_REDIS_URL", None)
    write_config(home, base)
    try:
        t_local = in_process(args.items, args.concurrency)
        print(f"in-process batch: {args.items} items k=3 in {t_local:.2f} s = "
              f"{args.items / t_local:.0f} items/s ({3 * args.items / t_local:.0f} requests/s)")
        started, t_ray = on_ray(args.items, args.actors, args.concurrency)
        print(f"Ray Data, {args.actors} actors: {args.items} items k=3 in {t_ray:.2f} s = "
              f"{args.items / t_ray:.0f} items/s (+{started:.1f} s to start the local cluster)")
    finally:
        server.terminate()
        server.wait()
    from tests.redis_server import RedisServer

    with RedisServer() as redis:
        busiest, sent = fleet(args.rpm, args.window, args.per_host, redis.url)
    print(f"3 processes sharing Redis, rpm {args.rpm:g}: busiest {args.window:g} s window "
          f"(the shrunk minute) = {busiest} sends of {sent}")
    busiest, sent = fleet(args.rpm, args.window, args.per_host, None)
    print(f"3 processes, own state directories, no Redis: busiest window = {busiest} sends "
          f"of {sent}")


if __name__ == "__main__":
    main()
