"""Ctrl-C on a cold start: seconds from SIGINT to the command's exit, at each stage of a first
call on the embedded local models, and whether a server it started is left running.

Each run is a fresh ``fscale scale "Is 10 greater than 3?" -a YES,NO`` (the default local panel:
two servers) with stderr on a real pseudo-terminal, in a fresh FSCALE_HOME; SIGINT is sent the
moment the terminal shows the stage's marker:

- ``join``: ``joining`` (the byte bar of the weight join; the cache is empty);
- ``start``: ``starting the local server`` (the weights are joined already, from a shared
  cache; the servers are loading their models).

Prints, per stage, the median and worst seconds from the signal to the exit, the exit codes,
and the runs that left a server of theirs running (the target: every exit within 1 s, 130,
none left). Needs the ``[local]`` extra; the joins write about 1.6 GB per ``join`` run.

Usage: python bench/cold_interrupt.py [--runs 5] [--stages join,start]
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MARKERS = {"join": "joining", "start": "starting the local server"}
COMMAND = ["scale", "Is 10 greater than 3?", "-a", "YES,NO"]


def serve_pids(home: Path) -> list[int]:
    """Live local model servers whose command line names this home's state directory."""
    from fscale_tui.engine.providers.local import servers

    marker = str(home / "state" / "local").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if servers.SERVE_MODULE.encode() in argv and any(a.startswith(marker) for a in argv):
                if servers.pid_running(int(entry.name)):
                    pids.append(int(entry.name))
    return pids


def one_run(home: Path, marker: str) -> tuple[float, int, list[int]]:
    env = {**os.environ, "FSCALE_HOME": str(home), "TERM": "xterm-256color",
           "FSCALE_LOCAL_N_CTX": "512", "FSCALE_LOCAL_PARALLEL": "1"}
    env.pop("FSCALE_LOCAL", None)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "fscale_tui", *COMMAND], env=env, cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    seen, sent = b"", None
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.01)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    pass
            if sent is None and marker.encode() in seen:
                proc.send_signal(signal.SIGINT)
                sent = time.monotonic()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        took = time.monotonic() - sent if sent is not None else float("nan")
    finally:
        os.close(master)
    return took, proc.returncode, serve_pids(home)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--stages", default="join,start")
    args = ap.parse_args()
    from fscale_tui.engine.base.paths import Paths
    from fscale_tui.engine.providers.local import servers, weights

    root = Path(tempfile.mkdtemp(prefix="fscale-interrupt-"))
    shared = root / "shared-cache"
    try:
        for stage in args.stages.split(","):
            times, codes, left = [], [], 0
            for i in range(args.runs):
                home = root / f"{stage}-{i}"
                home.mkdir()
                if stage == "start":
                    if not shared.exists():
                        for w in weights.BUILTIN_WEIGHTS.values():
                            weights.ensure_builtin(w, shared)
                    (home / "cache").symlink_to(shared, target_is_directory=True)
                took, code, pids = one_run(home, MARKERS[stage])
                times.append(took)
                codes.append(code)
                left += bool(pids)
                paths = Paths(home, home / "data", home / "state", home / "cache")
                for name in servers.known_servers(paths):  # clean up what a failed run left
                    servers.stop_server(paths, name)
                if stage == "join":
                    shutil.rmtree(home / "cache", ignore_errors=True)
            print(f"{stage:<6} SIGINT -> exit: median {statistics.median(times):.2f} s, worst "
                  f"{max(times):.2f} s over {len(times)} runs; exit codes {sorted(set(codes))}; "
                  f"runs leaving a server running: {left}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
