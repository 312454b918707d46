"""Engine overhead: scale calls per second, and early-decision latency versus its limit.

Starts the loopback OpenAI-compatible server (tests/oai_server.py) in a separate process, so
the server and fscale each get a core, then measures in one run:

1. Throughput: a batch of N scale calls (k=3, zero-latency replies) through the engine with its
   defaults (every call logged, one shadow challenger) and without the log and challenger, next to
   a baseline that sends the same 3·N requests with a bare httpx.AsyncClient at the same
   concurrency (no parsing, voting or events). Figures: scale calls/s, requests/s, and the ratio.
2. Decision latency: two agreeing models answering after 50 ms and 100 ms and a third after
   5 s. The limit is the second agreeing reply (100 ms); the figure is how far above it the
   decision lands (median and max over R runs), and whether the slow request was cancelled.

Usage: python bench/overhead.py [--items 1000] [--runs 20] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = {"m-a": "bench/a", "m-b": "bench/b", "m-c": "bench/c", "m-d": "bench/d", "m-e": "bench/e",
          "fast-1": "bench/fast-1", "fast-2": "bench/fast-2", "slow-1": "bench/slow-1"}
#: The early-decision trio is declared "thinking" tier only so that shadow challengers (which
#: skip thinking models by default) are drawn from the zero-latency m-* pool.
EARLY = {"fast-1", "fast-2", "slow-1"}


def start_server(script: dict) -> tuple[subprocess.Popen, str]:
    path = Path(tempfile.mkstemp(suffix=".json")[1])
    path.write_text(json.dumps(script))
    proc = subprocess.Popen([sys.executable, "-m", "tests.oai_server", "--port", "0", "--script", str(path)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split()[1]


def write_config(home: Path, base_url: str, concurrency: int) -> None:
    import tomli_w

    doc = {"providers": {"bench": {"base_url": base_url, "concurrency": concurrency}},
           "models": {alias: {"provider": "bench", "id": mid,
                              "tier": "thinking" if alias in EARLY else "fast",
                              "family": alias.split("-")[1]} for alias, mid in MODELS.items()},
           "panels": {"default": ["m-a", "m-b", "m-c"], "early": ["fast-1", "fast-2", "slow-1"]}}
    (home / "config.toml").write_text(tomli_w.dumps(doc))


async def engine_throughput(n: int, concurrency: int) -> float:
    from fscale_tui.engine.session import Engine
    from fscale_tui.engine.base.calls import ScaleRequest

    reqs = [ScaleRequest(f"question {i}?", ("YES", "NO"), k=3) for i in range(n)]
    async with Engine() as engine:
        # warm-up: open the pooled connections
        async for _ in engine.scale_batch(reqs[:concurrency], concurrency=concurrency):
            pass
        t0 = time.perf_counter()
        done = 0
        async for _, outcome in engine.scale_batch(reqs, concurrency=concurrency):
            assert not isinstance(outcome, Exception) and outcome.answer == "YES", outcome
            done += 1
        return time.perf_counter() - t0


async def baseline_throughput(base_url: str, n: int, concurrency: int, cap: int) -> float:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    cap_sem = asyncio.Semaphore(cap)

    async def post(client, b):
        async with cap_sem:
            return await client.post(base_url + "/chat/completions", content=b,
                                     headers={"Content-Type": "application/json"})

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=256)) as client:
        async def one(i: int) -> None:
            async with sem:
                bodies = [json.dumps({"model": MODELS[m], "messages": [
                    {"role": "user", "content": f"question {i}?"}]}).encode() for m in ("m-a", "m-b", "m-c")]
                rs = await asyncio.gather(*(post(client, b) for b in bodies))
                for r in rs:
                    r.json()
        await asyncio.gather(*(one(i) for i in range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0


async def decision_latency(runs: int) -> tuple[list[float], list[float], int]:
    """Wall time of engine.scale() minus the 100 ms limit, with a warm engine (as in a batch or
    the TUI) and with a fresh engine per call (new client, new connections)."""
    from fscale_tui.engine.session import Engine
    from fscale_tui.engine.base.calls import ScaleRequest

    req = ScaleRequest("q?", ("YES", "NO"), panel="early")
    warm: list[float] = []
    fresh: list[float] = []
    cancelled = 0
    async with Engine() as engine:
        await engine.scale(req)  # open the pooled connections once
        for _ in range(runs):
            t0 = time.perf_counter()
            r = await engine.scale(req)
            warm.append(time.perf_counter() - t0 - 0.100)
            assert r.answer == "YES" and r.decided_early
            cancelled += any(v.status == "cancelled" for v in r.votes)
    for _ in range(runs):
        async with Engine() as engine:
            t0 = time.perf_counter()
            r = await engine.scale(req)
            fresh.append(time.perf_counter() - t0 - 0.100)
        cancelled += any(v.status == "cancelled" for v in r.votes)
    return warm, fresh, cancelled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=16, help="batch items in flight")
    ap.add_argument("--provider-concurrency", type=int, default=8,
                    help="the provider's cap on requests in flight (config 'concurrency')")
    args = ap.parse_args()

    script = {MODELS[m]: {"reply": "Answer: YES"} for m in ("m-a", "m-b", "m-c", "m-d", "m-e")}
    script[MODELS["fast-1"]] = {"reply": "YES", "latency": 0.05}
    script[MODELS["fast-2"]] = {"reply": "YES", "latency": 0.10}
    script[MODELS["slow-1"]] = {"reply": "NO", "latency": 5.0}
    server, base_url = start_server(script)
    home = Path(tempfile.mkdtemp(prefix="fscale-bench-"))
    os.environ["FSCALE_HOME"] = str(home)
    for key in ("NVIDIA_API_KEY", "GITHUB_TOKEN"):
        os.environ.pop(key, None)
    write_config(home, base_url, concurrency=args.provider_concurrency)
    try:
        base_s = asyncio.run(baseline_throughput(base_url, args.items, args.concurrency, args.provider_concurrency))
        os.environ["FSCALE_LOG_CALLS"] = "0"  # the engine alone: no call log, no challenger
        core_s = asyncio.run(engine_throughput(args.items, args.concurrency))
        os.environ.pop("FSCALE_LOG_CALLS")  # defaults: every call logged + a shadow challenger
        full_s = asyncio.run(engine_throughput(args.items, args.concurrency))
        warm, fresh, cancelled = asyncio.run(decision_latency(args.runs))
    finally:
        server.terminate()
        server.wait()
    n = args.items
    print(f"throughput: {n} scale calls (k=3, zero-latency loopback server, {args.concurrency} items "
          f"in flight, provider cap {args.provider_concurrency} requests)")
    print(f"  fscale engine, defaults (call log + shadow challenger): {n / full_s:8.1f} scale calls/s ({full_s:.2f} s)")
    print(f"  fscale engine, no log/challenger                     : {n / core_s:8.1f} scale calls/s ({core_s:.2f} s)")
    print(f"  bare httpx (its default pool), same caps, no engine  : {n / base_s:8.1f} item triples/s ({base_s:.2f} s)")
    print(f"  ratio engine (no log) / bare httpx: {base_s / core_s:.2f} (the engine uses httpx over aiohttp)")
    print(f"early decision: 50 ms + 100 ms agreeing, 5 s slow member; {args.runs} runs each")

    def fmt(xs: list[float]) -> str:
        xs = sorted(xs)
        return (f"median {statistics.median(xs) * 1000:.1f} ms, p90 {xs[int(0.9 * (len(xs) - 1))] * 1000:.1f} ms, "
                f"max {xs[-1] * 1000:.1f} ms")

    print(f"  above the 100 ms limit, warm engine : {fmt(warm)}")
    print(f"  above the 100 ms limit, fresh engine: {fmt(fresh)}")
    print(f"  slow member cancelled in {cancelled}/{2 * args.runs} runs")


if __name__ == "__main__":
    main()
