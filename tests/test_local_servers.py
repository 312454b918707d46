"""Real local models: server start, reuse, stop, stale state, idle exit, and CLI calls.

These run the real 0.5B model (and, once, the default local panel with the 1.5B) through
xllamacpp, so they need the [local] extra; they are skipped without it (saying so). To stay
quick they share one joined copy of the weights per session and use a small context.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.providers.local import provider as lp
from fscale_tui.engine.providers.local import servers, weights
from fscale_tui.engine.base.paths import Paths
from tests.conftest import link_joined_weights, needs_local_models, read_rest, run_cli

# Real llama.cpp servers: one after another on one xdist worker (tests/conftest.py).
pytestmark = [pytest.mark.slow, needs_local_models, pytest.mark.xdist_group("serial")]

ID_05 = "qwen2.5-coder-0.5b-instruct-q4_k_m"
ID_15 = "qwen2.5-coder-1.5b-instruct-q4_k_m"



@pytest.fixture
def home(local_home: Path):
    """FSCALE_HOME with the run's one joined copy of the weights (tests/conftest.py); small
    servers; every server stopped after."""
    return local_home


@pytest.fixture(scope="module")
def _warm_home(tmp_path_factory: pytest.TempPathFactory, joined_weights: Path):
    """One home for the module's tests that only ask the real models a question: its servers
    start on the first of them and stay up for the others (a cold start is seconds of both
    cores); stopped when the module ends. Tests of starting, reusing and stopping servers keep
    a home of their own (``home``)."""
    warm = tmp_path_factory.mktemp("warm-local-home")
    link_joined_weights(joined_weights, warm / "cache")
    yield warm
    servers.stop_all(Paths.resolve({"FSCALE_HOME": str(warm)}))


@pytest.fixture
def warm_home(_warm_home: Path, small_local_servers: Path, monkeypatch: pytest.MonkeyPatch):
    """``home``'s settings (small servers), on the module's shared home (``_warm_home``)."""
    monkeypatch.setenv("FSCALE_HOME", str(_warm_home))
    yield _warm_home
    # small_local_servers stops the servers of the test's own home, not the shared ones.
    monkeypatch.setenv("FSCALE_HOME", str(small_local_servers))


def _spec(**over):
    s = load_settings()
    model = s.models["local-qwen-0.5b"]
    spec = lp.server_spec(model, s.providers["local"], s)
    return servers.ServerSpec(**{**spec.__dict__, **over})


def test_start_reuse_and_stop_a_real_server(home):
    paths = Paths.resolve()
    spec = _spec()
    t0 = time.monotonic()
    first = servers.ensure_server(paths, spec)
    cold = time.monotonic() - t0
    assert first["started"] and servers.owns(first, servers.state_path(paths, ID_05))
    assert first["base_url"].startswith("http://127.0.0.1:")
    t0 = time.monotonic()
    again = servers.ensure_server(paths, spec)
    warm = time.monotonic() - t0
    assert not again["started"] and again["pid"] == first["pid"] and again["port"] == first["port"]
    assert warm < 1.0 < cold or warm < cold / 2
    info = servers.status(paths, ID_05)
    assert info["status"] == "running" and info["rss_bytes"] > 100 * 2**20
    assert servers.stop_server(paths, ID_05)
    assert not servers.pid_running(first["pid"])
    assert not servers.state_path(paths, ID_05).exists()
    assert servers.status(paths, ID_05)["status"] == "stopped"
    assert "starting" in servers.log_path(paths, ID_05).read_text()


def test_concurrent_callers_start_one_server(home):
    paths = Paths.resolve()
    spec = _spec()
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(servers.ensure_server(paths, spec)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r["pid"] for r in results}) == 1
    assert sum(bool(r["started"]) for r in results) == 1


def test_a_killed_server_is_replaced(home):
    paths = Paths.resolve()
    spec = _spec()
    first = servers.ensure_server(paths, spec)
    os.kill(first["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while servers.pid_running(first["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert servers.status(paths, ID_05)["status"] == "stale"
    second = servers.ensure_server(paths, spec)
    assert second["started"] and second["pid"] != first["pid"]


def test_an_idle_server_stops_by_itself(home):
    paths = Paths.resolve()
    state = servers.ensure_server(paths, _spec(idle_timeout=1.5))
    deadline = time.monotonic() + 20
    while servers.pid_running(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not servers.pid_running(state["pid"])
    assert not servers.state_path(paths, ID_05).exists()
    assert "idle for 1.5s" in servers.log_path(paths, ID_05).read_text()


def test_label_constrained_answers_from_the_real_model(warm_home):
    from fscale_tui.engine.session import Engine
    from fscale_tui.engine.base.calls import ScaleRequest

    async def go():
        async with Engine() as engine:
            return await engine.scale(ScaleRequest(
                question="Is the sentiment of this movie review positive or negative?",
                context="Review: A warm, funny and beautifully acted film. I loved it.",
                answers=("positive", "negative"), models=("local-qwen-0.5b",)))

    import asyncio

    result = asyncio.run(go())
    assert result.answer == "positive"
    assert result.votes[0].raw == "Answer: positive"  # the grammar allows nothing else


@pytest.mark.parametrize("member", lp.LOCAL_PANEL)
def test_each_panel_member_states_a_fact_then_its_reply_parses_to_a_label(warm_home, member):
    """Every member of the local panel writes a short reason before the constrained
    'Answer: <label>' (one line for "brief", one sentence for "sentence"), opening with its
    lead-in ("Fact: " or its ``reason_lead``); the engine's parser reads the label from the
    last line."""
    import asyncio
    import re

    from fscale_tui.engine.session import Engine
    from fscale_tui.engine.base.calls import ScaleRequest

    options = load_settings().models[member].options
    mode, lead = options["reasoning"], options.get("reason_lead") or lp.REASON_LEAD

    async def go():
        async with Engine() as engine:
            return await engine.scale(ScaleRequest(
                question="Is 10 greater than 3?", answers=("YES", "NO"), models=(member,)))

    result = asyncio.run(go())
    raw = result.votes[0].raw
    m = re.fullmatch(re.escape(lead) + rf"([^\n]{{1,{lp.REASON_CHARS}}})\nAnswer: (YES|NO)",
                     raw or "")
    assert m, raw
    assert m.group(1)[0] not in " YNyn" and m.group(1).endswith(".")
    if mode == "sentence":
        assert m.group(1).count(".") == 1, raw
    assert result.votes[0].status == "answered" and result.answer == m.group(2)


@pytest.mark.parametrize("strategy", ["weighted", "beam"])
def test_verifier_scores_come_back_from_the_grammar_constrained_local_model(warm_home, strategy):
    """The verifier's reply is forced into 'Answer: <1..10>' by the label grammar: the scores
    are read from it, so weighted and step search decide with real scores (was: every score
    null, exit 3)."""
    from fscale_tui.engine.base.calls import GenerateRequest
    from fscale_tui.engine.session import Engine

    async def go():
        async with Engine() as engine:
            return await engine.generate(GenerateRequest(
                "What is 2 + 3? Answer with the number.", strategy=strategy, k=2,
                models=("local-qwen-0.5b",), judge_models=("local-qwen-0.5b",),
                max_tokens=24, max_steps=2, width=1))

    import asyncio

    result = asyncio.run(go())
    scored = ([v.score for v in result.judge_votes if v.error is None] if strategy == "weighted"
              else [c.score for c in result.all_outputs if c.ok])  # beam scores its paths
    assert scored and all(s is not None and 0.0 <= s <= 1.0 for s in scored)
    assert result.status == "decided"


def test_cli_scale_uses_two_local_models_then_reuses_their_servers(home):
    """Acceptance: no key, default panel -> a decision from >= 2 distinct local models; the
    second call finds the servers running."""
    env = {"FSCALE_LOCAL_IDLE_TIMEOUT": "120"}
    q = ["scale", "Is the sentiment of this review positive or negative?",
         "--context", "Review: dull, lifeless and far too long; I walked out.",
         "-a", "positive,negative", "--json"]
    first = run_cli(*q, env=env, timeout=240)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["answer"] == "negative"
    answered = [v["model"] for v in out["votes"] if v["status"] == "answered"]
    settings = load_settings()
    assert len({settings.models[a].id for a in answered}) >= 2 or len(answered) >= 2
    assert len({settings.models[v["model"]].id for v in out["votes"]}) == 2
    status = json.loads(run_cli("local", "status", "--json").stdout)
    pids = {r["server"]: r["pid"] for r in status if r["status"] == "running"}
    assert set(pids) == {ID_05, ID_15}
    t0 = time.monotonic()
    second = run_cli(*q, env=env, timeout=120)
    warm = time.monotonic() - t0
    assert second.returncode == 0 and json.loads(second.stdout)["answer"] == "negative"
    again = json.loads(run_cli("local", "status", "--json").stdout)
    assert {r["server"]: r["pid"] for r in again if r["status"] == "running"} == pids
    assert warm < 60
    stop = run_cli("local", "stop")
    assert stop.returncode == 0 and set(stop.stdout.split()) == {ID_05, ID_15}
    assert not any(servers.pid_running(p) for p in pids.values())


def test_weights_joined_in_the_cache_match_the_pinned_sha256(home):
    for w in weights.BUILTIN_WEIGHTS.values():
        path = weights.builtin_path(w, Paths.resolve().cache_dir)
        if path.exists():
            assert weights.is_verified(path, w.sha256) and path.stat().st_size == w.size


def test_a_server_that_dies_during_start_up_reports_its_log(fscale_home, tmp_path):
    paths = Paths.resolve()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    spec = servers.ServerSpec(name="bad-model", gguf=str(bad), n_ctx=256, parallel=1)
    with pytest.raises(servers.LocalServerError, match="exited during start-up"):
        servers.ensure_server(paths, spec, start_timeout=60)
    assert not servers.state_path(paths, "bad-model").exists()
    assert servers.log_path(paths, "bad-model").exists()


def test_first_run_on_a_terminal_shows_joining_and_server_start(fscale_home, tmp_path, monkeypatch):
    """Issue 12: the first call joins the weights and starts a server (seconds of silence
    before); on a terminal it shows a byte bar and the server start, --json or not, while
    stdout (a file) gets exactly the JSON. The second call has nothing to prepare."""
    from tests.conftest import run_cli_pty

    monkeypatch.delenv("FSCALE_LOCAL", raising=False)  # a fresh cache: nothing joined yet
    env = {"FSCALE_LOCAL_N_CTX": "512", "FSCALE_LOCAL_PARALLEL": "1",
           "FSCALE_LOCAL_IDLE_TIMEOUT": "120"}
    q = ["scale", "Is the sentiment of this review positive or negative?",
         "--context", "Review: dull, lifeless and far too long; I walked out.",
         "-a", "positive,negative", "-m", "local-qwen-0.5b", "--json"]
    try:
        code, stdout, stderr = run_cli_pty(*q, stdout_path=tmp_path / "first.json", env=env,
                                           timeout=240)
        assert code == 0, stderr
        assert json.loads(stdout)["answer"] == "negative"
        assert "joining Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)" in stderr  # the byte bar
        assert "MB/491 MB" in stderr
        assert "joined Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) (491 MB)" in stderr
        assert f"starting the local server for {ID_05}" in stderr
        assert f"local server for {ID_05} ready in" in stderr
        assert "local-qwen-0.5b" in stderr and "negative" in stderr  # the vote as it arrived
        code, stdout, stderr = run_cli_pty(*q, stdout_path=tmp_path / "second.json", env=env,
                                           timeout=120)
        assert code == 0 and json.loads(stdout)["answer"] == "negative"
        assert "joining" not in stderr and "starting the local server" not in stderr
    finally:
        servers.stop_all(Paths.resolve())


# -- Ctrl-C on a cold start (issue 22) ---------------------------------------------------------
def _serve_processes(home: Path) -> list[int]:
    """Pids of local model servers of this FSCALE_HOME (their command line names its state)."""
    marker = str(home / "state" / "local")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if servers.SERVE_MODULE.encode() in argv and any(a.startswith(marker.encode()) for a in argv):
            if servers.pid_running(int(entry.name)):
                pids.append(int(entry.name))
    return pids


def interrupt_cli(*args: str, when: str, env: dict[str, str], timeout: float = 120) -> tuple[int, str, float]:
    """Run ``fscale ARGS`` with stderr on a real pseudo-terminal; the moment the terminal shows
    ``when``, send SIGINT (what Ctrl-C does). -> (exit code, what the terminal showed,
    seconds from the signal to the exit)."""
    import fcntl
    import pty
    import select
    import struct
    import subprocess
    import sys
    import termios

    from tests.conftest import REPO

    full = {**os.environ, "TERM": "xterm-256color", **env}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "fscale_tui", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=full, cwd=REPO)
    os.close(slave)
    seen, sent, exited = b"", None, None
    deadline = time.monotonic() + timeout
    try:
        while exited is None:
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"fscale {' '.join(args)} did not exit in {timeout}s; "
                                   f"terminal: {seen.decode(errors='replace')[-800:]}")
            if select.select([master], [], [], 0.02)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    pass
            if sent is None and when.encode() in seen:
                proc.send_signal(signal.SIGINT)
                sent = time.monotonic()
            if proc.poll() is not None:
                exited = time.monotonic()
        seen += read_rest(master)
    finally:
        os.close(master)
    assert sent is not None, f"the terminal never showed {when!r}: {seen.decode(errors='replace')[-800:]}"
    return proc.returncode, seen.decode(errors="replace"), exited - sent


COLD = ["scale", "Is 10 greater than 3?", "-a", "YES,NO"]  # the default (local) panel: two servers
COLD_ENV = {"FSCALE_LOCAL_N_CTX": "512", "FSCALE_LOCAL_PARALLEL": "1",
            "FSCALE_LOCAL_IDLE_TIMEOUT": "120"}


def test_ctrl_c_while_the_weights_are_joined_exits_and_keeps_no_partial_file(
        small_local_servers: Path):
    """Issue 22: Ctrl-C during the first run's weight join used to wait for the whole join and
    both servers' start, and leave the servers running. Now the join stops, its temporary
    file is removed, and no server is started."""
    home = small_local_servers
    try:
        code, terminal, took = interrupt_cli(*COLD, when="joining", env=COLD_ENV)
        assert code == 130, terminal
        assert "fscale: interrupted" in terminal and "Traceback" not in terminal
        assert _serve_processes(home) == []
        assert not servers.known_servers(Paths.resolve())
        cache = home / "cache" / "local"
        assert not list(cache.glob("*.tmp")), list(cache.iterdir())
        for w in weights.BUILTIN_WEIGHTS.values():  # a file in the cache is whole and verified
            path = weights.builtin_path(w, cache.parent)
            assert not path.exists() or weights.is_verified(path, w.sha256)
        print(f"SIGINT during the join: exit after {took:.2f}s")
    finally:
        servers.stop_all(Paths.resolve())


def test_ctrl_c_while_the_servers_start_stops_the_servers_it_started(home: Path):
    """Issue 22: Ctrl-C while the local servers load their models: the command exits and the
    servers it was starting are stopped (they stayed up, 2.7 GB, until `fscale local stop`)."""
    paths = Paths.resolve()
    for w in weights.BUILTIN_WEIGHTS.values():  # joined already: the next step is the start
        weights.ensure_builtin(w, paths.cache_dir)
    try:
        code, terminal, took = interrupt_cli(*COLD, when="starting the local server", env=COLD_ENV)
        assert code == 130, terminal
        assert "fscale: interrupted" in terminal and "Traceback" not in terminal
        assert _serve_processes(home) == []
        assert not servers.known_servers(paths)
        logs = [servers.log_path(paths, ID_05), servers.log_path(paths, ID_15)]
        assert any("abandoned" in p.read_text() for p in logs if p.exists())
        print(f"SIGINT during the server start: exit after {took:.2f}s")
    finally:
        for name in servers.known_servers(paths):
            servers.stop_server(paths, name)
