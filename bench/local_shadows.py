"""Do shadow challengers slow down a warm ``scale`` on the embedded local panel? (issue 20)

Paired runs of the real CLI on the default local panel (no key set: the embedded Qwen models,
the ``[local]`` extra), each a fresh ``fscale scale`` process with its servers warm:
``fscale scale Q --json`` with the default settings (shadows on, ``[learning] shadow_budget``)
against ``fscale scale Q --json --no-challenger``, alternating which goes first in each pair.
Before the pairs, ``--warmup`` calls with shadows on earn the budget (a fresh home has spent
nothing, so it could explore nothing), so the default runs really are allowed shadows.

Prints each pair, the median wall time of each arm, the ratio (target ≤ 1.10), and the shadow
calls the default runs made (the local panel is one family: a shadow's votes could never be
scored, so none is asked; if a shadow were asked, it would start only after the decision).

    python bench/local_shadows.py                 # 6 pairs in a fresh temporary FSCALE_HOME
    python bench/local_shadows.py --pairs 10 --home /tmp/fs-home

Servers started here are stopped at the end (``fscale local stop``) unless ``--keep``.
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
QUESTION = "Is the sentiment of this review positive or negative?"
CONTEXT = "Review: a warm, funny and beautifully acted film."


def fscale(home: Path, *args: str, timeout: float = 600) -> tuple[float, subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NVIDIA_API_KEY", "GITHUB_TOKEN", "FSCALE_LOCAL", "FSCALE_CHALLENGER",
                        "FSCALE_SHADOW_BUDGET", "FSCALE_REDIS_URL")}
    env["FSCALE_HOME"] = str(home)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "fscale_tui", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return time.monotonic() - started, proc


def one(home: Path, shadows: bool) -> tuple[float, dict]:
    args = ["scale", QUESTION, "--context", CONTEXT, "-a", "positive,negative", "--json"]
    if not shadows:
        args.append("--no-challenger")
    took, proc = fscale(home, *args)
    if proc.returncode != 0:
        raise SystemExit(f"fscale scale failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return took, json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=4,
                    help="calls with shadows on before the pairs (servers start, budget accrues)")
    ap.add_argument("--home", type=Path, default=None, help="FSCALE_HOME (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="leave the local servers running")
    args = ap.parse_args(argv)
    home = args.home or Path(tempfile.mkdtemp(prefix="fscale-local-shadows-"))
    home.mkdir(parents=True, exist_ok=True)
    try:
        for i in range(args.warmup):
            took, data = one(home, True)
            print(f"warm-up {i + 1}: {took:.2f}s, members {data['members']}, "
                  f"{data['spend']['decision']['calls']} decision + "
                  f"{len(data['challengers'])} shadow calls", flush=True)
        on: list[float] = []
        off: list[float] = []
        shadow_calls = decision_calls = 0
        for i in range(args.pairs):
            order = (True, False) if i % 2 == 0 else (False, True)
            times = {}
            for shadows in order:
                took, data = one(home, shadows)
                times[shadows] = took
                if shadows:
                    shadow_calls += len(data["challengers"])
                    decision_calls += data["spend"]["decision"]["calls"]
            on.append(times[True])
            off.append(times[False])
            print(f"pair {i + 1}: shadows on {times[True]:.2f}s, --no-challenger "
                  f"{times[False]:.2f}s", flush=True)
        m_on, m_off = statistics.median(on), statistics.median(off)
        ratio = statistics.median(a / b for a, b in zip(on, off))
        print(f"median wall time: shadows on {m_on:.2f}s, --no-challenger {m_off:.2f}s; "
              f"median paired ratio {ratio:.3f} (target ≤ 1.10); shadow calls in the default "
              f"runs: {shadow_calls} for {decision_calls} decision calls")
        print(f"FSCALE_HOME: {home}")
    finally:
        if not args.keep:
            fscale(home, "local", "stop", timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
