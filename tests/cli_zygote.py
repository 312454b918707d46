"""A preloaded ``fscale`` for the tests: one process per test worker imports the CLI once, then
forks a child for each :func:`tests.conftest.run_cli` call.

The suite starts several hundred one-shot ``fscale`` processes; most of each one's CPU is
Python importing typer, rich, aiohttp and fscale itself (``bench/cli_cpu.py``). A forked child
is still a process of its own: its own pid, environment, working directory, stdin/stdout/stderr
(real pipes, passed over a Unix socket), signal dispositions and exit status, and it shuts the
interpreter down the usual way (threads joined, atexit, a last collection, flushing: see
:func:`end_child`) short of tearing the preloaded modules down. Only the imports are shared.

What a fresh process would see differently, and how it is kept out:

- a module that reads an environment variable while it is imported would keep the zygote's
  value. The zygote records every variable read during its imports (``os.environ`` is wrapped
  while it preloads); a call whose environment differs in one of them, or in one that C code
  reads at start-up (``STARTUP_NAMES``: the interpreter's ``PYTHON*``, the locale's, OpenSSL's
  ``SSL_CERT_FILE``), runs as a real subprocess instead;
- a module that starts a thread while imported could not be forked safely: the zygote checks
  there is none and refuses to start otherwise (every call is then a subprocess);
- the string hash seed is the zygote's, shared by its children.

``run_cli``, ``start_cli`` (``run_cli`` in a thread) and ``run_cli_pty`` (the terminal handed
over like a pipe) fork. Tests of the process boundary itself (start-up imports, signals, the
TUI in a real terminal) start real processes (``subprocess``, ``python -c``);
``FSCALE_TEST_FORK=0`` makes every call a subprocess too. ``tests/test_cli_zygote.py`` checks
both give the same results, on pipes and on a terminal.

Protocol (``AF_UNIX``/``SOCK_SEQPACKET``, so each message is one packet): the client sends
``{"argv", "env", "cwd"}`` as JSON with its three pipe ends attached (``SCM_RIGHTS``); the
zygote answers ``{"pid"}`` after the fork and ``{"status"}`` (a ``waitpid`` status) when the
child ends.
"""

from __future__ import annotations

import collections.abc
import gc
import importlib
import importlib.util
import json
import os
import signal
import socket
import sys
import threading
from typing import Any

#: Variables read at start-up by C code, which the recording cannot see: the interpreter's own,
#: the locale's, and OpenSSL's (aiohttp builds its verifying TLS context when it is imported,
#: and OpenSSL reads SSL_CERT_FILE / SSL_CERT_DIR then). A difference means a real process.
STARTUP_PREFIXES = ("PYTHON", "LC_", "OPENSSL_")
STARTUP_NAMES = frozenset({"LANG", "LANGUAGE", "SSL_CERT_FILE", "SSL_CERT_DIR", "TZ"})


class _RecordingEnviron(collections.abc.MutableMapping):  # type: ignore[type-arg]
    """``os.environ`` while the zygote preloads: remembers every name read."""

    def __init__(self, real: Any, read: set[str]) -> None:
        self._real, self._read = real, read

    def __getitem__(self, key: str) -> str:
        self._read.add(key)
        return self._real[key]  # type: ignore[no-any-return]

    def __setitem__(self, key: str, value: str) -> None:
        self._read.add(key)
        self._real[key] = value

    def __delitem__(self, key: str) -> None:
        self._read.add(key)
        del self._real[key]

    def __iter__(self) -> Any:
        self._read.add("*")
        return iter(self._real)

    def __len__(self) -> int:
        return len(self._real)

    def copy(self) -> dict[str, str]:
        self._read.add("*")
        return dict(self._real)


#: Modules the zygote leaves to the child: views that import textual or the MCP SDK, Ray's
#: integration (it imports Ray), and the local model server (a process of its own).
SKIPPED = ("fscale_tui.app", "fscale_tui.screens", "fscale_tui.widgets", "fscale_tui.messages",
           "fscale_tui.cli.tui",
           "fscale_tui.cli.mcp", "fscale_tui.integrations", "fscale_tui.__main__",
           "fscale_tui.engine.providers.local.serve")


def preload(extra: tuple[str, ...] = ()) -> set[str]:
    """Import every module a one-shot command may import, at start-up or while it runs (never
    textual nor the MCP SDK), then the ``extra`` modules (the MCP server's zygote: the SDK and
    ``fscale_tui.cli.mcp``); return the environment variables read meanwhile."""
    read: set[str] = set()
    real = os.environ
    os.environ = _RecordingEnviron(real, read)  # type: ignore[assignment]
    try:
        from fscale_tui import cli

        for name, module in cli.commands().items():
            if module not in ("tui", "mcp"):
                cli.load_command(name)
        import pkgutil

        import fscale_tui

        # every module of the engine and the one-shot commands (what they import at run time:
        # the HTTP stack, msgspec, pydantic through typer), not the TUI's nor Ray's
        for info in pkgutil.walk_packages(fscale_tui.__path__, "fscale_tui."):
            if not info.name.startswith(SKIPPED):
                try:
                    importlib.import_module(info.name)
                except ImportError:  # an extra that is not installed: the child finds out
                    pass
        for module in ("typer._adapters", "rich.progress", "rich.table", "rich.markdown",
                       "rich.syntax", "pydantic", *extra):
            importlib.import_module(module)
    finally:
        os.environ = real  # type: ignore[assignment]
    # typer.rich_utils reads _TYPER_FORCE_DISABLE_TERMINAL when imported, which the command
    # itself sets (NO_COLOR) before it renders help: it must be imported by the child.
    allowed = {module.split(".")[0] for module in extra}
    for forbidden in ("textual", "mcp", "typer.rich_utils"):
        if forbidden in sys.modules and forbidden not in allowed:
            raise RuntimeError(f"the zygote must not import {forbidden}")
    return read


def incompatible(env: dict[str, str], read: set[str]) -> list[str]:
    """The variables that make a call differ from what this process imported with: those read
    while preloading, and those C code reads at start-up. ``PYTHONPATH`` aside (the child puts
    its entries on ``sys.path``, as start-up would), and ``PYTHONBREAKPOINT`` (``breakpoint()``
    reads it when called; ``ray.init`` sets it in the test worker for the rest of the run)."""
    if "*" in read:
        return ["*"]
    names = read | {name for name in (*env, *os.environ)
                    if name.startswith(STARTUP_PREFIXES) or name in STARTUP_NAMES}
    names.discard("PYTHONPATH")
    names.discard("PYTHONBREAKPOINT")
    return sorted(name for name in names if env.get(name) != os.environ.get(name))


def serve(path: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Serve forks on the socket at ``path``; returns only in a forked child (its job)."""
    read = preload(extra)
    if threading.active_count() != 1:
        raise RuntimeError("a module started a thread while imported: cannot fork safely")
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    gc.freeze()  # the preloaded objects: shared pages the children's collections never touch
    _own_path[:] = [entry for entry in sys.path[1:]
                    if entry not in os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    sys.stdout.write(json.dumps({"ready": True, "env_read": sorted(read)}) + "\n")
    sys.stdout.flush()
    waiting: dict[int, socket.socket] = {}
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    selector.register(0, selectors.EVENT_READ)  # the test worker holds the other end
    while True:
        for key, _ in selector.select():
            if key.fileobj == 0:
                if not os.read(0, 4096):  # the worker is gone: so is the zygote
                    os.unlink(path)
                    raise SystemExit(0)
                continue
            if key.fileobj is wake_r:
                try:
                    wake_r.recv(4096)
                except BlockingIOError:
                    pass
                _reap(waiting)
                continue
            conn, _ = listener.accept()
            try:
                message, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
            except OSError:
                conn.close()
                continue
            if not message or len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                conn.close()
                continue
            job = json.loads(message)
            differ = incompatible(job["env"], read)
            if differ:
                for fd in fds:
                    os.close(fd)
                _send(conn, {"refused": differ})
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                selector.close()
                for sock in (listener, wake_r, wake_w, *waiting.values()):
                    sock.close()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for target, fd in enumerate(fds):
                    os.dup2(fd, target)
                    os.close(fd)
                conn.close()
                return job
            for fd in fds:
                os.close(fd)
            _send(conn, {"pid": pid})
            waiting[pid] = conn
        _reap(waiting)


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    try:
        conn.send(json.dumps(message).encode())
    except OSError:  # the caller is gone (a test that timed out): nobody to tell
        pass


def _reap(waiting: dict[int, socket.socket]) -> None:
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            _send(conn, {"status": status})
            conn.close()


#: The zygote's sys.path without its script folder and PYTHONPATH entries (set in serve()).
_own_path: list[str] = []


def run_child(job: dict[str, Any]) -> None:
    """In the forked child: become ``python -m fscale_tui ARGS`` and exit the usual way."""
    import runpy

    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    extra = [entry for entry in job["env"].get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[:] = [job["cwd"], *extra, *_own_path]
    spec = importlib.util.find_spec("fscale_tui.__main__")
    assert spec is not None and spec.origin is not None
    sys.argv = [spec.origin, *job["argv"]]
    runpy.run_module("fscale_tui", run_name="__main__", alter_sys=True)


def end_child(job: dict[str, Any]) -> None:
    """Run the command in the forked child and end it as ``Py_FinalizeEx`` would: the exit
    status of its ``SystemExit``, non-daemon threads joined, atexit handlers (logging, the
    background writers' drain), the unreachable objects finalized (their warnings included),
    stdout and stderr flushed; then ``os._exit``.

    What is skipped is the teardown of the preloaded modules: it only drops references to the
    objects every child shares with the zygote, and writing their reference counts copies each
    shared page (half of a fork's cost: ``python bench/suite_fork.py``). An exception other than
    ``SystemExit``, or a flush that fails (a reader gone), takes the interpreter's own way out,
    with its message and status."""
    import atexit

    try:
        run_child(job)
    except SystemExit as exc:
        code = exc.code
    else:
        code = None
    if code is not None and not isinstance(code, int):
        raise SystemExit(code)  # printed to stderr, status 1: Python's own way
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    gc.collect()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:
        raise SystemExit(code) from None  # the interpreter reports it (status 120)
    os._exit((code or 0) & 0xFF)


#: An ``fscale`` executable for shell examples: it hands its own stdin/stdout/stderr to the
#: zygote and exits as the forked command does; refused (or with no zygote), it becomes
#: ``python -m fscale_tui`` itself.
SHIM = """#!{python} -S
import json, os, signal, socket, sys

args, path = sys.argv[1:], os.environ.get("FSCALE_TEST_ZYGOTE", "")
if path:
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(path)
        job = {{"argv": args, "env": dict(os.environ), "cwd": os.getcwd()}}
        socket.send_fds(sock, [json.dumps(job).encode()], [0, 1, 2])
        reply = json.loads(sock.recv(1 << 16))
    except OSError:
        reply = {{}}
    if "pid" in reply:
        code = os.waitstatus_to_exitcode(json.loads(sock.recv(1 << 16))["status"])
        if code < 0:  # killed by a signal: so is this process
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        sys.exit(code)
os.execv({python!r}, [{python!r}, "-m", "fscale_tui", *args])
"""


def write_shim(path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(SHIM.format(python=sys.executable))
    os.chmod(path, 0o755)


class ForkedProcess:
    """A forked command, as much of :class:`subprocess.Popen` as the tests use: ``pid``,
    ``poll()``, ``wait(timeout)``, ``kill()`` and ``returncode`` (the zygote reports the
    ``waitpid`` status on the call's socket)."""

    def __init__(self, pid: int, sock: socket.socket, args: list[str]) -> None:
        self.pid, self.sock, self.args = pid, sock, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self._receive(block=False) if self.returncode is None else self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import subprocess

        if self.returncode is None and self._receive(block=True, timeout=timeout) is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)

    def _receive(self, *, block: bool, timeout: float | None = None) -> int | None:
        """The status once the zygote has sent it (``None`` until then)."""
        self.sock.settimeout(timeout if block else 0.0)
        try:
            message = self.sock.recv(1 << 16)
        except (BlockingIOError, TimeoutError):
            self.sock.settimeout(None)
            return None
        self.sock.close()
        self.returncode = os.waitstatus_to_exitcode(int(json.loads(message)["status"]))
        return self.returncode


class Zygote:
    """The test side: starts the zygote and runs calls through it (``None`` when a call must be
    a real subprocess instead)."""

    def __init__(self, repo: str, env: dict[str, str] | None = None,
                 preload: tuple[str, ...] = ()) -> None:
        import subprocess
        import tempfile

        self.folder = tempfile.mkdtemp(prefix="fscale-zygote-")
        self.path = os.path.join(self.folder, "fork.sock")
        self.env = dict(os.environ if env is None else env)
        self.log = open(os.path.join(self.folder, "zygote.log"), "w+b")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.cli_zygote", self.path, *preload], cwd=repo, env=self.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError("the zygote did not start: " + self.log.read().decode()[-2000:])
        self.env_read: set[str] = set(json.loads(line)["env_read"])
        self.refused = 0  # calls answered "run it as a real process"

    def start(self, argv: list[str], *, env: dict[str, str], cwd: str,
              fds: tuple[int, int, int]) -> ForkedProcess | None:
        """Fork ``python -m fscale_tui ARGV`` with ``fds`` as its stdin, stdout and stderr (the
        caller keeps its copies), or ``None`` when it must be a real process (the environment
        differs in what the preload read)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(self.path)
            socket.send_fds(sock, [json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode()],
                            list(fds))
            reply = json.loads(sock.recv(1 << 16))
        except BaseException:
            sock.close()
            raise
        if "pid" not in reply:
            sock.close()
            self.refused += 1
            return None
        return ForkedProcess(int(reply["pid"]), sock,
                             [sys.executable, "-m", "fscale_tui", *argv])

    def run(self, argv: list[str | bytes], *, env: dict[str, str], cwd: str,
            input: str | bytes | None, timeout: float, text: bool = True) -> Any:
        """``subprocess.run(..., capture_output=True, text=text)``'s result, from a fork. An
        argument given as bytes reaches the child as a fresh interpreter decodes it
        (``os.fsdecode``: undecodable bytes as surrogates)."""
        import locale
        import selectors
        import subprocess
        import time

        args = [sys.executable, "-m", "fscale_tui", *argv]
        argv = [os.fsdecode(a) for a in argv]
        deadline = time.monotonic() + timeout
        encoding = locale.getpreferredencoding(False)
        if input is None:
            in_r, in_w = os.open(os.devnull, os.O_RDONLY), None
        else:
            in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            child = self.start(argv, env=env, cwd=cwd, fds=(in_r, out_w, err_w))
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        if child is None:  # refused: the environment differs in what the preload read
            for fd in (out_r, err_r, in_w):
                if fd is not None:
                    os.close(fd)
            return None
        chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
        pending = memoryview(input if isinstance(input, bytes) else (input or "").encode(encoding))
        selector = selectors.DefaultSelector()
        selector.register(out_r, selectors.EVENT_READ)
        selector.register(err_r, selectors.EVENT_READ)
        if in_w is not None:
            if pending:
                os.set_blocking(in_w, False)
                selector.register(in_w, selectors.EVENT_WRITE)
            else:
                os.close(in_w)
                in_w = None
        timed_out = False
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in selector.select(left):
                fd = key.fd
                if fd == in_w:
                    try:
                        pending = pending[os.write(fd, pending[:1 << 16]):]
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(fd)
                        os.close(fd)
                        in_w = None
                    continue
                data = os.read(fd, 1 << 16)
                if data:
                    chunks[fd].append(data)
                else:
                    selector.unregister(fd)
        selector.close()
        for fd in (out_r, err_r, in_w):
            if fd is not None:
                os.close(fd)
        if timed_out:
            child.kill()
        try:
            code = child.wait(None if timed_out else max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
            timed_out = True

        def output(fd: int) -> str | bytes:
            raw = b"".join(chunks[fd])
            if not text:
                return raw
            decoded = raw.decode(encoding)
            return decoded.replace("\r\n", "\n").replace("\r", "\n")  # as text=True does

        if timed_out:
            raise subprocess.TimeoutExpired(args, timeout, output(out_r), output(err_r))
        return subprocess.CompletedProcess(args, code, output(out_r), output(err_r))

    def close(self) -> None:
        import shutil

        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.log):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.folder, ignore_errors=True)


if __name__ == "__main__":
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    end_child(serve(sys.argv[1], tuple(sys.argv[2:])))
