"""How fast does ``fscale profile`` go against the replay provider, at the size of a real evaluation?

    python bench/profile_speed.py --data /work/shared/data/mmlu_pro_replay \
        [--tasks 5000] [--before /tmp/fscale-base] [--cprofile out.prof]

Converts the MMLU-Pro replay set (``python -m fscale_tui.engine.routing.mmlu``) into a temporary
directory, keeps ``--tasks`` questions (a seeded sample) and profiles all 14 models on them
through the real engine (``Engine`` → ``ChatClient.chat`` → replay transport → ``parse_reply``
→ the profile store), in a fresh FSCALE_HOME, in a subprocess per checkout:

* ``run_profile`` alone (replay calls per second: the figure of issue 16, item 2);
* ``fscale profile TASKS --models … -q --json`` end to end (start-up, replay index, summary);
* the same command again with ``--resume`` (nothing left to ask: the cost of reading the store).

``--before DIR`` runs the same measurements against another checkout (e.g. ``git archive`` of
the commit before the change, unpacked in /tmp) in the same run, so the two figures share the
machine's load. Nothing is written inside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mmlu_pro_replay"

#: Run inside the checkout under test (cwd): times run_profile only, through the real engine.
DRIVER = r"""
import asyncio, json, sys, time
from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.routing.profile import run_profile
from fscale_tui.engine.routing.tasks import load_tasks
from fscale_tui.engine.session import Engine

tasks_path, models, cprofile = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
settings = load_settings()
tasks = load_tasks(tasks_path)
chosen = [settings.models[m] for m in models]

async def go():
    async with Engine(settings) as engine:
        engine.client._runtime(chosen[0].provider)  # load the replay index outside the timing
        t0, c0 = time.perf_counter(), time.process_time()
        counts = await run_profile(engine.context, tasks, chosen)
        return counts, time.perf_counter() - t0, time.process_time() - c0

if cprofile:
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
counts, seconds, cpu = asyncio.run(go())
if cprofile:
    prof.disable()
    prof.dump_stats(cprofile)
print(json.dumps({"counts": counts, "seconds": seconds, "cpu": cpu}))
"""


def prepare(data: Path, work: Path, n_tasks: int, seed: int) -> tuple[Path, Path, list[str]]:
    sys.path.insert(0, str(REPO))
    import numpy as np

    from fscale_tui.engine.routing.mmlu import convert
    from fscale_tui.engine.routing.tasks import load_tasks, write_tasks

    conv = work / "mmlu"
    convert(data, conv)
    tasks = load_tasks(conv / "tasks.jsonl")
    pick = sorted(np.random.default_rng(seed).permutation(len(tasks))[:n_tasks].tolist())
    subset = work / f"tasks.{n_tasks}.jsonl"
    write_tasks(subset, [tasks[i] for i in pick])
    import tomllib

    models = list(tomllib.loads((conv / "config.toml").read_text())["models"])
    return conv / "config.toml", subset, models


def fresh_home(work: Path, name: str, config: Path) -> dict[str, str]:
    home = work / f"home-{name}"
    home.mkdir()
    (home / "config.toml").write_text(config.read_text())
    env = dict(os.environ)
    env.update({"FSCALE_HOME": str(home), "FSCALE_LOCAL": "off", "FSCALE_CHALLENGER": "0"})
    return env


def measure(checkout: Path, name: str, work: Path, config: Path, tasks: Path, models: list[str],
            cprofile: str, loop_only: bool = False) -> dict:
    out: dict = {"checkout": str(checkout)}
    env = fresh_home(work, f"{name}-loop", config)
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(tasks), ",".join(models), cprofile],
                          cwd=checkout, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name}: driver failed\n{proc.stderr[-3000:]}")
    loop = json.loads(proc.stdout.strip().splitlines()[-1])
    out["loop_calls"] = loop["counts"]["asked"]
    out["loop_seconds"] = round(loop["seconds"], 2)
    out["loop_calls_per_s"] = round(loop["counts"]["asked"] / loop["seconds"], 1)
    out["loop_cpu_seconds"] = round(loop["cpu"], 2)  # steadier than wall time on a shared machine
    if loop_only:
        return out
    env = fresh_home(work, f"{name}-cli", config)
    cmd = [sys.executable, "-m", "fscale_tui", "profile", str(tasks), "--models", ",".join(models),
           "-q", "--json"]
    for label, extra in (("cli", []), ("cli_resume", ["--resume"])):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd + extra, cwd=checkout, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"{name}: fscale profile failed\n{proc.stderr[-3000:]}")
        calls = json.loads(proc.stdout)["calls"]
        out[f"{label}_seconds"] = round(seconds, 2)
        out[f"{label}_asked"] = calls["asked"]
        if calls["asked"]:
            out[f"{label}_calls_per_s"] = round(calls["asked"] / seconds, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before", type=Path, default=None,
                    help="another checkout to measure in the same run (the baseline)")
    ap.add_argument("--before-loop-only", action="store_true",
                    help="measure only run_profile for --before (the old code takes minutes per run)")
    ap.add_argument("--after-loop-only", action="store_true", help="measure only run_profile for this checkout")
    ap.add_argument("--cprofile", default="", help="write run_profile's cProfile stats here (this checkout)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fscale-profile-speed-") as tmp:
        work = Path(tmp)
        config, tasks, models = prepare(args.data, work, args.tasks, args.seed)
        print(f"{args.tasks} tasks × {len(models)} models = {args.tasks * len(models)} replay calls",
              file=sys.stderr)
        results = {}
        if args.before is not None:
            results["before"] = measure(args.before.resolve(), "before", work, config, tasks, models, "",
                                           args.before_loop_only)
            print(f"before: {results['before']}", file=sys.stderr)
        results["after"] = measure(REPO, "after", work, config, tasks, models, args.cprofile,
                                   args.after_loop_only)
        print(f"after:  {results['after']}", file=sys.stderr)
    if args.json:
        print(json.dumps(results))
    else:
        for name, r in results.items():
            line = (f"{name:<6} run_profile {r['loop_calls']} calls in {r['loop_seconds']}s = "
                    f"{r['loop_calls_per_s']}/s (CPU {r['loop_cpu_seconds']}s)")
            if "cli_seconds" in r:
                line += (f"; fscale profile end to end {r['cli_seconds']}s "
                         f"({r.get('cli_calls_per_s', '-')}/s); again with --resume {r['cli_resume_seconds']}s")
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
