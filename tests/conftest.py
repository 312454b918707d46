"""Shared fixtures: a temporary FSCALE_HOME for every test and a real loopback OpenAI server."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.cli_zygote import Zygote
from tests.oai_server import Behaviour, StubOpenAIServer

REPO = Path(__file__).resolve().parent.parent


def local_models_installed() -> bool:
    """The [local] extra: the llama.cpp runtime and the pinned weight packages."""
    from fscale_tui.engine.providers.local import provider as lp

    lp.runtime_installed.cache_clear()
    lp.builtin_weights_installed.cache_clear()
    return lp.runtime_installed() and lp.builtin_weights_installed()


# What the whole suite needs beyond the [dev] extra is optional: a test that needs an extra or a
# system binary that is not installed is skipped, saying which (README "Install and test").
needs_local_models = pytest.mark.skipif(
    not local_models_installed(),
    reason="needs the embedded local models: the [local] extra (pip install -e '.[local]')")
needs_redis_client = pytest.mark.skipif(
    importlib.util.find_spec("redis") is None,
    reason="needs the redis client: the [fleet] extra (pip install -e '.[fleet]')")
needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="needs redis-server (apt-get install redis-server)")
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="needs matplotlib: the [plot] extra (pip install -e '.[plot]')")
needs_jq = pytest.mark.skipif(shutil.which("jq") is None,
                              reason="needs jq (apt-get install jq)")
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="needs tmux (apt-get install tmux)")

# The suite runs on three workers (pyproject: `-n 3 --dist loadgroup`). Tests that must not run
# beside each other carry `pytest.mark.xdist_group("serial")`: the group runs on one worker, one
# test after another (it is the biggest group, so it starts first and never ends the run alone):
#   - real llama.cpp servers (~1 GB and both cores each), which would slow everything beside
#     them;
#   - tests that assert on wall-clock time or on what fits in a time window: the event loop's
#     lag, rate-limit windows, early decisions, runs of a fixed length.
# Two module fixtures make groups of their own, each on one worker, beside the serial group
# (which was the run's longest path with them: 4 min 59 s of a 5 min 16 s run):
#   - `xdist_group("ray")`: the local Ray cluster (tests/test_ray.py);
#   - `xdist_group("readme")`: the README's examples, whose blocks run top to bottom.
# Every test still has its own FSCALE_HOME (tmp_path is per worker), loopback server (one per
# worker process, on a port of its own) and environment.

# A suite started in the background of a non-interactive shell (`bash .ci/run &`) inherits
# SIGINT ignored, and so would every fscale it starts: the Ctrl-C tests would see a command
# that cannot be interrupted. A handled signal is reset to its default in a child process.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Byte-compile the package once, before any test starts an ``fscale`` process.

    The suite starts about 700 of them. With ``PYTHONDONTWRITEBYTECODE`` set (it is on some CI
    machines) or a fresh checkout, each would compile fscale's sources again (about 0.1 s of CPU
    per process, a tenth of the suite's work). The controller does it, before the workers start.
    """
    if not hasattr(session.config, "workerinput"):
        import compileall

        for folder in ("fscale_tui", "tests"):
            compileall.compile_dir(REPO / folder, quiet=1, workers=1)


#: Environment variables that would make a test depend on the developer's machine.
HERMETIC_UNSET = ["NVIDIA_API_KEY", "GITHUB_TOKEN", "FSCALE_K", "FSCALE_PANEL", "FSCALE_TIE_BREAK",
                  "FSCALE_DEBUG", "NO_COLOR", "FSCALE_REDIS_URL", "RAY_ADDRESS"]


@pytest.fixture(autouse=True)
def fscale_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own FSCALE_HOME; no test reads or writes the real user dirs."""
    home = tmp_path / "fscale-home"
    home.mkdir()
    monkeypatch.setenv("FSCALE_HOME", str(home))
    for name in HERMETIC_UNSET:
        monkeypatch.delenv(name, raising=False)
    # Fast retries keep failure tests quick; the backoff shape is tested separately.
    monkeypatch.setenv("FSCALE_RETRY_BASE", "0.01")
    # Shadow challengers add a request per call; tests that count requests expect none.
    # Challenger tests turn it back on explicitly.
    monkeypatch.setenv("FSCALE_CHALLENGER", "0")
    # The embedded local models (the [local] extra) would otherwise become the default panel
    # when no key is set; tests of local models (tests/test_local*.py) turn them back on.
    monkeypatch.setenv("FSCALE_LOCAL", "off")
    return home


@pytest.fixture(scope="session")
def _server_session() -> Iterator[StubOpenAIServer]:
    with StubOpenAIServer() as srv:
        yield srv


@pytest.fixture
def server(_server_session: StubOpenAIServer) -> Iterator[StubOpenAIServer]:
    """The loopback server, reset to a clean script for each test."""
    _server_session.reset()
    yield _server_session
    _server_session.reset()


#: alias -> (provider model id, tier, family)
STUB_MODELS = {
    "fast-a": ("vendor-a/fast", "fast", "a"),
    "fast-b": ("vendor-b/fast", "fast", "b"),
    "fast-c": ("vendor-c/fast", "fast", "c"),
    "fast-d": ("vendor-d/fast", "fast", "d"),
    "fast-a2": ("vendor-a/fast-2", "fast", "a"),
    "slow-c": ("vendor-c/slow", "slow", "c"),
    "think-e": ("vendor-e/think", "thinking", "e"),
}


def write_config(home: Path, server: StubOpenAIServer, *, rpm: float | None = None,
                 panels: dict[str, list[str]] | None = None, models: dict | None = None,
                 extra: dict | None = None, api_key_env: str | None = None) -> Path:
    provider: dict = {"base_url": server.base_url}
    if rpm is not None:
        provider["rpm"] = rpm
    if api_key_env:
        provider["api_key_env"] = api_key_env
    doc: dict = {
        "providers": {"stub": provider},
        "models": {alias: {"provider": "stub", "id": mid, "tier": tier, "family": fam, "cost": 0.1}
                   for alias, (mid, tier, fam) in (models or STUB_MODELS).items()},
        "panels": panels or {"default": ["fast-a", "fast-b", "slow-c"]},
    }
    for key, value in (extra or {}).items():
        doc[key] = value
    path = home / "config.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


@pytest.fixture
def stub_config(fscale_home: Path, server: StubOpenAIServer) -> Path:
    return write_config(fscale_home, server)


def mid(alias: str) -> str:
    """The provider model id of a stub alias."""
    return STUB_MODELS[alias][0]


_zygote: dict[str, Any] = {}
#: The worker's environment before any test changed it: the zygote starts with this one.
_START_ENV = dict(os.environ)
_zygote_lock = threading.Lock()


#: What each kind of zygote preloads beyond the one-shot commands: ``fscale mcp``'s children
#: need the MCP SDK (about a second of CPU to import, in each of test_mcp's servers), which
#: the one-shot commands' zygote must never hold.
ZYGOTE_PRELOAD: dict[str, tuple[str, ...]] = {
    "cli": (),
    "mcp": ("fscale_tui.cli.mcp", "mcp.server.mcpserver", "mcp.server.mcpserver.exceptions",
            "mcp.server.stdio", "mcp.shared.exceptions", "mcp.types"),
}


def the_zygote(kind: str = "cli") -> Zygote | None:
    """This worker's preloaded fscale of ``kind`` (tests/cli_zygote.py; ``ZYGOTE_PRELOAD``),
    started on first use; ``None`` when ``FSCALE_TEST_FORK=0`` or when it could not start
    (every call is then a subprocess)."""
    with _zygote_lock:
        if kind not in _zygote:
            _zygote[kind] = None
            if os.environ.get("FSCALE_TEST_FORK", "1") != "0":
                try:
                    _zygote[kind] = Zygote(str(REPO), env=_START_ENV,
                                           preload=ZYGOTE_PRELOAD[kind])
                except (OSError, RuntimeError, ValueError) as exc:
                    sys.stderr.write(f"tests: no preloaded fscale, subprocesses instead ({exc})\n")
                else:
                    atexit.register(_zygote[kind].close)
        return _zygote[kind]


def run_cli(*args: str | bytes, input: str | bytes | None = None, env: dict | None = None,
            timeout: float = 60, text: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m fscale_tui ARGS`` with the test's environment, in a process of its own:
    forked from this worker's preloaded fscale (tests/cli_zygote.py: same pipes, exit status
    and shutdown, without importing everything again) or, when the environment differs in
    what the preload read, started as a subprocess. ``text=False``: bytes in and out (an
    argument may be bytes too, e.g. one that is not UTF-8)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    zygote = the_zygote()
    if zygote is not None:
        done = zygote.run(list(args), env=full_env, cwd=str(REPO), input=input, timeout=timeout,
                          text=text)
        if done is not None:
            return done  # type: ignore[no-any-return]
    return subprocess.run([sys.executable, "-m", "fscale_tui", *args], input=input,
                          capture_output=True, text=text, env=full_env, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL, cwd=REPO)


class BackgroundCli:
    """A ``python -m fscale_tui`` running beside the test (:func:`run_cli` in a thread: a fork
    of the preloaded fscale, or a subprocess), with the part of :class:`subprocess.Popen` the
    tests use: ``communicate(timeout)``, ``wait(timeout)`` and ``returncode``."""

    def __init__(self, args: tuple[str, ...], env: dict | None, timeout: float = 600) -> None:
        self.args = args
        self._done: subprocess.CompletedProcess | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(env, timeout), daemon=True)
        self._thread.start()

    def _run(self, env: dict | None, timeout: float) -> None:
        try:
            self._done = run_cli(*self.args, env=env, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 (communicate() raises it in the test)
            self._error = exc

    @property
    def returncode(self) -> int | None:
        return None if self._done is None else self._done.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise subprocess.TimeoutExpired(["fscale", *self.args], timeout or 0)
        if self._error is not None:
            raise self._error
        assert self._done is not None
        return self._done.stdout, self._done.stderr

    def wait(self, timeout: float | None = None) -> int:
        self.communicate(timeout)
        assert self._done is not None
        return self._done.returncode


def start_cli(home: Path | str | None, *args: str, env: dict | None = None) -> BackgroundCli:
    """Start ``python -m fscale_tui`` in the background, with its own FSCALE_HOME (a "host")
    unless ``home`` is None (the test's)."""
    full = dict(env or {})
    if home is not None:
        full["FSCALE_HOME"] = str(home)
    return BackgroundCli(args, full)


__all__ = ["Behaviour", "StubOpenAIServer", "write_config", "mid", "run_cli", "run_cli_pty", "start_cli",
           "STUB_MODELS", "earn_shadow_budget"]


def earn_shadow_budget(decision_calls: int = 1000) -> None:
    """Record past decision calls in this home's spend ledger (the real state file), so the
    shadow budget allows shadows from the first call (a fresh home has earned none)."""
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.wire.coordination import make_coordination

    coordination = make_coordination(load_settings())
    try:
        coordination.spend.record([("earlier-calls", decision_calls, 0)])
    finally:
        coordination.close()


def run_cli_pty(*args: str, stdout_path: Path | None, env: dict | None = None,
                timeout: float = 60, columns: int = 100, fork: bool = True) -> tuple[int, str, str]:
    """Run ``python -m fscale_tui`` with stderr on a real pseudo-terminal and stdout redirected
    to ``stdout_path`` (``fscale ... > out.jsonl`` typed in a terminal); with
    ``stdout_path=None`` stdout is the terminal too. Forked from the preloaded fscale like
    :func:`run_cli` (the terminal's slave end handed over as the child's stderr), or a
    subprocess when the environment differs in what the preload read (or ``fork`` is false).

    Returns (exit code, what landed in the stdout file, what the terminal showed).
    """
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    full_env = dict(os.environ)
    full_env.setdefault("TERM", "xterm-256color")
    full_env.update(env or {})
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    zygote = the_zygote() if fork else None
    try:
        with open(stdout_path or os.devnull, "wb") as out:
            proc: Any = None
            if zygote is not None:  # forked with the terminal as its stderr (and stdout)
                with open(os.devnull, "rb") as devnull:
                    proc = zygote.start(list(args), env=full_env, cwd=str(REPO),
                                        fds=(devnull.fileno(),
                                             out.fileno() if stdout_path else slave, slave))
            if proc is None:
                proc = subprocess.Popen([sys.executable, "-m", "fscale_tui", *args],
                                        stdin=subprocess.DEVNULL,
                                        stdout=out if stdout_path else slave, stderr=slave,
                                        env=full_env, cwd=REPO)
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"fscale {' '.join(args)} did not finish in {timeout}s")
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal is gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                chunks.append(read_rest(master, 0))  # what is left, then stop
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
    stdout = Path(stdout_path).read_text() if stdout_path else ""
    return code, stdout, b"".join(chunks).decode("utf-8", "replace")


def read_rest(master: int, wait: float = 0.1) -> bytes:
    """What a pseudo-terminal still holds once its process is done writing: read until it is
    empty for ``wait`` seconds or closed (EIO when every writer is gone)."""
    import select

    seen = b""
    while select.select([master], [], [], wait)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    return seen


@pytest.fixture(scope="session")
def joined_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder with the built-in local weights joined and verified once for the whole
    run (1.6 GB, about 14 s), shared by the xdist workers: the join holds a cross-process lock,
    so one worker joins while the others wait, then find the verified files."""
    from fscale_tui.engine.providers.local import weights

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    cache = root / "local-weights-cache"
    for w in weights.BUILTIN_WEIGHTS.values():
        weights.ensure_builtin(w, cache)
    return cache


def link_joined_weights(joined: Path, cache_dir: Path) -> None:
    """Give a home's cache the run's joined weights, as a first call would have left them:
    hard links (the same files, so the same size and mtime: verified as they are)."""
    from fscale_tui.engine.base import storage

    target = storage.ensure_dir(cache_dir / "local")
    for source in (joined / "local").iterdir():
        if source.suffix == ".lock":
            continue
        try:
            os.link(source, target / source.name)
        except OSError:  # another file system
            (target / source.name).symlink_to(source)


@pytest.fixture
def small_local_servers(fscale_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """FSCALE_HOME for tests with the real local models: small servers (512-token context, one
    slot, idle exit after 2 minutes as a safety net); every server is stopped after the test."""
    from fscale_tui.engine.base.paths import Paths
    from fscale_tui.engine.providers.local import servers

    monkeypatch.delenv("FSCALE_LOCAL", raising=False)
    monkeypatch.setenv("FSCALE_LOCAL_N_CTX", "512")
    monkeypatch.setenv("FSCALE_LOCAL_PARALLEL", "1")
    monkeypatch.setenv("FSCALE_LOCAL_IDLE_TIMEOUT", "120")
    yield fscale_home
    servers.stop_all(Paths.resolve())


@pytest.fixture
def local_home(small_local_servers: Path, joined_weights: Path) -> Path:
    """``small_local_servers`` with the weights already joined (a home after its first local
    call): tests of what comes after the join do not each join 1.6 GB again. Tests of the
    join itself (progress, Ctrl-C) use ``small_local_servers``, whose cache is empty."""
    link_joined_weights(joined_weights, small_local_servers / "cache")
    return small_local_servers
