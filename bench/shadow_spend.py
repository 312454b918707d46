"""Shadow spend of a big batch, measured from the outside (issue 20, acceptance 4).

Builds the MMLU-Pro replay the way a user would — the shipped converter
(``python -m fscale_tui.engine.routing.mmlu DATA OUT --split 0.4,0.3,0.3``), its replay provider
and config — and runs ``fscale scale --batch`` on ``--items`` questions (the test part first,
then training questions) as a subprocess, twice by default:

* ``-k 3``: the default panel, no routing profile: every outsider is unknown, so the shadows
  explore within ``[learning] shadow_budget`` (0.1 shadow call per decision call over the last
  200 calls);
* ``-k auto`` after ``fscale profile --fit-clusters TRAIN`` and ``fscale profile VAL`` (every
  model): a profiled model counts as known, so the policy should spend ≈ 0 shadows.

From the JSON lines (input order) it prints, per mode: decision and shadow calls, shadow calls
per decision call overall and **after the first 500 items** (target ≤ 0.1), the busiest window
of 200 consecutive items, USD (decisions / total), the accuracy on the items' labels, the batch's
own stderr summary line, and wall time.

    python bench/shadow_spend.py                       # 3,000 items, both modes
    python bench/shadow_spend.py --modes k3 --items 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("FSCALE_REPLAY_DATA", "/work/shared/data/mmlu_pro_replay"))


def run(args: list[str], home: Path, timeout: float = 3600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NVIDIA_API_KEY", "GITHUB_TOKEN", "FSCALE_REDIS_URL", "FSCALE_CHALLENGER",
                        "FSCALE_SHADOW_BUDGET", "FSCALE_CHALLENGERS")}
    env.update(FSCALE_HOME=str(home), FSCALE_LOCAL="off")
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(args[:6])}… failed ({proc.returncode}): "
                         f"{proc.stderr.strip()[-600:]}")
    return proc


def fscale(*args: str) -> list[str]:
    return [sys.executable, "-m", "fscale_tui", *args]


def figures(lines: list[dict], skip: int = 500, window: int = 200) -> dict:
    d = [x["spend"]["decision"]["calls"] for x in lines]
    s = [x["spend"]["shadow"]["calls"] for x in lines]
    busiest = max((sum(s[i:i + window]) / max(1, sum(d[i:i + window])))
                  for i in range(max(1, len(d) - window + 1)))
    cost = sum(x["spend"]["decision"]["cost_usd"] or 0.0 for x in lines)
    total = sum(x["spend"]["cost_usd_total"] or 0.0 for x in lines)
    return {"items": len(lines), "decision_calls": sum(d), "shadow_calls": sum(s),
            "shadow_per_decision": sum(s) / max(1, sum(d)),
            "shadow_per_decision_after": sum(s[skip:]) / max(1, sum(d[skip:])),
            "busiest_window": busiest, "usd": cost, "usd_total": total}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--modes", default="k3,auto", help="k3, auto or both (comma-separated)")
    ap.add_argument("--out", type=Path, default=None, help="work directory (default: temp)")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="fscale-shadow-spend-"))
    conv = out / "replay"
    t0 = time.monotonic()
    run([sys.executable, "-m", "fscale_tui.engine.routing.mmlu", str(args.data), str(conv),
         "--split", "0.4,0.3,0.3"], out)
    tasks = {name: [json.loads(x) for x in (conv / f"tasks.{name}.jsonl").read_text().splitlines()]
             for name in ("train", "val", "test")}
    chosen = (tasks["test"] + tasks["train"])[:args.items]
    items = out / "items.jsonl"
    items.write_text("".join(json.dumps({k: t[k] for k in ("id", "question", "answers", "label")})
                             + "\n" for t in chosen))
    print(f"converted in {time.monotonic() - t0:.1f}s; {len(chosen)} items "
          f"({min(len(chosen), len(tasks['test']))} test questions first)", flush=True)
    for mode in args.modes.split(","):
        home = out / f"home-{mode}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        shutil.copy(conv / "config.toml", home / "config.toml")
        shutil.copy(conv / "replay.jsonl", home / "replay.jsonl")
        k = "3"
        if mode == "auto":
            t = time.monotonic()
            run(fscale("profile", "--fit-clusters", str(conv / "tasks.train.jsonl"),
                       "--clusters", "20"), home)
            import tomllib

            models = ",".join(tomllib.loads((home / "config.toml").read_text())["models"])
            run(fscale("profile", str(conv / "tasks.val.jsonl"), "--models", models), home)
            print(f"[auto] fscale profile (clusters on train, every model on val): "
                  f"{time.monotonic() - t:.1f}s", flush=True)
            k = "auto"
        t = time.monotonic()
        proc = run(fscale("scale", "--batch", str(items), "-k", k), home)
        took = time.monotonic() - t
        lines = [json.loads(x) for x in proc.stdout.splitlines()]
        f = figures(lines)
        summary = [x for x in proc.stderr.splitlines() if " items (" in x]
        print(f"[{mode}] -k {k}: {f['items']} items in {took:.1f}s; {f['decision_calls']} decision "
              f"+ {f['shadow_calls']} shadow calls; shadow per decision call "
              f"{f['shadow_per_decision']:.3f} overall, {f['shadow_per_decision_after']:.3f} "
              f"after the first 500 items (target ≤ 0.1), busiest 200 items "
              f"{f['busiest_window']:.3f}; ${f['usd']:.4f} decisions, ${f['usd_total']:.4f} "
              f"with shadows", flush=True)
        print(f"[{mode}] batch summary: {summary[-1] if summary else '(none)'}", flush=True)
    print(f"work directory: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
