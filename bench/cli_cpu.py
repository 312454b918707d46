"""CPU seconds of the one-shot commands the test suite (and a script) starts most, against a real
loopback OpenAI server: ``scale`` (one vote, and ``-k 3``), ``history``, ``config show``, ``--help``.

    python bench/cli_cpu.py [--runs 7] [--before DIR]

Each case starts a fresh ``python -m fscale_tui`` and reads the child's user + system CPU time
(``bench/startup.py``'s ``one_run``), which does not grow when other processes compete for the cores; the
median per case is printed. ``--before DIR`` runs the same cases on another checkout (e.g.
``git archive <commit> | tar -x -C DIR``) interleaved with this one, in one sitting, and prints
the ratio. Both checkouts are byte-compiled first, so neither pays for compiling its sources.
Challengers are off (``FSCALE_CHALLENGER=0``), as in the tests.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.startup import one_run  # noqa: E402
from tests.conftest import write_config  # noqa: E402
from tests.oai_server import Behaviour, StubOpenAIServer  # noqa: E402

CASES = [["scale", "q?", "-a", "YES,NO", "--json"], ["scale", "q?", "-a", "YES,NO", "-k", "3"],
         ["history", "--json"], ["config", "show"], ["--help"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--before", type=Path)
    args = parser.parse_args()
    checkouts = {"now": REPO} | ({"before": args.before.resolve()} if args.before else {})
    for path in checkouts.values():
        compileall.compile_dir(path / "fscale_tui", quiet=1)
    home = Path(tempfile.mkdtemp(prefix="fscale-cli-cpu-"))
    with StubOpenAIServer() as server:
        server.set_default(Behaviour(reply="YES"))
        write_config(home, server)
        env = {**os.environ, "FSCALE_HOME": str(home), "FSCALE_CHALLENGER": "0",
               "FSCALE_LOCAL": "off", "PYTHONPATH": ""}
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.runs):
            for case in CASES:
                for name, path in checkouts.items():
                    cmd = [sys.executable, "-m", "fscale_tui", *case]
                    cpu, _wall = one_run(cmd, env, cwd=path, check=True)
                    times.setdefault((name, " ".join(case)), []).append(cpu)
    for case in CASES:
        label = " ".join(case)
        now = statistics.median(times[("now", label)])
        line = f"{'fscale ' + label:38s} {now:6.3f} s CPU"
        if args.before:
            old = statistics.median(times[("before", label)])
            line += f"   before {old:6.3f} s   ratio {now / old:5.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
