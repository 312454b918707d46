"""Background llama.cpp servers, one per local model, shared by every fscale process.

A server is a detached ``python -m fscale_tui.engine.providers.local.serve`` process that loads one GGUF
file with xllamacpp and serves the OpenAI API on 127.0.0.1 at a random port. It writes a JSON
state file ``<state>/local/<model>.json`` (pid, port, url, ...) once it answers, and its log goes
to ``<model>.log`` beside it. Later processes find it through that file, so the second
``fscale scale`` pays no start-up. Every use touches the state file; the server exits by itself
after ``idle_timeout`` seconds without use.

Starting is done under the state file's cross-process lock: two processes that want the same
model at the same time start it once. A state file whose process is gone, is not ours (pid
reused), or does not answer ``/health`` with the right model is stale: it is cleaned up and a
new server started. "Ours" is proven, never assumed: the starter passes a random ``--token``
and this state file's path to the server, the server records the token in the state file, and
a process is only reused or signalled when its command line carries both (:func:`owns`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from ...base import storage
from ...base.errors import FscaleError, ExitCode
from ...base.paths import Paths

SERVE_MODULE = "fscale_tui.engine.providers.local.serve"
DEFAULT_IDLE_TIMEOUT = 900.0
DEFAULT_N_CTX = 4096  # per parallel slot
DEFAULT_PARALLEL = 2
START_TIMEOUT = 180.0
LOG_ROTATE_BYTES = 5 << 20


class LocalServerError(FscaleError):
    """A local model server could not be started or reached."""

    exit_code = ExitCode.ALL_FAILED


class StartCancelled(Exception):
    """The caller gave up (Ctrl-C) while a server was starting: the server was stopped."""


@dataclass(frozen=True)
class ServerSpec:
    """What one background server runs."""

    name: str  # the model id served (also the state/log file stem)
    gguf: str
    n_ctx: int = DEFAULT_N_CTX  # per slot
    parallel: int = DEFAULT_PARALLEL
    threads: int = 0  # 0: half the cores (two servers usually run side by side)
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: Serve ``/v1/embeddings`` (mean-pooled, L2-normalised) instead of chat: llama.cpp fixes
    #: the pooling and the batch size when the context is made, so an embedding server is a
    #: server of its own (``<model id>.embed``), never the chat server of the same weights.
    embedding: bool = False

    def resolved_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 2) // 2)


def local_dir(paths: Paths) -> Path:
    return paths.state_dir / "local"


def _stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def state_path(paths: Paths, name: str) -> Path:
    return local_dir(paths) / f"{_stem(name)}.json"


def log_path(paths: Paths, name: str) -> Path:
    return local_dir(paths) / f"{_stem(name)}.log"


def read_state(path: Path) -> dict[str, Any] | None:
    state = storage.read_json(path)
    return state if state.get("pid") and state.get("base_url") else None


# -- process checks ---------------------------------------------------------------------------
def pid_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (see ``storage.pid_alive``)."""
    return storage.pid_alive(pid)


def server_argv(pid: int) -> list[str] | None:
    """The command line of ``pid`` as a list (``/proc``, else ``ps``); None if it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None  # /proc works: the process is gone
    except OSError:
        return None
    try:  # no /proc (macOS, BSD): ps, split on blanks (enough to find our own arguments)
        out = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.split() or None


def _has_pair(argv: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in zip(argv, argv[1:]))


def is_our_server(pid: int, path: Path | None = None, token: str | None = None) -> bool:
    """``pid`` is alive and runs ``-m fscale_tui.engine.providers.local.serve``; with ``path`` and
    ``token``, it was also started with ``--state PATH --token TOKEN`` (this home's server).

    A command line that merely *contains* the module name (an editor, a grep, a server of
    another FSCALE_HOME whose pid a state file names) is not ours: it is never signalled.
    Without a readable command line nothing is proven, so nothing is ours.
    """
    if not pid_running(pid):
        return False
    argv = server_argv(pid)
    if not argv or not _has_pair(argv, "-m", SERVE_MODULE):
        return False
    if path is not None and not _has_pair(argv, "--state", str(path)):
        return False
    return token is None or _has_pair(argv, "--token", token)


def owns(state: dict[str, Any], path: Path) -> bool:
    """The state file's server is provably this home's: its pid runs our serve module with
    this state file and the random token that the state file records (a state file written
    by an older version, without a token, proves nothing)."""
    token = state.get("token")
    return bool(token) and is_our_server(int(state["pid"]), path, str(token))


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def answers(state: dict[str, Any], name: str, timeout: float = 3.0) -> bool:
    """The server at ``state['url']`` is up and serves ``name`` (not some other process)."""
    url = str(state.get("url", ""))
    try:
        health = httpx.get(url + "/health", timeout=timeout)
        if health.status_code != 200:
            return False
        listed = httpx.get(url + "/v1/models", timeout=timeout).json()
        ids = {str(m.get("id")) for m in listed.get("data", [])}
        return name in ids
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def _terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL; reaps the child if it is ours."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_running(pid):
                return
            time.sleep(0.05)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def try_locked(path: Path) -> Iterator[bool]:
    """Like ``storage.locked`` (same lock file) but never waits: yields whether it got the lock."""
    fd = storage.open_private(path.with_name(path.name + ".lock"))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -- lifecycle -----------------------------------------------------------------------------------
def status(paths: Paths, name: str) -> dict[str, Any]:
    """``running`` / ``stale`` / ``stopped`` with the state (no lock, no side effects)."""
    path = state_path(paths, name)
    state = read_state(path)
    if state is None:
        return {"name": name, "status": "stopped"}
    pid = int(state["pid"])
    ok = owns(state, path) and answers(state, name, timeout=2.0)
    out = dict(state)
    out.update(name=name, status="running" if ok else "stale")
    if ok:
        out["rss_bytes"] = rss_bytes(pid)
        with contextlib.suppress(OSError):
            idle_for = time.time() - path.stat().st_mtime
            out["idle_s"] = round(idle_for, 1)
            out["stops_in_s"] = round(max(0.0, float(state.get("idle_timeout", 0)) - idle_for), 1)
    return out


def touch(paths: Paths, name: str, pid: int) -> bool:
    """Mark the server as used now; False if its state file is gone or names another process."""
    path = state_path(paths, name)
    state = read_state(path)
    if state is None or int(state["pid"]) != pid:
        return False
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def ensure_server(paths: Paths, spec: ServerSpec, *, start_timeout: float = START_TIMEOUT,
                  cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Reuse the running server for ``spec.name`` or start one; returns its state.

    Blocking (it may wait for a model to load): call it from a thread in async code.
    The returned dict has ``started`` = True when this call started the server.
    ``cancelled`` is asked while the server loads: once it says so (Ctrl-C), the server this
    call started is stopped and :class:`StartCancelled` raised; a server it merely found
    running is left alone.
    """
    path = state_path(paths, spec.name)
    with storage.locked(path):
        state = read_state(path)
        if state is not None:
            pid = int(state["pid"])
            ours = owns(state, path)
            if ours and answers(state, spec.name):
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path)
                return {**state, "started": False}
            # Stale: the process died, the pid was reused, or it no longer answers.
            if ours:
                _terminate(pid)
            _remove(path)
        state = _start(paths, spec, path, start_timeout, cancelled)
        return {**state, "started": True}


def _start(paths: Paths, spec: ServerSpec, path: Path, start_timeout: float,
           cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
    log = log_path(paths, spec.name)
    storage.ensure_dir(log.parent)
    with contextlib.suppress(OSError):
        if log.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))
    # The token proves later that the process a state file names is the one started here.
    token = secrets.token_hex(16)
    cmd = [sys.executable, "-m", SERVE_MODULE, "--name", spec.name, "--gguf", spec.gguf,
           "--state", str(path), "--token", token, "--n-ctx", str(spec.n_ctx), "--parallel", str(spec.parallel),
           "--threads", str(spec.resolved_threads()), "--idle-timeout", str(spec.idle_timeout)]
    if spec.embedding:
        cmd.append("--embedding")
    with os.fdopen(storage.open_private(log, os.O_WRONLY | os.O_APPEND), "ab") as fh:
        fh.write(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {spec.name}: "
                 f"{json.dumps(asdict(spec))}\n".encode())
        fh.flush()
        # A new session: the server outlives this process and ignores its Ctrl-C.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + start_timeout
    ready = False
    try:
        while time.monotonic() < deadline:
            if cancelled is not None and cancelled():
                raise StartCancelled(spec.name)
            code = proc.poll()
            if code is not None:
                raise LocalServerError(f"the local server for {spec.name} exited during start-up "
                                       f"(code {code}): {_log_tail(log)} (log: {log})")
            state = read_state(path)
            if (state is not None and int(state["pid"]) == proc.pid and state.get("token") == token
                    and answers(state, spec.name, timeout=0.5)):
                if cancelled is not None and cancelled():
                    raise StartCancelled(spec.name)
                ready = True
                return state
            time.sleep(0.05)
        raise LocalServerError(f"the local server for {spec.name} did not answer within "
                               f"{start_timeout:g}s (log: {log})")
    finally:
        if not ready:
            # Given up (timeout, Ctrl-C, a crash of ours): the half-started server goes too. While
            # it loads the model it has no signal handler, so SIGTERM ends it at once.
            _terminate(proc.pid, timeout=2.0)
            _remove(path)
            with contextlib.suppress(OSError):
                storage.append_bytes(log, f"== {time.strftime('%Y-%m-%d %H:%M:%S')} start of "
                                          f"{spec.name} abandoned: the server was stopped\n"
                                     .encode())


def _log_tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    useful = [line for line in text if line.strip()][-lines:]
    return " | ".join(s.strip()[:200] for s in useful) or "no log"


def stop_server(paths: Paths, name: str) -> bool:
    """Stop the server for ``name``; True if one was running (a stale state is just removed)."""
    path = state_path(paths, name)
    with storage.locked(path):
        state = read_state(path)
        if state is None:
            _remove(path)
            return False
        pid = int(state["pid"])
        running = owns(state, path)
        if running:
            _terminate(pid)
        _remove(path)
        return running


def known_servers(paths: Paths) -> list[str]:
    """Model names that have a state file (running or stale)."""
    names = []
    for p in sorted(local_dir(paths).glob("*.json")):
        state = read_state(p)
        if state is not None:
            names.append(str(state.get("name") or p.stem))
    return names


def stop_all(paths: Paths) -> list[str]:
    """Stop every server of this home (:func:`known_servers`); returns those that were running."""
    return [name for name in known_servers(paths) if stop_server(paths, name)]
