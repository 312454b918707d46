"""The input boundary at scale: a config.toml with 10,000 models, and 50 MB of batch on stdin.

1. **Config size.** A config.toml with N models (default 10,000; a 10-model one for comparison):
   each command runs as a fresh process (``python -m fscale_tui ...``) against the loopback
   OpenAI-compatible server, measured from ``os.wait4`` (user+system CPU of the child, and wall
   time). CPU is the figure to compare on a shared machine. Target: < 2 s per command.
2. **50 MB on stdin.** ``fscale scale --batch - -a YES,NO --models fast-a`` reads a 50 MB JSONL
   batch (lines of ``--line-kb`` KB) from a pipe written by this script; the figure is the
   peak resident memory of the fscale process (``ru_maxrss``), beside the same command fed
   one line. Target: < 200 MB.

``--repo DIR`` runs another checkout's code (e.g. the commit before the change: ``git archive
<commit> | tar -x -C DIR``) with this checkout's loopback server, for before/after figures; with
it, use ``--models 1000,2000`` (the old secret check took 3.8 s and 12 s there, and over 300 s
at 10,000).

Usage: python bench/trust_io.py [--models 10000] [--mb 50] [--line-kb 10] [--runs 3]
                               [--repo DIR] [--skip-config] [--skip-stdin] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.oai_server import Behaviour, StubOpenAIServer  # noqa: E402

COMMANDS = [
    ["config", "show"],
    ["models", "--json"],
    ["panels"],
    ["history"],
    ["scale", "Is 7 prime?", "-a", "YES,NO", "--json"],
    ["scale", "Is 7 prime?", "-a", "YES,NO", "--models", "m5,m6,m7"],
    ["generate", "Name a prime", "-k", "2"],
]


def config_text(models: int, base_url: str) -> str:
    lines = ["[providers.stub]", f'base_url = "{base_url}"', 'api_key_env = "STUB_KEY"', ""]
    for i in range(models):
        lines += [f"[models.m{i}]", 'provider = "stub"', f'id = "vendor/model-{i}"',
                  'tier = "fast"', f'family = "f{i % 7}"', "cost = 0.1", ""]
    return "\n".join(lines + ["[panels]", 'default = ["m0", "m1", "m2"]']) + "\n"


def run(cmd: list[str], env: dict[str, str], cwd: Path, stdin_data: Path | None = None
        ) -> tuple[float, float, float, int]:
    """(cpu_s, wall_s, peak_rss_mb, exit code) of one process; ``stdin_data`` is written to
    its stdin through a pipe (as a producer piping into fscale would)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fscale_tui", *cmd], env=env, cwd=cwd,
                            stdin=subprocess.PIPE if stdin_data else subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    writer = None
    if stdin_data is not None:
        def feed() -> None:
            try:
                with open(stdin_data, "rb") as src:
                    while chunk := src.read(1 << 20):
                        proc.stdin.write(chunk)
            except BrokenPipeError:
                pass
            finally:
                proc.stdin.close()

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if writer is not None:
        writer.join()
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024, proc.returncode


def env_for(home: Path, repo: Path) -> dict[str, str]:
    env = dict(os.environ, FSCALE_HOME=str(home), STUB_KEY="bench-key-0000", FSCALE_LOCAL="off",
               FSCALE_CHALLENGER="0", PYTHONPATH=str(repo))
    env.pop("FSCALE_DEBUG", None)
    return env


def bench_config(server: StubOpenAIServer, sizes: list[int], runs: int, repo: Path) -> list[dict]:
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            (home / "config.toml").write_text(config_text(size, server.base_url))
            env = env_for(home, repo)
            run(["config", "show"], env, repo)  # warm caches, create the home
            for cmd in COMMANDS:
                samples = [run(cmd, env, repo) for _ in range(runs)]
                cpu = statistics.median(s[0] for s in samples)
                wall = statistics.median(s[1] for s in samples)
                rows.append({"models": size, "command": " ".join(cmd), "cpu_s": round(cpu, 3),
                             "wall_s": round(wall, 3), "exit": samples[-1][3]})
                print(f"  {size:>6} models  fscale {' '.join(cmd):<48} cpu {cpu:6.2f} s   "
                      f"wall {wall:6.2f} s   exit {samples[-1][3]}", flush=True)
    return rows


def bench_stdin(server: StubOpenAIServer, mb: float, line_kb: float, repo: Path) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "config.toml").write_text(config_text(3, server.base_url).replace(
            '"m0", "m1", "m2"', '"m0"'))
        env = env_for(home, repo)
        pad = "x" * max(0, int(line_kb * 1024) - 80)
        big = Path(tmp) / "batch.jsonl"
        target, n = int(mb * 1024 * 1024), 0
        with open(big, "w") as out:
            written = 0
            while written < target:
                line = json.dumps({"id": f"i{n}", "question": f"Is {n} even? {pad}"}) + "\n"
                out.write(line)
                written += len(line)
                n += 1
        one = Path(tmp) / "one.jsonl"
        one.write_text(big.open().readline())
        cmd = ["scale", "--batch", "-", "-a", "YES,NO", "--models", "m0", "--quiet"]
        for label, path, items in (("1 line", one, 1), (f"{mb:g} MB", big, n)):
            cpu, wall, rss, code = run(cmd, env, repo, stdin_data=path)
            size = path.stat().st_size / 1024 / 1024
            rows.append({"input": label, "items": items, "input_mb": round(size, 1),
                         "largest_line_kb": round(line_kb, 1), "peak_rss_mb": round(rss, 1),
                         "cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "exit": code})
            print(f"  stdin {label:<8} {items:>6} items {size:7.1f} MB  peak RSS {rss:7.1f} MB   "
                  f"cpu {cpu:6.1f} s   wall {wall:6.1f} s   exit {code}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="10000", help="Config sizes, comma-separated.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=float, default=50.0)
    parser.add_argument("--line-kb", type=float, default=10.0)
    parser.add_argument("--repo", type=Path, default=REPO, help="Checkout whose code runs.")
    parser.add_argument("--skip-config", action="store_true")
    parser.add_argument("--skip-stdin", action="store_true")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON too.")
    args = parser.parse_args()
    sizes = [10] + [int(x) for x in args.models.split(",") if x.strip()]
    figures: dict[str, list[dict]] = {}
    with StubOpenAIServer() as server:
        server.set_default(Behaviour(reply="YES"))
        print(f"code: {args.repo}")
        if not args.skip_config:
            print(f"config.toml size (median of {args.runs} runs per command):")
            figures["config"] = bench_config(server, sizes, args.runs, args.repo)
        if not args.skip_stdin:
            print("batch on stdin (peak memory of the fscale process):")
            figures["stdin"] = bench_stdin(server, args.mb, args.line_kb, args.repo)
    if args.json:
        print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
