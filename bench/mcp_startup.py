"""MCP server start-up as an agent feels it: launch ``fscale mcp``, send ``initialize``, time the
answer.

Each run starts a fresh ``python -m fscale_tui mcp`` (the code path of the ``fscale`` console
script) with a temporary FSCALE_HOME, writes the JSON-RPC ``initialize`` request on its stdin at
once (a client does not wait either) and measures the wall time from launch until the response
line arrives, and the CPU time the server has used by then (``/proc``: the figure that does not
grow when other processes compete for the cores); then ``notifications/initialized`` and
``tools/list`` (the next thing a client asks) are timed from there. ``python -c pass`` and ``fscale --version`` are the baselines. The
cases run interleaved, so a machine that gets busier half-way slows every case alike. No model
is asked.

Usage: python bench/mcp_startup.py [--runs 15] [--json]

Prints, per case, the median, the fastest and the slowest wall time in milliseconds.
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

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "bench", "version": "0"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def line(message: dict) -> bytes:
    return (json.dumps(message) + "\n").encode()


def read_response(proc: subprocess.Popen, request_id: int) -> dict:
    """The response to ``request_id`` (notifications the server sends first are skipped)."""
    while True:
        raw = proc.stdout.readline()
        if not raw:
            raise RuntimeError(f"fscale mcp closed stdout (exit {proc.wait()}): "
                               f"{proc.stderr.read().decode(errors='replace')[-500:]}")
        message = json.loads(raw)
        if message.get("id") == request_id:
            if "error" in message:
                raise RuntimeError(f"request {request_id} failed: {message['error']}")
            return message


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a running process has used so far (Linux /proc; else None)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mcp_run(env: dict[str, str]) -> tuple[float, float | None, float]:
    """(seconds to the initialize answer, the server's CPU seconds by then, seconds from there
    to the tools/list answer)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fscale_tui", "mcp"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        proc.stdin.write(line(INITIALIZE))
        proc.stdin.flush()
        read_response(proc, 1)
        t1 = time.perf_counter()
        cpu = cpu_seconds(proc.pid)
        proc.stdin.write(line(INITIALIZED) + line(LIST_TOOLS))
        proc.stdin.flush()
        tools = read_response(proc, 2)["result"]["tools"]
        t2 = time.perf_counter()
        assert {t["name"] for t in tools} >= {"scale", "verify", "generate"}, tools
    finally:
        proc.stdin.close()  # end of input: the server exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return t1 - t0, cpu, t2 - t1


def process_run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env, cwd=REPO, check=True)
    return time.perf_counter() - t0


def summary(seconds: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(seconds) * 1000, 1),
            "min_ms": round(min(seconds) * 1000, 1), "max_ms": round(max(seconds) * 1000, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    samples: dict[str, list[float]] = {"python -c pass": [], "fscale --version": [],
                                       "fscale mcp: initialize answered": [],
                                       "  its CPU time by then": [],
                                       "then tools/list answered": []}
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, FSCALE_HOME=home, FSCALE_LOCAL="off")
        env.pop("FSCALE_DEBUG", None)
        mcp_run(env)  # warm the page cache and the .pyc files
        for _ in range(args.runs):
            samples["python -c pass"].append(process_run([sys.executable, "-c", "pass"], env))
            samples["fscale --version"].append(
                process_run([sys.executable, "-m", "fscale_tui", "--version"], env))
            init, cpu, listed = mcp_run(env)
            samples["fscale mcp: initialize answered"].append(init)
            if cpu is not None:
                samples["  its CPU time by then"].append(cpu)
            samples["then tools/list answered"].append(listed)
    report = {name: summary(values) for name, values in samples.items() if values}
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"runs": args.runs, "python": sys.version.split()[0],
                          "load_1min": round(load, 2), "cases": report}, indent=2))
        return 0
    print(f"{args.runs} runs each, interleaved; python {sys.version.split()[0]}; "
          f"load average {load:.2f}")
    print(f"{'case':<34} {'median':>9} {'fastest':>9} {'slowest':>9}")
    for name, r in report.items():
        print(f"{name:<34} {r['median_ms']:>7.1f}ms {r['min_ms']:>7.1f}ms {r['max_ms']:>7.1f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
