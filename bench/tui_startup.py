"""TUI start-up: how long from launching ``fscale tui`` until the Ask screen is mounted.

Each run starts a fresh interpreter with ``python -m fscale_tui tui --exit-when-ready``: the
real entry point (Typer CLI, lazy Textual import, app, engine settings, Ask screen), headless,
exiting as soon as the Ask screen's ``on_mount`` has run. Three figures per run:

- ``to_ask``: from just before launching the process to the moment the Ask screen's
  ``on_mount`` ran (wall clock, ``time.time()`` on both sides): interpreter start, the Typer
  CLI, the lazy Textual import, settings and the first screen. This is the figure the < 1 s
  target is about;
- ``wall``: launch to process exit (adds the app's and the interpreter's shutdown);
- ``import``: inside the process, from the ``tui`` command starting to the app object existing
  (Textual import);
- ``ready``: inside the process, from the app object existing to the Ask screen mounted;
- ``cpu``: user + system CPU time of the whole process (does not grow when other processes
  compete for the cores, so it is the figure to compare on a busy machine).

A temporary FSCALE_HOME with a small config is used so the user's files are not touched; no
network request is made on start-up. Prints the median and the worst of N runs (default 7)
and exits 1 if the median launch-to-Ask time is 1 s or more.

Usage: python bench/tui_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIMIT_S = 1.0
CONFIG = """\
[providers.stub]
base_url = "http://127.0.0.1:9/v1"

[models.fast-a]
provider = "stub"
id = "vendor-a/fast"
tier = "fast"
family = "a"

[models.fast-b]
provider = "stub"
id = "vendor-b/fast"
tier = "fast"
family = "b"

[panels]
default = ["fast-a", "fast-b"]
"""


def one_run(home: str) -> dict[str, float]:
    env = dict(os.environ, FSCALE_HOME=home)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    launched = time.time()
    proc = subprocess.run([sys.executable, "-m", "fscale_tui", "tui", "--exit-when-ready"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"fscale tui failed ({proc.returncode}):\n{proc.stderr}")
    fields = dict(item.split("=") for item in proc.stdout.split())
    return {"to_ask": float(fields["ready_epoch"]) - launched, "wall": wall,
            "import": float(fields["import_s"]), "ready": float(fields["ready_s"]), "cpu": cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        Path(home, "config.toml").write_text(CONFIG)
        one_run(home)  # warm the OS file cache and .pyc files; not counted
        runs = [one_run(home) for _ in range(args.runs)]
    print(f"fscale tui start-up to the Ask screen, {args.runs} runs (median / worst):")
    for key, label in (("to_ask", "launch to Ask screen mounted"),
                       ("wall", "launch to process exit"),
                       ("import", "  textual + app import"),
                       ("ready", "  app start to Ask screen mounted"),
                       ("cpu", "CPU time of the whole process (user+sys)")):
        values = [r[key] for r in runs]
        print(f"  {label:<42} {statistics.median(values):.3f} s / {max(values):.3f} s")
    median = statistics.median(r["to_ask"] for r in runs)
    ok = median < LIMIT_S
    print(f"  {'limit':<42} {LIMIT_S:.3f} s  -> {'OK' if ok else 'TOO SLOW'}")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"  note: load average {load:.1f} on {os.cpu_count()} cores: wall figures are inflated; "
              "the CPU time is the load-independent figure")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
