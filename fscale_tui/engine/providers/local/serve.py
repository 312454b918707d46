"""One background llama.cpp server: ``python -m fscale_tui.engine.providers.local.serve --name ID ...``.

Started by ``servers.ensure_server`` (never by hand in normal use). Loads the GGUF with
xllamacpp, listens on 127.0.0.1 at a random port, writes the state file once it answers, and
exits cleanly on SIGTERM/SIGINT or after ``--idle-timeout`` seconds without use (nobody touched
the state file and no slot is busy). On the way out it removes its state file, under the same
lock the starters use, so no caller is handed a server that is about to go.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import httpx

from ...base import output, storage
from .servers import read_state, try_locked


class _Stop(Exception):
    """Raised by the signal handler to leave the serving loop at once (even mid-sleep)."""


def _busy(url: str) -> bool:
    """True while any slot is processing a request (a long request is not idleness)."""
    try:
        slots = httpx.get(url + "/slots", timeout=2.0).json()
        return any(bool(s.get("is_processing")) for s in slots)
    except (httpx.HTTPError, ValueError, AttributeError, TypeError):
        return False


def _remove_if_ours(state_file: Path, token: str) -> None:
    state = read_state(state_file)
    if state is not None and int(state["pid"]) == os.getpid() and state.get("token", "") == token:
        with contextlib.suppress(FileNotFoundError):
            state_file.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fscale-local-serve")
    ap.add_argument("--name", required=True, help="model id served (and accepted in requests)")
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--state", required=True, type=Path)
    ap.add_argument("--token", default="", help="random proof of identity, recorded in the state file")
    ap.add_argument("--n-ctx", type=int, default=4096, help="context per parallel slot")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--idle-timeout", type=float, default=900.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--embedding", action="store_true",
                    help="serve /v1/embeddings (mean pooling, L2-normalised); one prompt per slot")
    args = ap.parse_args(argv)

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.gguf
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_parallel = max(1, args.parallel)
    params.n_ctx = max(256, args.n_ctx) * params.n_parallel  # llama.cpp splits it across slots
    params.cpuparams.n_threads = max(1, args.threads)
    params.cpuparams_batch.n_threads = max(1, args.threads)
    params.model_alias = [args.name]
    params.endpoint_slots = True
    if args.embedding:
        # Mean pooling over the prompt's tokens (Qwen's GGUF declares no pooling); a prompt is
        # embedded in one batch, so the physical batch must hold a whole slot's context.
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        params.embd_normalize = 2
        params.n_batch = params.n_ubatch = params.n_ctx
    started = time.time()
    server = xllamacpp.Server(params)
    url = str(server.listening_address).rstrip("/")
    if not url.startswith("http"):
        url = "http://" + url
    port = int(url.rsplit(":", 1)[1])
    state = {
        "name": args.name, "pid": os.getpid(), "token": args.token, "url": url, "base_url": url + "/v1", "port": port,
        "gguf": args.gguf, "n_ctx": args.n_ctx, "parallel": params.n_parallel,
        "threads": args.threads, "idle_timeout": args.idle_timeout, "embedding": args.embedding,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_s": round(time.time() - started, 3),
        "xllamacpp": getattr(xllamacpp, "__version__", "?"),
    }
    # The starter holds the lock while it waits for us: write atomically, without the lock.
    storage.write_json(args.state, state)
    output.err.write(f"fscale-local: serving {args.name} at {url} (pid {os.getpid()})\n")
    output.err.flush()
    reason = "signal"
    tick = max(0.2, min(2.0, args.idle_timeout / 4))

    def on_signal(signum: int, frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    # Installed only now: a signal during the model load just ends the process (no state yet).
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        while True:
            time.sleep(tick)
            try:
                last_used = args.state.stat().st_mtime
            except FileNotFoundError:
                reason = "state file removed"
                break
            if time.time() - last_used < args.idle_timeout or _busy(url):
                continue
            with try_locked(args.state) as got:
                if not got:
                    continue  # someone is starting or reusing us right now
                try:
                    if time.time() - args.state.stat().st_mtime < args.idle_timeout:
                        continue
                except FileNotFoundError:
                    pass
                _remove_if_ours(args.state, args.token)
                reason = f"idle for {args.idle_timeout:g}s"
                break
    except _Stop as exc:
        reason = str(exc)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # finish the clean-up once started
        _remove_if_ours(args.state, args.token)
        output.err.write(f"fscale-local: stopping {args.name} ({reason})\n")
        output.err.flush()
        del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
