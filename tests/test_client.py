"""The chat client: retries, backoff, Retry-After, rate limits, secrets, streaming."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from fscale_tui.engine.wire.client import ChatClient, _retry_after

from fscale_tui.engine.base.calls import RequestCounter
from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.base.errors import ProviderError
from tests.conftest import Behaviour, mid, run_cli, write_config


async def _chat(alias: str, **kw):
    settings = load_settings()
    async with ChatClient(settings) as client:
        counter = RequestCounter()
        try:
            return await client.chat(settings.models[alias], [{"role": "user", "content": "hi"}],
                                     counter=counter, **kw), counter
        except ProviderError as exc:
            return exc, counter


@pytest.mark.parametrize("status,kind,retried", [
    (410, "dead", False), (404, "unavailable", False), (401, "auth", False),
    (400, "bad_request", False), (500, "server", True), (503, "server", True),
    (429, "rate_limited", True),
])
def test_error_statuses_map_to_kinds_and_retry_only_when_it_can_help(server, stub_config, status, kind, retried):
    server.script(mid("fast-a"), Behaviour(status=status))
    exc, counter = asyncio.run(_chat("fast-a"))
    assert isinstance(exc, ProviderError) and exc.kind == kind and exc.status == status
    expected = 1 + (3 if retried else 0)  # default: 3 retries
    assert server.count(mid("fast-a")) == expected == counter.sent


def test_5xx_then_success_is_retried(server, stub_config):
    server.script(mid("fast-a"), Behaviour(status=500), Behaviour(status=503), Behaviour(reply="ok"))
    reply, counter = asyncio.run(_chat("fast-a"))
    assert reply.content == "ok" and reply.attempts == 3 and counter.sent == 3


def test_timeout_is_retried_then_reported(server, stub_config, monkeypatch):
    monkeypatch.setenv("FSCALE_TIMEOUT_FAST", "0.2")
    monkeypatch.setenv("FSCALE_RETRIES", "1")
    server.script(mid("fast-a"), Behaviour(reply="late", latency=2.0))
    exc, counter = asyncio.run(_chat("fast-a"))
    assert isinstance(exc, ProviderError) and exc.kind == "timeout" and counter.sent == 2


def test_backoff_grows_exponentially(server, stub_config, monkeypatch):
    monkeypatch.setenv("FSCALE_RETRY_BASE", "0.1")
    monkeypatch.setenv("FSCALE_RETRIES", "2")
    server.script(mid("fast-a"), Behaviour(status=500))
    asyncio.run(_chat("fast-a"))
    starts = [r.t_start for r in server.requests]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # base 0.1 s then 0.2 s, each with ±50 % jitter
    assert 0.05 <= gaps[0] <= 0.2 and 0.1 <= gaps[1] <= 0.4


def test_retry_after_header_is_honoured(server, stub_config):
    server.script(mid("fast-a"), Behaviour(status=503, retry_after=0.5), Behaviour(reply="ok"))
    reply, _ = asyncio.run(_chat("fast-a"))
    starts = [r.t_start for r in server.requests]
    assert reply.content == "ok" and starts[1] - starts[0] >= 0.45


def test_retry_after_parses_seconds_and_http_dates():
    assert _retry_after("2") == 2.0
    assert _retry_after(None) is None
    from email.utils import formatdate

    assert 8 <= _retry_after(formatdate(time.time() + 10, usegmt=True)) <= 11


def test_null_content_and_reasoning_fields(server, stub_config):
    server.script(mid("fast-a"), Behaviour(null_content=True, reasoning_content="hmm"))
    reply, _ = asyncio.run(_chat("fast-a"))
    assert reply.content is None and reply.reasoning == "hmm"


def test_stream_cut_midway_is_a_network_error(server, stub_config, monkeypatch):
    monkeypatch.setenv("FSCALE_RETRIES", "0")
    server.script(mid("fast-a"), Behaviour(reply="a long streamed answer", cut_stream_after=1))
    exc, _ = asyncio.run(_chat("fast-a", stream=True))
    assert isinstance(exc, ProviderError) and exc.kind == "network"


def test_streaming_collects_content_and_reasoning(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="Answer: YES", reasoning_content="let me think"))
    pieces = []
    reply, _ = asyncio.run(_chat("fast-a", stream=True, on_delta=lambda c, r: pieces.append((c, r))))
    assert reply.content == "Answer: YES" and reply.reasoning == "let me think"
    assert len(pieces) >= 2


def test_api_key_is_sent_but_never_in_errors_or_state(server, fscale_home, monkeypatch):
    secret = "sk-test-SECRET-value-123"
    monkeypatch.setenv("STUB_KEY", secret)
    write_config(fscale_home, server, api_key_env="STUB_KEY")
    server.script(mid("fast-a"), Behaviour(status=410, error_body=json.dumps({"error": {"message": "gone"}})))
    server.script(mid("fast-b"), Behaviour(reply="YES"))
    proc = run_cli("scale", "q?", "-a", "YES,NO", "--models", "fast-a,fast-b", "--json")
    assert server.requests[0].headers["authorization"] == f"Bearer {secret}"
    assert secret not in proc.stdout and secret not in proc.stderr
    for path in fscale_home.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace")
    proc = run_cli("config", "show")
    assert secret not in proc.stdout and "STUB_KEY" in proc.stdout


def test_config_refuses_a_literal_key(server, fscale_home):
    (fscale_home / "config.toml").write_text('[providers.x]\nbase_url = "http://127.0.0.1:1/v1"\napi_key = "sk-1"\n')
    proc = run_cli("models")
    assert proc.returncode == 2 and "api_key_env" in proc.stderr and "sk-1" not in proc.stderr


@pytest.mark.xdist_group("serial")  # a rate-limit window
@pytest.mark.slow
def test_batch_of_200_respects_rpm_120_and_retries_429(server, fscale_home, tmp_path, monkeypatch):
    """Acceptance 4: a 200-item batch never exceeds rpm=120 at the server; a 429 with
    Retry-After is retried and not counted as a vote. The test-only window knob makes the
    limiter's minute last 4 s, so the same arithmetic runs in seconds instead of 107 s."""
    monkeypatch.setenv("FSCALE_RATE_WINDOW_S", "4")
    write_config(fscale_home, server, rpm=120, panels={"default": ["fast-a"]})
    server.script(mid("fast-a"), Behaviour(status=429, retry_after=0.5), Behaviour(reply="YES"))
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"q{i}", "question": f"question {i}?",
                                         "answers": ["YES", "NO"]}) + "\n" for i in range(200)))
    proc = run_cli("scale", "--batch", str(items), "-k", "1", timeout=400)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(lines) == 200 and all(x["answer"] == "YES" for x in lines)
    # Results keep input order; a batch item's own id is "item_id" ("id" is the call id).
    assert [x["item_id"] for x in lines] == [f"q{i}" for i in range(200)]
    assert [x["index"] for x in lines] == list(range(200))
    assert server.count() == 201  # one 429, retried
    assert server.max_in_window(4.0) <= 120
    first = lines[0]
    assert first["valid_votes"] == 1 and first["counts"] == {"YES": 1}
