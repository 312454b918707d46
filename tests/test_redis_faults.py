"""A Redis that misbehaves: a fake server on loopback (tests/fake_redis.py) answering ``+OK``
where a map or an integer is due, an absurd delay, silence or garbage; bad URLs; a password in
the query string; and the real redis-server going away, coming back, and coming back empty.
Every failure is one warning and the embedded backend meanwhile; never a crash, a hang, or a
vote lost; Redis is used again once it answers, and a limit still holds after it lost its data."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import STUB_MODELS, Behaviour, mid, needs_redis_client, run_cli
from tests.fake_redis import FakeRedis, array, bulk, integer
from tests.redis_server import RedisServer, free_port

#: Every test here talks to Redis through the client of the [fleet] extra.
pytestmark = needs_redis_client


def _home(home: Path, server, *, rpm: float = 6000, extra: dict | None = None) -> Path:
    doc = {"providers": {"stub": {"base_url": server.base_url, "rpm": rpm}},
           "models": {a: {"provider": "stub", "id": m, "tier": t, "family": f}
                      for a, (m, t, f) in STUB_MODELS.items()},
           "panels": {"default": ["fast-a", "fast-b", "slow-c"]}, **(extra or {})}
    (home / "config.toml").write_text(tomli_w.dumps(doc))
    return home


def _redis_warnings(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.startswith("fscale: warning:") and "Redis" in x]


def _delay(seconds: float) -> bytes:
    return array(integer(int(seconds * 1e6)), bulk("fake"), integer(int(time.time() * 1e6)))


MISBEHAVIOURS = {
    "+OK to HELLO": {"HELLO": b"+OK\r\n"},
    "+OK to EVALSHA": {"EVALSHA": b"+OK\r\n"},
    "an 11-day delay": {"EVALSHA": lambda args: _delay(1e6)},
    "an integer where a list is due": {"EVALSHA": b":1000000000000\r\n"},
    "silence": {"EVALSHA": None},
    "bytes that are not RESP": {"EVALSHA": b"?garbage\r\n"},
    "a string where a delay is due": {"EVALSHA": array(bulk("soon"), bulk("e"), integer(1))},
}


@pytest.mark.parametrize("name", list(MISBEHAVIOURS))
def test_a_misbehaving_redis_is_one_warning_and_every_call_is_answered(server, fscale_home,
                                                                       name):
    _home(fscale_home, server)
    server.set_default(Behaviour(reply="YES"))
    with FakeRedis(**MISBEHAVIOURS[name]) as fake:
        started = time.monotonic()
        proc = run_cli("scale", "q?", "-a", "YES,NO", "--json",
                       env={"FSCALE_REDIS_URL": fake.url}, timeout=60)
        took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["answer"] == "YES" and result["valid_votes"] >= 2
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert took < 30  # bounded by the command deadline, never the 11 days asked for
    if name != "+OK to HELLO":  # RESP2: the handshake is not even sent
        assert len(_redis_warnings(proc.stderr)) == 1, proc.stderr
    else:
        assert "HELLO" not in fake.commands and _redis_warnings(proc.stderr) == []


def test_a_password_in_the_query_string_is_masked_everywhere(server, fscale_home):
    _home(fscale_home, server)
    server.set_default(Behaviour(reply="YES"))
    secret = "Qu3ryS3cretValue"
    url = f"redis://127.0.0.1:{free_port()}/0?password={secret}"
    env = {"FSCALE_REDIS_URL": url}
    outputs = [run_cli("scale", "q?", "-a", "YES,NO", env=env),
               run_cli("health", env=env), run_cli("health", "--json", env=env),
               run_cli("config", "show", env=env), run_cli("config", "show", "--json", env=env)]
    for proc in outputs:
        assert proc.returncode == 0, proc.stderr
        assert secret not in proc.stdout + proc.stderr, proc.args
    assert "password=***" in outputs[0].stderr  # the fallback warning names the masked URL
    assert "password=***" in outputs[3].stdout  # config show: the note names it too


def test_a_query_password_in_config_toml_is_refused(server, fscale_home):
    _home(fscale_home, server,
          extra={"fleet": {"redis_url": "redis://10.0.0.1:6379/0?password=pw1234567890"}})
    proc = run_cli("config", "show")
    assert proc.returncode == 2 and "FSCALE_REDIS_URL" in proc.stderr
    assert "pw1234567890" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("url, why", [
    ("redis://127.0.0.1:99999/0?password=S3cretInBadUrl", "port out of range"),
    ("redis://[::1/0", "invalid ipv6 url"),
    ("redis://127.0.0.1:abc/0", "port could not be cast"),
    ("http://127.0.0.1:6379/0", "the scheme must be"),
])
def test_a_bad_redis_url_is_a_config_error_that_config_show_still_shows(server, fscale_home,
                                                                        url, why):
    _home(fscale_home, server)
    env = {"FSCALE_REDIS_URL": url}
    scale = run_cli("scale", "q?", "-a", "YES,NO", env=env)
    assert scale.returncode == 2, scale.stderr
    assert scale.stderr.startswith("fscale: error: FSCALE_REDIS_URL: invalid Redis URL")
    assert why in scale.stderr and len(scale.stderr.strip().splitlines()) == 1
    shown = run_cli("config", "show", env=env)
    assert shown.returncode == 2, shown.stderr
    assert "coordination: invalid (" in shown.stdout and "k " in shown.stdout  # all of it shown
    for proc in (scale, shown):
        assert "S3cretInBadUrl" not in proc.stdout + proc.stderr


def test_an_ipv6_url_works(server, fscale_home):
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.fail("this machine has no IPv6 loopback")
    _home(fscale_home, server)
    server.set_default(Behaviour(reply="YES"))
    with FakeRedis(host="::1") as fake:
        env = {"FSCALE_REDIS_URL": fake.url}
        proc = run_cli("scale", "q?", "-a", "YES,NO", env=env)
        shown = run_cli("config", "show", "--json", env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "YES", proc.stderr
    assert _redis_warnings(proc.stderr) == []
    assert json.loads(shown.stdout)["coordination"]["backend"] == "redis"
    assert "EVALSHA" in fake.commands


@pytest.fixture
def coordinated(fscale_home, monkeypatch):
    """A real redis-server and this process's coordination backend on it (warnings reset)."""
    from fscale_tui.engine.wire import coordination as C
    from fscale_tui.engine.catalog.config import load_settings

    C._warned.clear()
    with RedisServer() as srv:
        monkeypatch.setenv("FSCALE_REDIS_URL", srv.url)
        coord = C.make_coordination(load_settings())
        try:
            yield srv, coord
        finally:
            coord.close()


def _zcard(srv: RedisServer) -> int:
    import redis as redis_client

    return redis_client.Redis.from_url(srv.url).zcard("fscale:rl:stub")


async def test_redis_is_used_again_once_it_is_back_with_the_sends_made_meanwhile(coordinated,
                                                                                 capfd):
    """Redis goes away: one warning, the embedded backend; it comes back: after the back-off
    the next send goes through Redis again, and the sends made meanwhile are in its record."""
    from fscale_tui.engine.wire.coordination import RETRY_FIRST_S

    srv, coord = coordinated
    limiter = coord.limiter()
    await limiter.acquire("stub", 600)
    assert coord.name == "redis"
    srv.stop()
    for _ in range(3):
        await limiter.acquire("stub", 600)
    assert coord.name == "embedded"
    srv.restart()
    await asyncio.sleep(RETRY_FIRST_S + 0.1)
    await limiter.acquire("stub", 600)
    assert coord.name == "redis"
    await limiter.aclose()
    assert _zcard(srv) == 5  # 1 before, 3 while away (added back), 1 now; the lost first re-added
    err = capfd.readouterr().err
    assert err.count("is unreachable or misbehaves") == 1, err


async def test_a_redis_that_lost_its_data_gets_this_process_sends_back(coordinated, capfd):
    """FLUSHALL (or a restart fast enough that the connection survives): the reservation
    script sees another epoch, and this process adds its sends of the window back first."""
    import redis as redis_client

    srv, coord = coordinated
    limiter = coord.limiter()
    for _ in range(4):
        await limiter.acquire("stub", 600)
    redis_client.Redis.from_url(srv.url).flushall()
    await limiter.acquire("stub", 600)
    await limiter.aclose()
    assert coord.name == "redis" and _zcard(srv) == 5
    assert capfd.readouterr().err.count("lost fscale's send record") == 1


@pytest.mark.xdist_group("serial")  # a rate-limit window
@pytest.mark.slow
def test_a_redis_restarted_empty_mid_batch_still_holds_the_limit(server, fscale_home, tmp_path):
    rpm, window = 30, 2.0
    _home(fscale_home, server, rpm=rpm)
    server.script(mid("fast-a"), Behaviour(reply="YES"))
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"question": f"q{i}?", "id": f"i{i}"}) + "\n"
                             for i in range(110)))
    from tests.conftest import start_cli

    with RedisServer() as srv:
        env = {"FSCALE_REDIS_URL": srv.url, "FSCALE_RATE_WINDOW_S": str(window)}
        proc = start_cli(fscale_home, "scale", "--batch", str(items), "-a", "YES,NO", "-k",
                         "1", "--models", "fast-a", env=env)
        deadline = time.monotonic() + 60
        while server.count(mid("fast-a")) < 45 and time.monotonic() < deadline:
            time.sleep(0.01)
        srv.restart()  # empty: no persistence
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(out.splitlines()) == 110
    assert server.max_in_window(window) <= rpm, err
    assert err.count("lost fscale's send record") + err.count("unreachable or misbehaves") >= 1
    assert len(_redis_warnings(err)) <= 2, err  # each kind of trouble said once
