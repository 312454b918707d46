"""A local server is stopped only when it is provably this home's (state path + random token)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fscale_tui.engine.base import storage
from fscale_tui.engine.providers.local import servers
from fscale_tui.engine.base.paths import Paths
from tests.conftest import run_cli

NAME = "some-local-model"


def _impostor(*args: str) -> subprocess.Popen:
    """A live process whose command line looks like a serve process with ``args``."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                             "-m", servers.SERVE_MODULE, *args])


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:  # only the processes this test started
        proc.kill()
        proc.wait()


def _write_state(path: Path, pid: int, token: str | None) -> None:
    state = {"name": NAME, "pid": pid, "url": "http://127.0.0.1:9", "base_url": "http://127.0.0.1:9/v1"}
    if token is not None:
        state["token"] = token
    storage.write_json(path, state)


def test_another_homes_live_server_is_never_killed(fscale_home, tmp_path, procs):
    paths = Paths.resolve()
    ours = servers.state_path(paths, NAME)
    other_state = tmp_path / "other-home" / "state" / "local" / f"{NAME}.json"
    other = _impostor("--name", NAME, "--state", str(other_state), "--token", "t-other")
    procs.append(other)
    # Our state file names the other home's pid: without its token, with its token (copied).
    for token in (None, "t-other", "t-ours"):
        _write_state(ours, other.pid, token)
        assert servers.status(paths, NAME)["status"] == "stale"
        assert servers.stop_server(paths, NAME) is False
        assert other.poll() is None, "a foreign server was killed"
        assert not ours.exists()
    # Through the CLI as well.
    _write_state(ours, other.pid, "t-other")
    proc = run_cli("local", "stop")
    assert proc.returncode == 0 and "stopped 0 local servers" in proc.stderr, proc.stderr
    assert other.poll() is None and not ours.exists()


def test_a_command_line_merely_containing_the_module_is_not_ours(fscale_home, procs):
    paths = Paths.resolve()
    path = servers.state_path(paths, NAME)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                                  f"grep {servers.SERVE_MODULE} --state {path} --token tok"])
    procs.append(bystander)
    _write_state(path, bystander.pid, "tok")
    assert not servers.is_our_server(bystander.pid)
    assert servers.stop_server(paths, NAME) is False
    assert bystander.poll() is None


def test_our_own_server_is_proven_by_path_and_token_and_stopped(fscale_home, procs):
    paths = Paths.resolve()
    path = servers.state_path(paths, NAME)
    mine = _impostor("--name", NAME, "--state", str(path), "--token", "t-mine")
    procs.append(mine)
    _write_state(path, mine.pid, "t-wrong")
    assert not servers.owns(servers.read_state(path), path)
    _write_state(path, mine.pid, "t-mine")
    assert servers.owns(servers.read_state(path), path)
    assert servers.stop_server(paths, NAME) is True
    assert mine.wait(timeout=15) is not None and not path.exists()
