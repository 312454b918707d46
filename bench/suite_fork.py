"""What a test's ``run_cli`` costs: a fork of the preloaded fscale (tests/cli_zygote.py) against a
fresh ``python -m fscale_tui`` process, the same command against the loopback server.

Runs are interleaved (fork, fresh, fork, ...) so the machine's load falls on both alike. Prints
the median wall time per call and the CPU per call (the children's, the zygote's start-up spread
over the fork calls). Usage: ``python bench/suite_fork.py [--calls 20] [--rounds 3]``.
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
sys.path.insert(0, str(REPO))

from tests.cli_zygote import Zygote  # noqa: E402
from tests.conftest import write_config  # noqa: E402
from tests.oai_server import Behaviour, StubOpenAIServer  # noqa: E402

COMMAND = ["scale", "Is it?", "-a", "YES,NO", "--json"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per round and way")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fscale-bench-fork-"))
    os.environ.update(FSCALE_HOME=str(home), FSCALE_LOCAL="off", FSCALE_CHALLENGER="0")
    env = dict(os.environ)
    walls: dict[str, list[float]] = {"fork": [], "fresh": []}
    cpu: dict[str, float] = {"fork": 0.0, "fresh": 0.0}
    with StubOpenAIServer() as server:
        server.set_default(Behaviour(reply="YES"))
        write_config(home, server)
        for _ in range(args.rounds):
            for way in ("fork", "fresh"):
                before = _children_cpu()
                zygote = Zygote(str(REPO)) if way == "fork" else None
                for _ in range(args.calls):
                    start = time.perf_counter()
                    if zygote is not None:
                        done = zygote.run(COMMAND, env=env, cwd=str(REPO), input=None, timeout=60)
                    else:
                        done = subprocess.run([sys.executable, "-m", "fscale_tui", *COMMAND],
                                              capture_output=True, text=True, env=env, cwd=REPO,
                                              stdin=subprocess.DEVNULL, timeout=60, check=False)
                    walls[way].append(time.perf_counter() - start)
                    assert done is not None and done.returncode == 0, done
                if zygote is not None:
                    zygote.close()  # reaped here: its CPU (start-up and children) is counted
                cpu[way] += _children_cpu() - before
    calls = args.calls * args.rounds
    print(f"fscale {' '.join(COMMAND)}: {calls} calls each way, {args.rounds} interleaved rounds")
    for way in ("fork", "fresh"):
        print(f"  {way:5}  wall median {statistics.median(walls[way]):.3f} s   "
              f"CPU per call {cpu[way] / calls:.3f} s")
    print(f"  fork / fresh: wall x{statistics.median(walls['fork']) / statistics.median(walls['fresh']):.2f}, "
          f"CPU x{cpu['fork'] / cpu['fresh']:.2f}")


if __name__ == "__main__":
    main()
