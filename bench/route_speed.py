"""How long does routing a test half take, at the size of a real evaluation?

    python bench/route_speed.py --data /work/shared/data/mmlu_pro_replay \
        [--items 3000] [--singles 5] [--before /tmp/fscale-base]

In a temporary directory: converts the MMLU-Pro replay set (30/20/50 split), fits 20 clusters on
the train split and profiles the 14 models on train + validation (2,972 prompts, 41,600 replay
calls) with the real ``fscale profile``; then times, as fresh processes:

* ``fscale route --batch ITEMS --lambda 0.05`` on ``--items`` questions: the test half (2,971),
  topped up with validation questions to reach ``--items`` (one process);
* ``fscale route QUESTION --lambda 0.05 --json`` for ``--singles`` test questions (median per call).

``--before DIR`` times the single-question command of another checkout (e.g. ``git archive`` of
the commit before the change, unpacked in /tmp) on the same profile, written in that version's
``profiles.json`` format; it has no ``--batch``, so a test half costs ``items`` × that per call.
Its answers are counted against the batch's, not asserted (a checkout from before the category
router routes by the clusters only).
Nothing is written inside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mmlu_pro_replay"
LAMBDA = "0.05"


def env_for(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"FSCALE_HOME": str(home), "FSCALE_LOCAL": "off", "FSCALE_CHALLENGER": "0"})
    return env


def fscale(checkout: Path, home: Path, *args: str, stdout=subprocess.PIPE) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fscale_tui", *args], cwd=checkout, env=env_for(home),
                          stdout=stdout, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"fscale {' '.join(args[:2])} failed in {checkout}:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout if stdout is subprocess.PIPE else ""


def write_v1_profile(journal: Path, target: Path) -> None:
    """The same profile in the version-1 ``profiles.json`` format (for the old checkout)."""
    sys.path.insert(0, str(REPO))
    from fscale_tui.engine.routing.profile import ProfileStore

    store = ProfileStore(journal)
    doc = {"version": 1, "prompts": store.prompts,
           "models": {m: {"items": {k: {"answers": i["answers"], "latency_s": i["latency_s"]}
                                    for k, i in items.items()}} for m, items in store.items.items()}}
    target.write_text(json.dumps(doc))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--singles", type=int, default=5)
    ap.add_argument("--before", type=Path, default=None)
    args = ap.parse_args(argv)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="fscale-route-speed-") as tmp:
        work = Path(tmp)
        conv = work / "mmlu"
        subprocess.run([sys.executable, "-m", "fscale_tui.engine.routing.mmlu", str(args.data), str(conv),
                        "--split", "0.3,0.2,0.5"], cwd=REPO, check=True, capture_output=True)
        home = work / "home"
        home.mkdir()
        shutil.copy(conv / "config.toml", home / "config.toml")
        models = ",".join(tomllib.loads((conv / "config.toml").read_text())["models"])
        fscale(REPO, home, "profile", "--fit-clusters", str(conv / "tasks.train.jsonl"), "--clusters", "20", "-q")
        t_prof = 0.0
        for part in ("train", "val"):
            s, _ = fscale(REPO, home, "profile", str(conv / f"tasks.{part}.jsonl"), "--models", models,
                          "-q", "--json")
            t_prof += s
        results["profile_train_val_seconds"] = round(t_prof, 1)
        test = [json.loads(x) for part in ("test", "val")
                for x in (conv / f"tasks.{part}.jsonl").read_text().splitlines()]
        items = work / "items.jsonl"
        items.write_text("".join(json.dumps({"id": t["id"], "question": t["question"]}) + "\n"
                                 for t in test[: args.items]))
        n_items = min(args.items, len(test))
        seconds, out = fscale(REPO, home, "route", "--batch", str(items), "--lambda", LAMBDA)
        routed = [json.loads(x) for x in out.splitlines()]
        assert len(routed) == n_items and all(r["status"] == "routed" for r in routed)
        results["batch_items"] = n_items
        results["batch_seconds"] = round(seconds, 2)
        singles = [t["question"] for t in test[: args.singles]]
        times = []
        for q, r in zip(singles, routed):
            s, out = fscale(REPO, home, "route", q, "--lambda", LAMBDA, "--json")
            times.append(s)
            one = json.loads(out)
            assert one["model"] == r["model"], (one, r)
        results["single_median_s"] = round(statistics.median(times), 3)
        if args.before is not None:
            old = work / "home-before"
            (old / "data" / "routing").mkdir(parents=True)
            shutil.copy(conv / "config.toml", old / "config.toml")
            for name in ("clusters.npz", "clusters.json"):
                shutil.copy(home / "data" / "routing" / name, old / "data" / "routing" / name)
            write_v1_profile(home / "data" / "routing" / "profiles.jsonl", old / "data" / "routing" / "profiles.json")
            times, same = [], 0
            for q, r in zip(singles, routed):
                s, out = fscale(args.before.resolve(), old, "route", q, "--lambda", LAMBDA, "--json")
                times.append(s)
                # a checkout from before the category router routes by the clusters only
                same += json.loads(out)["model"] == r["model"]
            results["before_single_median_s"] = round(statistics.median(times), 3)
            results["before_same_model"] = f"{same}/{len(singles)}"
            results["before_items_estimate_s"] = round(n_items * statistics.median(times), 1)
    print(json.dumps(results))
    print(f"route --batch: {results['batch_items']} items in {results['batch_seconds']} s; "
          f"one question per process: {results['single_median_s']} s (median of {len(singles)})"
          + (f"; before: {results['before_single_median_s']} s per question, so about "
             f"{results['before_items_estimate_s']} s for {n_items} items" if args.before else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
