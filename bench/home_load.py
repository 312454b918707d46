"""One home, the TUI and 4 CLI writers at once, for minutes: calls lost, "disk I/O error",
deleted SQLite files held (issue 21, acceptance 4).

The TUI runs in this process under Textual's Pilot (ask, wait for the decision, visit History,
check ``/proc/self/fd``); 4 threads each run CLI batches of 12 items one after another, and
now and then ``fscale history`` (a reader that may checkpoint the WAL) and ``fscale feedback``
(another writer). The loopback OpenAI server runs in its own process. See tests/home_load.py
for what is checked; the suite runs the same for 20 s (tests/test_home_load.py).

Usage: python bench/home_load.py [--seconds 300] [--writers 4] [--latency 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.01, help="server reply latency (s)")
    args = ap.parse_args()

    from bench.fleet import start_server
    from tests.conftest import STUB_MODELS
    from tests.home_load import run

    proc, base_url = start_server({"__default__": {"reply": "YES", "latency": args.latency}})
    try:
        with tempfile.TemporaryDirectory(prefix="fscale-home-load-") as tmp:
            home = Path(tmp) / "home"
            home.mkdir()
            import tomli_w

            (home / "config.toml").write_text(tomli_w.dumps({
                "providers": {"stub": {"base_url": base_url}},
                "models": {a: {"provider": "stub", "id": m, "tier": t, "family": f}
                           for a, (m, t, f) in STUB_MODELS.items()},
                "panels": {"default": ["fast-a", "fast-b", "slow-c"]}}))
            os.environ.update(FSCALE_HOME=str(home), FSCALE_CHALLENGER="0", FSCALE_LOCAL="off")
            started = time.monotonic()
            tally = asyncio.run(run(home, args.seconds, args.writers))
            took = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()
    vis = sorted(tally.visible_after_s)
    print(f"ran {took:.0f} s: the TUI and {args.writers} CLI writers on one home")
    print(f"  TUI calls answered        {len(tally.tui_questions)}")
    print(f"  CLI batch runs            {tally.cli_runs} ({len(tally.printed_ids)} results printed,"
          f" {tally.feedback} feedback)")
    print(f"  calls lost                {tally.tui_lost} of the TUI's, {tally.cli_lost} of the CLI's")
    print(f"  deleted SQLite files held {tally.deleted_held_max} (most at one check)")
    if vis:
        print(f"  TUI call visible to other processes after {statistics.median(vis):.2f} s "
              f"median, {vis[-1]:.2f} s worst ({len(vis)} checked)")
    print(f"  problems                  {len(tally.problems)}")
    for p in tally.problems[:20]:
        print(f"    {p}")
    raise SystemExit(1 if tally.problems else 0)


if __name__ == "__main__":
    main()
