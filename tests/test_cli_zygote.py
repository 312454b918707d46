"""The preloaded fscale the tests fork their one-shot commands from (tests/cli_zygote.py) gives
what a fresh ``python -m fscale_tui`` gives: the same stdout, stderr and exit code, a process of
its own, the call's own environment, and a subprocess whenever the preload read a variable the
call sets differently."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from tests.cli_zygote import Zygote, write_shim
from tests.conftest import REPO, Behaviour, mid, run_cli, run_cli_pty, the_zygote


@pytest.fixture(scope="module")
def zygote():
    z = Zygote(str(REPO))
    yield z
    z.close()


def _fresh(args, *, input=None, env):
    return subprocess.run([sys.executable, "-m", "fscale_tui", *args], input=input,
                          capture_output=True, text=True, env=env, timeout=60, cwd=REPO,
                          stdin=None if input is not None else subprocess.DEVNULL)


def _same(text: str) -> str:
    """Output with its numbers masked (call ids, latencies and times differ from run to run)."""
    return re.sub(r"[0-9a-f]{16}|\d+(\.\d+)?(e-?\d+)?", "N", text)


CASES = [
    (["--version"], None),
    (["scale", "--help"], None),
    (["scale", "Is it?", "-a", "YES,NO", "--json"], None),
    (["scale", "Is it?", "-a", "YES,NO"], None),  # the human line on stderr
    (["scale", "--nope"], None),  # a usage error: one line, exit 2
    (["verify", "--source", "/dev/null"], ""),  # empty piped input: exit 2
    (["scale", "--batch", "-", "-a", "YES,NO", "-k", "1"], '{"question": "a?"}\n{"question": "b?"}\n'),
    (["history", "--json"], None),
]


@pytest.mark.parametrize(("args", "input"), CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_a_fork_gives_what_a_fresh_process_gives(zygote, server, stub_config, args, input):
    # slow-c is slow: both runs decide early without it (which run it would make on time is luck)
    server.script(mid("slow-c"), *[Behaviour(latency=5)] * 4)
    env = dict(os.environ)
    forked = zygote.run(args, env=env, cwd=str(REPO), input=input, timeout=60)
    fresh = _fresh(args, input=input, env=env)
    assert forked is not None
    assert (forked.returncode, _same(forked.stdout), _same(forked.stderr)) == (
        fresh.returncode, _same(fresh.stdout), _same(fresh.stderr))
    assert forked.stdout.strip() or forked.stderr.strip()


def test_a_fork_on_a_terminal_shows_what_a_fresh_process_shows(server, stub_config, tmp_path):
    """run_cli_pty forks with the terminal as the child's stderr: the same styled lines, the
    same file on stdout and exit code as a fresh process given the same terminal."""
    server.script(mid("slow-c"), *[Behaviour(latency=5)] * 4)  # decided without it, both ways
    worker = the_zygote()
    refused = worker.refused if worker is not None else 0
    got = []
    for fork in (True, False):  # each in a home of its own: the first's calls change the second's
        home = tmp_path / f"home-{fork}"
        home.mkdir()
        shutil.copy(stub_config, home / "config.toml")
        got.append(run_cli_pty("scale", "Is it?", "-a", "YES,NO", fork=fork,
                               stdout_path=tmp_path / f"out-{fork}.txt",
                               env={"FSCALE_HOME": str(home)}))
    assert got[0][0] == 0 and "\x1b[" in got[0][2]  # a terminal: styled
    forked, fresh = ((code, _same(out), _same(screen)) for code, out, screen in got)
    assert forked == fresh
    assert worker is None or worker.refused == refused  # the first was a fork indeed


def test_each_call_has_its_own_process_environment_and_exit_code(zygote, tmp_path):
    env = dict(os.environ)
    env["FSCALE_HOME"] = str(tmp_path / "another-home")
    first = zygote.run(["config", "path"], env=env, cwd=str(REPO), input=None, timeout=60)
    assert first.returncode == 0 and first.stdout.strip().startswith(str(tmp_path / "another-home"))
    second = zygote.run(["config", "path"], env=dict(os.environ), cwd=str(REPO), input=None,
                        timeout=60)
    assert str(tmp_path / "another-home") not in second.stdout
    assert zygote.run(["nope"], env=env, cwd=str(REPO), input=None, timeout=60).returncode == 2


def test_a_variable_read_while_preloading_makes_the_call_a_subprocess(zygote):
    assert "AIOHTTP_NO_EXTENSIONS" in zygote.env_read  # aiohttp reads it when imported
    env = dict(os.environ, AIOHTTP_NO_EXTENSIONS="1")
    before = zygote.refused
    assert zygote.run(["--version"], env=env, cwd=str(REPO), input=None, timeout=60) is None
    env = dict(os.environ, PYTHONWARNINGS="error")  # read by the interpreter at start-up
    assert zygote.run(["--version"], env=env, cwd=str(REPO), input=None, timeout=60) is None
    env = dict(os.environ, SSL_CERT_FILE="/etc/another-bundle.pem")  # read by OpenSSL (C)
    assert zygote.run(["--version"], env=env, cwd=str(REPO), input=None, timeout=60) is None
    assert zygote.refused == before + 3
    # ... and run_cli then starts a real process, with the variable in effect
    done = run_cli("--version", env={"PYTHONWARNINGS": "error"})
    assert done.returncode == 0 and done.stdout.startswith("fscale ")


def test_calls_run_side_by_side_not_one_after_another(zygote, server, stub_config):
    server.set_default(Behaviour(latency=3.0))
    slow: list = []
    thread = threading.Thread(target=lambda: slow.append(zygote.run(
        ["scale", "Is it?", "-a", "YES,NO", "-k", "1", "--json"], env=dict(os.environ),
        cwd=str(REPO), input=None, timeout=60)))
    thread.start()
    while not server.requests:  # the slow call is waiting on the server
        time.sleep(0.01)
    quick = zygote.run(["--version"], env=dict(os.environ), cwd=str(REPO), input=None, timeout=60)
    assert quick.returncode == 0
    assert thread.is_alive()  # the quick call did not wait for the slow one
    thread.join()
    assert slow[0].returncode == 0


def test_a_call_that_outlives_its_timeout_is_killed(zygote, server, stub_config):
    server.set_default(Behaviour(latency=30))
    with pytest.raises(subprocess.TimeoutExpired):
        zygote.run(["scale", "Is it?", "-a", "YES,NO", "-k", "1"], env=dict(os.environ),
                   cwd=str(REPO), input=None, timeout=1.5)
    # the zygote still serves
    again = zygote.run(["--version"], env=dict(os.environ), cwd=str(REPO), input=None, timeout=60)
    assert again.returncode == 0


@pytest.mark.parametrize("through", ["zygote", "refused", "no zygote"])
def test_the_shell_shim_hands_its_own_pipes_and_exit_code_over(zygote, tmp_path, through):
    shim = tmp_path / "fscale"
    write_shim(str(shim))
    env = dict(os.environ, FSCALE_TEST_ZYGOTE=zygote.path)
    if through == "refused":
        env["AIOHTTP_NO_EXTENSIONS"] = "1"
    elif through == "no zygote":
        env.pop("FSCALE_TEST_ZYGOTE")
    script = f"{shim} --version | tr a-z A-Z; echo x | {shim} verify --source /dev/null; echo rc=$?"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", script], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.stdout == "FSCALE " + done.stdout.split()[1] + "\nrc=2\n"
    assert done.stderr == "fscale: error: the source is empty (see 'fscale verify --help')\n"
