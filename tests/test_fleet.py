"""Beyond one machine: the Redis coordination backend, against a real redis-server on loopback.

Each simulated host is a real ``fscale`` process with its OWN ``FSCALE_HOME`` (so the embedded
backend cannot share anything between them): only Redis can make them behave like one. The
test-only ``FSCALE_RATE_WINDOW_S`` shrinks the limiter's minute so the runs take seconds; what is
asserted is what the loopback server recorded (sends per window, requests per model).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import (STUB_MODELS, Behaviour, mid, needs_redis_client, needs_redis_server,
                            start_cli)
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server():
    with RedisServer() as srv:
        yield srv


def _host(tmp_path: Path, name: str, server, *, rpm: float | None = None,
          concurrency: int = 8, panel: list[str] | None = None) -> Path:
    """A fresh FSCALE_HOME (one simulated host) with the loopback provider."""
    home = tmp_path / name
    home.mkdir()
    provider: dict = {"base_url": server.base_url, "concurrency": concurrency}
    if rpm is not None:
        provider["rpm"] = rpm
    doc = {"providers": {"stub": provider},
           "models": {a: {"provider": "stub", "id": m, "tier": t, "family": f}
                      for a, (m, t, f) in STUB_MODELS.items()},
           "panels": {"default": panel or ["fast-a"]}}
    (home / "config.toml").write_text(tomli_w.dumps(doc))
    return home


_cli = start_cli


def _items(path: Path, n: int, prefix: str = "q") -> Path:
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "question": f"question {i}?",
                                        "answers": ["YES", "NO"]}) + "\n" for i in range(n)))
    return path


def _run_hosts(tmp_path, server, n_hosts: int, items: int, env: dict, rpm: float) -> list[dict]:
    homes = [_host(tmp_path, f"host{i}", server, rpm=rpm) for i in range(n_hosts)]
    batch = _items(tmp_path / "items.jsonl", items)
    procs = [_cli(h, "scale", "--batch", str(batch), "-k", "1", env=env) for h in homes]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return [json.loads(x) for out, _ in outs for x in out.splitlines()]


@pytest.mark.xdist_group("serial")  # a rate-limit window
@pytest.mark.slow
@needs_redis_client
@needs_redis_server
def test_three_hosts_sharing_redis_never_exceed_rpm(server, redis_server, tmp_path):
    """Acceptance 1: 3 processes (3 state directories), rpm = 30: the busiest window at the
    server holds at most 30 sends, and every send was counted by the process that made it."""
    rpm, window = 30, 2.0
    server.script(mid("fast-a"), Behaviour(reply="YES"))
    env = {"FSCALE_RATE_WINDOW_S": str(window), "FSCALE_REDIS_URL": redis_server.url}
    lines = _run_hosts(tmp_path, server, 3, 25, env, rpm)
    assert len(lines) == 75 and all(x["answer"] == "YES" for x in lines)
    assert sum(x["calls_made"] for x in lines) == server.count(mid("fast-a")) == 75
    assert server.max_in_window(window) <= rpm


@pytest.mark.xdist_group("serial")  # a rate-limit window
@pytest.mark.slow
def test_without_redis_three_state_dirs_do_exceed_rpm(server, tmp_path):
    """The control: the same three hosts without Redis each keep their own limiter, and the
    server sees more than rpm in one window (what the Redis backend prevents above)."""
    rpm, window = 30, 2.0
    server.script(mid("fast-a"), Behaviour(reply="YES"))
    lines = _run_hosts(tmp_path, server, 3, 25, {"FSCALE_RATE_WINDOW_S": str(window)}, rpm)
    assert len(lines) == 75
    assert server.max_in_window(window) > rpm


@needs_redis_client
@needs_redis_server
async def test_redis_limiter_shared_by_three_limiters_in_one_loop(redis_server):
    """The Lua reservation itself: 3 limiters (3 connections, as 3 processes have) and 40
    concurrent acquires each: reserved send times never put more than rpm in a padded window."""
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.wire.coordination import make_coordination

    os.environ["FSCALE_REDIS_URL"] = redis_server.url
    os.environ["FSCALE_RATE_WINDOW_S"] = "1"
    try:
        settings = load_settings()
        coords = [make_coordination(settings) for _ in range(3)]
        assert all(c.name == "redis" for c in coords)
        limiters = [c.limiter() for c in coords]
        sent: list[float] = []

        async def one(lim) -> None:
            await lim.acquire("stub", 12)
            sent.append(time.time())

        await asyncio.gather(*(one(lim) for lim in limiters for _ in range(12)))
        for lim in limiters:
            await lim.aclose()
    finally:
        del os.environ["FSCALE_REDIS_URL"], os.environ["FSCALE_RATE_WINDOW_S"]
    sent.sort()
    assert len(sent) == 36
    # 1 s window (+1 s pad): any 13 consecutive sends span at least one window.
    assert all(sent[i + 12] - sent[i] >= 1.0 for i in range(len(sent) - 12))


@needs_redis_client
@needs_redis_server
def test_a_model_found_dead_on_one_host_is_skipped_on_the_others(server, redis_server, tmp_path):
    """Acceptance 1: host A gets HTTP 410 from fast-b; host B (another state directory) never
    sends to fast-b and substitutes it."""
    server.script(mid("fast-b"), Behaviour(status=410))
    server.script(mid("fast-a"), Behaviour(reply="YES"))
    server.script(mid("fast-c"), Behaviour(reply="YES"))
    env = {"FSCALE_REDIS_URL": redis_server.url}
    home_a = _host(tmp_path, "a", server)
    home_b = _host(tmp_path, "b", server)
    p = _cli(home_a, "scale", "is it?", "-a", "YES,NO", "-m", "fast-b", "--json", env=env)
    out, err = p.communicate(timeout=60)
    assert server.count(mid("fast-b")) == 1
    assert not (home_a / "health.json").exists() or "fast-b" not in json.loads(
        (home_a / "health.json").read_text())  # the verdict went to Redis, not the file
    p = _cli(home_b, "scale", "is it?", "-a", "YES,NO", "-m", "fast-b,fast-a", "--json", env=env)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert server.count(mid("fast-b")) == 1  # host B never asked the dead model
    result = json.loads(out)
    assert result["answer"] == "YES"
    # The embedded backend would not have known: host C without Redis asks fast-b again.
    home_c = _host(tmp_path, "c", server)
    p = _cli(home_c, "scale", "is it?", "-a", "YES,NO", "-m", "fast-b,fast-a", "--json", env={})
    p.communicate(timeout=60)
    assert server.count(mid("fast-b")) == 2


@needs_redis_client
@needs_redis_server
async def test_a_running_engine_sees_a_verdict_recorded_by_another(server, redis_server,
                                                                  tmp_path, monkeypatch):
    """Two engines already running (two hosts): A records fast-b dead; B's ``is_down`` turns
    true after its next background refresh (no restart, no blocking read on the loop)."""
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.session import Engine

    monkeypatch.setenv("FSCALE_REDIS_URL", redis_server.url)
    engines = []
    for name in ("a", "b"):
        monkeypatch.setenv("FSCALE_HOME", str(_host(tmp_path, name, server)))
        engines.append(Engine(load_settings()))
    a, b = engines
    assert a.coordination_info()["backend"] == "redis"
    assert not b.health.is_down("fast-b")
    a.health.record(a.settings.models["fast-b"], "dead", detail="HTTP 410")
    for _ in range(100):  # refreshed at most every second, in a thread
        if b.health.is_down("fast-b"):
            break
        await asyncio.sleep(0.05)
    assert b.health.verdict("fast-b") == "dead"
    assert not b.registry.available(b.settings.models["fast-b"])
    for e in engines:
        await e.aclose()


@pytest.mark.xdist_group("serial")  # stopped mid-batch
@pytest.mark.slow
@needs_redis_client
@needs_redis_server
def test_killing_redis_mid_batch_loses_no_item(server, redis_server, tmp_path):
    """Acceptance 1: Redis dies while a batch runs: one warning, the rest of the batch goes on
    with the embedded backend, every item is answered, in order, exit 0."""
    server.script(mid("fast-a"), Behaviour(reply="YES"))
    home = _host(tmp_path, "h", server, rpm=60, concurrency=2)
    batch = _items(tmp_path / "items.jsonl", 60)
    env = {"FSCALE_REDIS_URL": redis_server.url, "FSCALE_RATE_WINDOW_S": "2"}
    p = _cli(home, "scale", "--batch", str(batch), "-k", "1", env=env)
    for _ in range(600):
        if server.count(mid("fast-a")) >= 10:
            break
        time.sleep(0.02)
    before = server.count(mid("fast-a"))
    redis_server.stop()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert 10 <= before < 60  # it really was mid-batch
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["item_id"] for x in lines] == [f"q{i}" for i in range(60)]
    assert all(x["answer"] == "YES" for x in lines)
    assert err.count("unreachable") == 1, err


@needs_redis_client
def test_unreachable_redis_at_start_warns_once_and_config_show_says_embedded(server, tmp_path):
    from tests.redis_server import free_port

    server.script(mid("fast-a"), Behaviour(reply="YES"))
    home = _host(tmp_path, "h", server)
    env = {"FSCALE_REDIS_URL": f"redis://:s3cretpassw0rd@127.0.0.1:{free_port()}/0"}
    p = _cli(home, "scale", "is it?", "-a", "YES,NO", "-k", "1", "--json", env=env)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert json.loads(out)["answer"] == "YES"
    assert err.count("unreachable") == 1 and "s3cretpassw0rd" not in err
    p = _cli(home, "config", "show", "--json", env=env)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    info = json.loads(out)["coordination"]
    assert info["backend"] == "embedded" and "unreachable" in info["note"]
    assert "s3cretpassw0rd" not in out + err


@needs_redis_client
@needs_redis_server
def test_config_show_and_health_name_the_redis_backend(server, redis_server, tmp_path):
    server.script(mid("fast-a"), Behaviour(reply="OK"))
    home = _host(tmp_path, "h", server)
    secret_url = redis_server.url.replace("redis://", "redis://default:hunter2hunter2@")
    p = _cli(home, "config", "show", env={"FSCALE_REDIS_URL": redis_server.url})
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert f"coordination: redis ({redis_server.url};" in out
    p = _cli(home, "health", "-m", "fast-a", env={"FSCALE_REDIS_URL": redis_server.url})
    out, err = p.communicate(timeout=60)
    assert "fast-a\tok" in out
    assert "through the redis backend" in err
    from fscale_tui.engine.wire.coordination import safe_url

    assert "hunter2" not in safe_url(secret_url) and ":***@127.0.0.1" in safe_url(secret_url)


def test_a_redis_url_with_a_password_in_config_toml_is_refused(server, tmp_path):
    home = _host(tmp_path, "h", server)
    cfg = home / "config.toml"
    cfg.write_text(cfg.read_text() + '\n[fleet]\nredis_url = "redis://:pw123456789@10.0.0.1:6379/0"\n')
    p = _cli(home, "config", "show", env={})
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert "FSCALE_REDIS_URL" in err and "pw123456789" not in err + out


@needs_redis_client
@needs_redis_server
def test_fleet_redis_url_from_config_toml_is_used(server, redis_server, tmp_path):
    home = _host(tmp_path, "h", server)
    cfg = home / "config.toml"
    cfg.write_text(cfg.read_text() + f'\n[fleet]\nredis_url = "{redis_server.url}"\n')
    p = _cli(home, "config", "show", "--json", env={})
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "unknown" not in err
    info = json.loads(out)["coordination"]
    assert info["backend"] == "redis" and info["source"] == "config"


@needs_redis_client
@needs_redis_server
def test_challenger_draws_are_counted_in_redis(server, redis_server, tmp_path):
    """Two hosts with the challenger on: every shadow draw is counted in one shared hash."""
    import redis

    server.script("__default__", Behaviour(reply="YES"))
    for m in STUB_MODELS.values():
        server.script(m[0], Behaviour(reply="YES"))
    env = {"FSCALE_REDIS_URL": redis_server.url, "FSCALE_CHALLENGER": "1",
           "FSCALE_CHALLENGER_GRACE": "5"}
    # The fleet's spend ledger (one Redis list) already holds decision calls that earned the
    # shadow budget; each host's call adds its own entry to it.
    client = redis.Redis.from_url(redis_server.url)
    client.lpush("fscale:spend:calls", json.dumps(["earlier-calls", 100, 0]))
    shadows = 0
    ids = []
    for name in ("a", "b"):
        home = _host(tmp_path, name, server, panel=["fast-a"])
        p = _cli(home, "scale", "is it?", "-a", "YES,NO", "-k", "1", "--json", env=env)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        shadows += len(json.loads(out)["challengers"])
        ids.append(json.loads(out)["id"])
    draws = client.hgetall("fscale:challenger:draws")
    assert shadows >= 2 and sum(int(v) for v in draws.values()) == shadows
    assert not (tmp_path / "a" / "challenger.json").exists()
    ledger = [json.loads(x) for x in client.lrange("fscale:spend:calls", 0, -1)]
    assert sorted(e[0] for e in ledger[:2]) == sorted(ids) and ledger[-1][0] == "earlier-calls"
    assert sum(e[2] for e in ledger) == shadows
    assert not (tmp_path / "a" / "state" / "spend.sqlite3").exists()


def test_shared_draws_spread_exploration():
    """Thompson sampling with shared draw counts: an outsider the fleet already drew often is
    picked less than the never-drawn one (both unrated locally)."""
    import random

    from fscale_tui.engine.learning.challenger import thompson_pick

    rng = random.Random(7)
    picks = [thompson_pick(["m1", "m2"], {}, rng, draws={"m1": 200}) for _ in range(400)]
    assert picks.count("m2") > picks.count("m1")
    rng = random.Random(7)
    picks = [thompson_pick(["m1", "m2"], {}, rng) for _ in range(400)]
    assert 120 < picks.count("m1") < 280  # without counts: a coin toss
