"""Benchmark of the embedded local models (the ``[local]`` extra) on SST-2.

Prints: first-ever weight join, cold start (first call, server start included) per model and
for the CLI's default panel, warm latency per call, tokens/s, RAM per model server, and the
accuracy of each local model and of the local panel (k=3) on labelled SST-2 items.

    python bench/local.py                      # 200 items of ../shared/data/sst2_dev.tsv
    python bench/local.py -n 400 --json

By default it runs in a fresh temporary FSCALE_HOME (so "cold" really includes joining the
weights and starting the servers) and stops its servers at the end. Panel accuracy is the
majority of the three members' votes on each item (with two labels and three valid votes the
early decision cannot change it); ``--panel-calls`` real panel calls check that and time them.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUESTION = "Is the sentiment of this movie review positive or negative?"
LABELS = ("positive", "negative")


def load_items(path: Path, n: int) -> list[tuple[str, str]]:
    items = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            items.append((row["text"].strip(), "positive" if row["label"].strip() == "1" else "negative"))
            if len(items) == n:
                break
    return items


def request(text: str, models: tuple[str, ...] | None = None):
    from fscale_tui.engine.base.calls import ScaleRequest

    return ScaleRequest(question=QUESTION, context=f"Review: {text}", answers=LABELS, models=models)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def tokens_per_second(base_url: str, model_id: str, runs: int = 3) -> dict[str, float]:
    import httpx

    gen, prompt = [], []
    async with httpx.AsyncClient(timeout=120) as http:
        for i in range(runs):
            r = await http.post(base_url + "/chat/completions", json={
                "model": model_id, "max_tokens": 64, "temperature": 0, "seed": i,
                "messages": [{"role": "user", "content": f"Write a short paragraph about rivers ({i})."}]})
            t = r.json().get("timings") or {}
            gen.append(float(t.get("predicted_per_second") or 0))
            prompt.append(float(t.get("prompt_per_second") or 0))
    return {"gen_tok_s": statistics.median(gen), "prompt_tok_s": statistics.median(prompt)}


def cli_call(text: str, env: dict[str, str]) -> tuple[float, dict]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "fscale_tui", "scale", QUESTION, "--context",
                           f"Review: {text}", "-a", ",".join(LABELS), "--json"],
                          check=False, capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=600)
    elapsed = time.monotonic() - t0
    if proc.returncode not in (0, 3):
        raise SystemExit(f"fscale scale failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return elapsed, json.loads(proc.stdout)


async def main_async(args: argparse.Namespace) -> dict:
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.providers.local import provider as lp
    from fscale_tui.engine.providers.local import servers, weights
    from fscale_tui.engine.session import Engine

    if not lp.is_installed():
        raise SystemExit("the [local] extra is not installed: pip install -e '.[local]'")
    items = load_items(args.data, args.n)
    settings = load_settings()
    panel = settings.panels["local"]
    members = [settings.models[a] for a in panel]
    report: dict = {"items": len(items), "data": str(args.data), "panel": panel,
                    "cpu_count": os.cpu_count(), "models": {}}
    bench_t0 = time.monotonic()

    # 1. First-ever join of the weights into the cache (fresh FSCALE_HOME).
    joins = {}
    for w in weights.BUILTIN_WEIGHTS.values():
        t0 = time.monotonic()
        weights.ensure_builtin(w, settings.paths.cache_dir)
        joins[w.name] = round(time.monotonic() - t0, 2)
    report["join_s"] = joins

    # 2. Cold start of the CLI's default panel (no key): both servers start in this call.
    for name in servers.known_servers(settings.paths):
        servers.stop_server(settings.paths, name)
    env = dict(os.environ)
    cold_s, cold_out = cli_call(items[0][0], env)
    warm_cli = [cli_call(text, env)[0] for text, _ in items[1:4]]
    report["cli"] = {"cold_s": round(cold_s, 2), "warm_s_median": round(statistics.median(warm_cli), 2),
                     "cold_votes": [(v["model"], v["answer"], v["status"]) for v in cold_out["votes"]]}

    # 3. Cold start per model, in-process (server start + first call), one model at a time.
    for name in servers.known_servers(settings.paths):
        servers.stop_server(settings.paths, name)
    cold = {}
    for m in members:
        if m.id in {settings.models[a].id for a in cold}:
            continue  # a second member on the same weights shares that server (every member
            # of the local panel is a variant now, so "skip variants" would time none)
        async with Engine(settings) as engine:
            t0 = time.monotonic()
            await engine.scale(request(items[0][0], (m.alias,)))
            cold[m.alias] = round(time.monotonic() - t0, 2)

    # 4. Warm latency per call, each model alone, sequential calls.
    warm: dict[str, list[float]] = {}
    async with Engine(settings) as engine:
        for m in members:
            lat = []
            for text, _ in items[:args.latency_items]:
                t0 = time.monotonic()
                await engine.scale(request(text, (m.alias,)))
                lat.append(time.monotonic() - t0)
            warm[m.alias] = lat

    # 5. Accuracy: each item asked of the three members concurrently (as a panel does).
    votes: dict[str, list[str | None]] = {m.alias: [] for m in members}
    busy_lat: dict[str, list[float]] = {m.alias: [] for m in members}
    sem = asyncio.Semaphore(args.concurrency)
    async with Engine(settings) as engine:
        async def one(text: str) -> dict[str, tuple[str | None, float]]:
            async with sem:
                results = await asyncio.gather(*(engine.scale(request(text, (m.alias,))) for m in members))
            return {m.alias: (r.answer, r.elapsed_s) for m, r in zip(members, results)}

        outcomes = await asyncio.gather(*(one(text) for text, _ in items))
    for out in outcomes:
        for alias, (answer, lat) in out.items():
            votes[alias].append(answer)
            busy_lat[alias].append(lat)
    gold = [g for _, g in items]
    panel_answers = []
    for i in range(len(items)):
        c = Counter(votes[a][i] for a in panel if votes[a][i] is not None)
        top = c.most_common(2)
        panel_answers.append(top[0][0] if top and (len(top) == 1 or top[0][1] > top[1][1]) else None)

    def acc(answers: list[str | None]) -> float:
        return sum(a == g for a, g in zip(answers, gold)) / len(gold)

    # 6. Real panel calls (early decision): latency, agreement with the offline majority.
    panel_lat, agree = [], 0
    async with Engine(settings) as engine:
        for i, (text, _) in enumerate(items[:args.panel_calls]):
            r = await engine.scale(request(text))
            panel_lat.append(r.elapsed_s)
            agree += r.answer == panel_answers[i]

    # 7. tokens/s and RAM per server.
    by_id: dict[str, list[str]] = {}
    for m in members:
        by_id.setdefault(m.id, []).append(m.alias)
    for mid, aliases in by_id.items():
        info = servers.status(settings.paths, mid)
        tps = await tokens_per_second(info["base_url"], mid)
        for alias in aliases:
            w = warm[alias]
            report["models"][alias] = {
                "id": mid, "variant": settings.models[alias].options.get("variant"),
                "cold_start_s": cold.get(alias),
                "warm_latency_s_median": round(statistics.median(w), 3),
                "warm_latency_s_p90": round(pct(w, 0.9), 3),
                "latency_in_panel_s_median": round(statistics.median(busy_lat[alias]), 3),
                "accuracy": round(acc(votes[alias]), 4),
                "no_answer": sum(v is None for v in votes[alias]),
                "gen_tok_s": round(tps["gen_tok_s"], 1), "prompt_tok_s": round(tps["prompt_tok_s"], 1),
                "server_rss_mb": round((info.get("rss_bytes") or 0) / 2**20),
                "server_threads": info.get("threads"),
            }
    report["panel"] = {
        "accuracy": round(acc(panel_answers), 4),
        "real_calls": len(panel_lat),
        "real_call_latency_s_median": round(statistics.median(panel_lat), 3) if panel_lat else None,
        "real_calls_agree_with_majority": agree,
    }
    report["bench_wall_s"] = round(time.monotonic() - bench_t0, 1)
    if not args.keep_servers:
        for name in servers.known_servers(settings.paths):
            servers.stop_server(settings.paths, name)
    return report


def print_report(r: dict) -> None:
    print(f"local models on {r['items']} SST-2 items ({r['data']}), {r['cpu_count']} cores")
    print("first-ever weight join: " + ", ".join(f"{k} {v}s" for k, v in r["join_s"].items()))
    c = r["cli"]
    print(f"CLI default panel, no key: cold call {c['cold_s']}s (both servers start), "
          f"warm call {c['warm_s_median']}s (median of 3; includes Python start-up)")
    print(f"  cold call votes: {c['cold_votes']}")
    hdr = f"{'model':<22}{'cold s':>8}{'warm s':>8}{'p90 s':>7}{'in-panel s':>11}{'gen tok/s':>10}{'prompt tok/s':>13}{'RSS MB':>8}{'accuracy':>10}"
    print(hdr)
    for alias, m in r["models"].items():
        cold = "-" if m["cold_start_s"] is None else f"{m['cold_start_s']:.2f}"
        print(f"{alias:<22}{cold:>8}{m['warm_latency_s_median']:>8.2f}{m['warm_latency_s_p90']:>7.2f}"
              f"{m['latency_in_panel_s_median']:>11.2f}{m['gen_tok_s']:>10.1f}{m['prompt_tok_s']:>13.1f}"
              f"{m['server_rss_mb']:>8}{m['accuracy']:>10.1%}" + (f"  ({m['variant']})" if m["variant"] else ""))
    p = r["panel"]
    print(f"{'local panel (k=3)':<22}{'':>8}{p['real_call_latency_s_median'] or 0:>8.2f}{'':>7}{'':>11}{'':>10}{'':>13}{'':>8}"
          f"{p['accuracy']:>10.1%}  (majority; {p['real_calls']} real calls, "
          f"{p['real_calls_agree_with_majority']} agree)")
    print(f"bench wall time: {r['bench_wall_s']}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data" / "sst2_dev.tsv",
                    help="SST-2 dev TSV (text<TAB>label); default ../shared/data/sst2_dev.tsv")
    ap.add_argument("-n", type=int, default=200, help="labelled items for accuracy (default 200)")
    ap.add_argument("--latency-items", type=int, default=20, help="sequential warm calls per model")
    ap.add_argument("--panel-calls", type=int, default=20, help="real k=3 panel calls")
    ap.add_argument("--concurrency", type=int, default=2, help="items in flight in the accuracy run")
    ap.add_argument("--home", help="FSCALE_HOME to use (default: a fresh temporary one)")
    ap.add_argument("--keep-servers", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args()
    args.data = args.data.resolve()
    if not args.data.exists():
        raise SystemExit(f"no data file at {args.data} (use --data)")
    tmp = None
    if args.home:
        os.environ["FSCALE_HOME"] = args.home
    else:
        tmp = tempfile.TemporaryDirectory(prefix="fscale-bench-")
        os.environ["FSCALE_HOME"] = tmp.name
    for key in ("NVIDIA_API_KEY", "GITHUB_TOKEN", "FSCALE_LOCAL", "FSCALE_PANEL", "FSCALE_K"):
        os.environ.pop(key, None)
    os.environ.setdefault("FSCALE_LOCAL_IDLE_TIMEOUT", "600")
    try:
        report = asyncio.run(main_async(args))
    finally:
        if tmp is not None and not args.keep_servers:
            tmp.cleanup()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
