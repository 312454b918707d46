"""Stops are recoverable (issue 21, acceptance 5): SIGTERM and SIGINT at random points of a
2,000-item batch, plain and ``--ray``; after each stop, ``--resume`` finishes the batch.

Per run (a fresh FSCALE_HOME each): ``fscale scale --batch items.jsonl > out.jsonl`` is
stopped once a random number of its lines (1 … n−1) is out; then the figures:

* exit code (143 for SIGTERM, 130 for SIGINT) and the one line it printed;
* every line printed before the stop is in the call log (read by another process);
* ``fscale scale --batch items.jsonl --resume out.jsonl`` exits 0, and out.jsonl then holds
  every item exactly once (none missing, none twice), each in the call log.

The loopback server runs in its own process; the ``--ray`` runs share one local Ray cluster
started by this script (the CLI joins it with ``--ray ADDRESS``, as a job would).

Usage: python bench/stops.py [--runs 10] [--items 2000] [--modes plain,ray]
                             [--signals TERM,INT] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _fscale(home: Path, *args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    env = dict(os.environ, FSCALE_HOME=str(home), FSCALE_CHALLENGER="0", FSCALE_LOCAL="off")
    return subprocess.Popen([sys.executable, "-m", "fscale_tui", *args], cwd=REPO, env=env,
                            stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True)


def _logged(home: Path) -> set[str]:
    db = sqlite3.connect(home / "data" / "learning.db", timeout=30)
    try:
        return {r[0] for r in db.execute("SELECT id FROM calls")}
    finally:
        db.close()


def one_run(work: Path, base_url: str, n: int, mode_args: list[str], sig: int,
            rng: random.Random) -> dict:
    import tomli_w

    home = work / "home"
    home.mkdir()
    (home / "config.toml").write_text(tomli_w.dumps({
        "providers": {"stub": {"base_url": base_url, "concurrency": 16}},
        "models": {a: {"provider": "stub", "id": f"bench/{a}", "tier": "fast", "family": a}
                   for a in ("m-a", "m-b", "m-c")},
        "panels": {"default": ["m-a", "m-b", "m-c"]}}))
    items = work / "items.jsonl"
    items.write_text("".join(json.dumps({"question": f"question {i}?", "id": f"item-{i}"})
                             + "\n" for i in range(n)))
    out = work / "out.jsonl"
    target = rng.randint(1, n - 1)
    batch = ["scale", "--batch", str(items), "-a", "YES,NO", "-q", *mode_args]
    with open(out, "w") as fh:
        proc = _fscale(home, *batch, stdout=fh)
    while out.stat().st_size == 0 or out.read_bytes().count(b"\n") < target:
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    stopped_at = out.read_bytes().count(b"\n")
    sent = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=600)
    stop_s = time.monotonic() - sent
    text = out.read_text()
    try:
        printed = [json.loads(x) for x in text.splitlines() if x.strip()]
    except ValueError:
        bad = [x for x in text.splitlines() if x.strip() and not x.startswith("{")]
        raise SystemExit(f"not JSON lines in the output: {bad[:3]!r} stderr: {err[-500:]}")
    logged = _logged(home)
    unlogged = [x["id"] for x in printed if x["id"] not in logged]
    resume = _fscale(home, *batch, "--resume", str(out))
    _, rerr = resume.communicate(timeout=900)
    final = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    ids = [x["item_id"] for x in final]
    want = {f"item-{i}" for i in range(n)}
    logged = _logged(home)
    return {"code": proc.returncode, "line": err.strip().splitlines()[-1:] or [""],
            "target": target, "at_signal": stopped_at, "printed": len(printed),
            "unlogged": len(unlogged), "stop_s": stop_s, "resume_code": resume.returncode,
            "resume_err": rerr.strip()[-200:], "missing": len(want - set(ids)),
            "twice": len(ids) - len(set(ids)),
            "final_unlogged": sum(1 for x in final if x["id"] not in logged)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--modes", default="plain,ray")
    ap.add_argument("--signals", default="TERM,INT")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.005)
    args = ap.parse_args()
    from bench.fleet import start_server

    rng = random.Random(args.seed)
    server, base_url = start_server({"__default__": {"reply": "YES", "latency": args.latency}})
    address = None
    try:
        if "ray" in args.modes.split(","):
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, _node_ip_address="127.0.0.1")
            address = ray.get_runtime_context().gcs_address
        rows = []
        for mode in args.modes.split(","):
            mode_args = ["--ray", address, "--actors", "2"] if mode == "ray" else []
            for name in args.signals.split(","):
                sig = getattr(signal, f"SIG{name}")
                want = 143 if name == "TERM" else 130
                runs = []
                for r in range(args.runs):
                    with tempfile.TemporaryDirectory(prefix="fscale-stops-") as tmp:
                        res = one_run(Path(tmp), base_url, args.items, mode_args, sig, rng)
                    runs.append(res)
                    ok = (res["code"] == want and res["unlogged"] == 0
                          and res["resume_code"] == 0 and res["missing"] == 0
                          and res["twice"] == 0 and res["final_unlogged"] == 0)
                    print(f"{mode:5} SIG{name:4} run {r + 1:2}: stop at {res['at_signal']:4} lines"
                          f" -> exit {res['code']} after {res['stop_s']:.2f} s, "
                          f"{res['printed']:4} printed, {res['unlogged']} not logged; resume "
                          f"exit {res['resume_code']}, missing {res['missing']}, twice "
                          f"{res['twice']}{'' if ok else '  <-- FAIL ' + res['line'][0]}",
                          flush=True)
                rows.append((mode, name, want, runs))
    finally:
        server.kill()
        server.wait()
    print()
    print("| mode | signal | runs | right exit code | printed lines not logged | resume exit 0 "
          "| final: missing / twice | stop → exit (median, worst) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    failures = 0
    for mode, name, want, runs in rows:
        right = sum(r["code"] == want for r in runs)
        unlogged = sum(r["unlogged"] for r in runs)
        resumed = sum(r["resume_code"] == 0 for r in runs)
        missing = sum(r["missing"] for r in runs)
        twice = sum(r["twice"] for r in runs)
        stops = sorted(r["stop_s"] for r in runs)
        failures += (len(runs) - right) + unlogged + (len(runs) - resumed) + missing + twice
        print(f"| {mode} | SIG{name} | {len(runs)} | {right}/{len(runs)} | {unlogged} | "
              f"{resumed}/{len(runs)} | {missing} / {twice} | "
              f"{statistics.median(stops):.2f} s, {stops[-1]:.2f} s |")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
