"""CLI start-up as scripts feel it: whole processes, CPU and wall time.

Each case starts a fresh interpreter (``python -m fscale_tui ...``, the same code path as the
``fscale`` console script) and is measured from ``os.wait4``: user + system CPU time of the
child, and the wall time from launch to exit. ``python -c pass`` is the baseline: what any
Python command costs before it does anything. The cases run interleaved, in one sitting, so a
machine that gets busier half-way slows every case alike; CPU time is the figure to compare on
a shared machine (it does not grow when other processes compete for the cores).

A temporary FSCALE_HOME is used; no network request is made (no case asks a model).

Usage: python bench/startup.py [--runs 15] [--json]

Prints, per case, the median and the minimum CPU and wall times in milliseconds, and the
median CPU time above the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CASES: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "fscale --version": [sys.executable, "-m", "fscale_tui", "--version"],
    "fscale --help": [sys.executable, "-m", "fscale_tui", "--help"],
    "fscale config path": [sys.executable, "-m", "fscale_tui", "config", "path"],
    "fscale scale (usage error)": [sys.executable, "-m", "fscale_tui", "scale", "q?"],
}


def one_run(cmd: list[str], env: dict[str, str], cwd: Path = REPO,
            check: bool = False) -> tuple[float, float]:
    """(cpu_s, wall_s) of one process, from its own rusage; ``check``: it must exit 0."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    if check and os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {os.waitstatus_to_exitcode(status)}")
    wall = time.perf_counter() - t0
    proc.returncode = 0  # reaped by wait4; keep Popen from waiting again
    return usage.ru_utime + usage.ru_stime, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, FSCALE_HOME=home, FSCALE_LOCAL="off")
        env.pop("FSCALE_DEBUG", None)
        for cmd in CASES.values():  # warm the page cache and the .pyc files
            one_run(cmd, env)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
        for _ in range(args.runs):
            for name, cmd in CASES.items():
                samples[name].append(one_run(cmd, env))
    base = statistics.median(c for c, _ in samples["python -c pass"])
    report = {}
    for name, runs in samples.items():
        cpu = [c for c, _ in runs]
        wall = [w for _, w in runs]
        report[name] = {"cpu_median_ms": round(statistics.median(cpu) * 1000, 1),
                        "cpu_min_ms": round(min(cpu) * 1000, 1),
                        "wall_median_ms": round(statistics.median(wall) * 1000, 1),
                        "wall_min_ms": round(min(wall) * 1000, 1),
                        "cpu_over_baseline_ms": round((statistics.median(cpu) - base) * 1000, 1)}
    if args.json:
        print(json.dumps({"runs": args.runs, "python": sys.version.split()[0], "cases": report},
                         indent=2))
        return 0
    print(f"{args.runs} runs each, interleaved; python {sys.version.split()[0]}")
    print(f"{'case':<28} {'cpu med':>8} {'cpu min':>8} {'wall med':>9} {'wall min':>9} {'cpu-base':>9}")
    for name, r in report.items():
        print(f"{name:<28} {r['cpu_median_ms']:>6.0f}ms {r['cpu_min_ms']:>6.0f}ms "
              f"{r['wall_median_ms']:>7.0f}ms {r['wall_min_ms']:>7.0f}ms "
              f"{r['cpu_over_baseline_ms']:>+7.0f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
