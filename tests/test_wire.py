"""The wire: real loopback servers that misbehave the way real servers and proxies do.

Every case goes through ``ChatClient`` (httpx over aiohttp) against the scripted server in
tests/oai_server.py, and asserts on what the client returned and what the server recorded.
"""

from __future__ import annotations

import asyncio

import pytest

from fscale_tui.engine.wire.client import ChatClient

from fscale_tui.engine.base.calls import RequestCounter
from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.base.errors import ProviderError
from tests.conftest import Behaviour, mid, run_cli, write_config

SECRET = "opaque-Key-7f3a91c0d2e4b5"  # not shaped like any known key format


async def _calls(*aliases: str, **kw):
    """Ask each alias in turn on one client (so they share kept-alive connections)."""
    settings = load_settings()
    out = []
    async with ChatClient(settings) as client:
        for alias in aliases:
            counter = RequestCounter()
            try:
                reply = await client.chat(settings.models[alias], [{"role": "user", "content": "hi"}],
                                          counter=counter, **kw)
            except ProviderError as exc:
                reply = exc
            out.append((reply, counter))
    return out


def test_interim_1xx_responses_do_not_hand_one_reply_to_another(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="from A", informational=(100, 103)))
    server.script(mid("fast-b"), Behaviour(reply="from B", informational=(103,)))
    server.script(mid("fast-c"), Behaviour(reply="from C"))
    out = asyncio.run(_calls("fast-a", "fast-b", "fast-c", "fast-a"))
    assert [r.content for r, _ in out] == ["from A", "from B", "from C", "from A"]
    assert [c.sent for _, c in out] == [1, 1, 1, 1] and server.count() == 4


def test_chunked_body_with_trailers_leaves_nothing_on_the_connection(server, stub_config, monkeypatch):
    monkeypatch.setenv("FSCALE_TIMEOUT_FAST", "3")
    monkeypatch.setenv("FSCALE_RETRIES", "0")
    server.script(mid("fast-a"), Behaviour(reply="with trailers", trailers=True))
    server.script(mid("fast-b"), Behaviour(reply="next one"))
    opened = server.connections_opened
    out = asyncio.run(_calls("fast-a", "fast-b", "fast-a"))
    assert [r.content for r, _ in out] == ["with trailers", "next one", "with trailers"]
    # The trailers were consumed: the kept-alive connection carried all three requests.
    assert server.connections_opened - opened == 1


def test_bare_lf_line_endings_are_read(server, stub_config, monkeypatch):
    monkeypatch.setenv("FSCALE_TIMEOUT_FAST", "3")
    monkeypatch.setenv("FSCALE_RETRIES", "0")
    server.script(mid("fast-a"), Behaviour(reply="lf only", lf_only=True))
    server.script(mid("fast-b"), Behaviour(reply="crlf"))
    out = asyncio.run(_calls("fast-a", "fast-b"))
    assert [r.content for r, _ in out] == ["lf only", "crlf"]


def test_bad_content_length_is_a_network_error_not_a_crash(server, stub_config, monkeypatch):
    monkeypatch.setenv("FSCALE_RETRIES", "1")
    server.script(mid("fast-a"), Behaviour(reply="x", bad_content_length=True))
    server.script(mid("fast-b"), Behaviour(reply="fine"))
    (exc, counter), (ok, _) = asyncio.run(_calls("fast-a", "fast-b"))
    assert isinstance(exc, ProviderError) and exc.kind == "network" and "malformed" in str(exc)
    assert counter.sent == 2 == server.count(mid("fast-a"))  # retried once, counted
    assert ok.content == "fine"


def test_reset_of_a_reused_connection_is_resent_counted_and_limited(server, fscale_home, monkeypatch):
    write_config(fscale_home, server, rpm=600)
    server.script(mid("fast-a"), Behaviour(reply="one"), Behaviour(reset=True), Behaviour(reply="two"))
    opened = server.connections_opened
    (first, c1), (second, c2) = asyncio.run(_calls("fast-a", "fast-a"))
    assert first.content == "one" and second.content == "two" and second.attempts == 2
    # Every send the server saw is one the engine counted: no silent resend.
    assert c1.sent + c2.sent == 3 == server.count(mid("fast-a"))
    assert server.cancelled(mid("fast-a")) == 1
    assert server.connections_opened - opened == 2  # the reset one was a reused connection


def test_trickling_body_is_cut_at_the_call_deadline(server, stub_config, monkeypatch):
    monkeypatch.setenv("FSCALE_TIMEOUT_FAST", "1")
    monkeypatch.setenv("FSCALE_RETRIES", "0")
    # ~200 bytes at one byte per 50 ms: every read is quick, the whole reply takes ~10 s.
    server.script(mid("fast-a"), Behaviour(reply="slow " * 10, trickle=0.05))
    [(exc, counter)] = asyncio.run(_calls("fast-a"))
    assert isinstance(exc, ProviderError) and exc.kind == "timeout" and counter.sent == 1
    # The server saw the request abandoned (its connection closed mid-body).
    assert server.wait_until(lambda: server.cancelled(mid("fast-a")) == 1, timeout=5)


def test_trickling_stream_is_cut_at_the_call_deadline(server, stub_config, monkeypatch):
    monkeypatch.setenv("FSCALE_TIMEOUT_FAST", "1")
    monkeypatch.setenv("FSCALE_RETRIES", "0")
    server.script(mid("fast-a"), Behaviour(reply="a b c d e f g h i j k l", chunk_delay=0.4))
    [(exc, _)] = asyncio.run(_calls("fast-a", stream=True))
    assert isinstance(exc, ProviderError) and exc.kind == "timeout"
    assert server.wait_until(lambda: server.cancelled(mid("fast-a")) == 1, timeout=5)


@pytest.mark.parametrize("status", [401, 500])
@pytest.mark.parametrize("body", [None, "denied: {authorization}", "key {api_key} is not valid"])
def test_a_key_echoed_by_the_server_is_not_in_the_error(server, fscale_home, monkeypatch, status, body):
    monkeypatch.setenv("STUB_KEY", SECRET)
    monkeypatch.setenv("FSCALE_RETRIES", "0")
    write_config(fscale_home, server, api_key_env="STUB_KEY")
    server.script(mid("fast-a"), Behaviour(status=status, echo_auth=True, error_body=body))
    [(exc, _)] = asyncio.run(_calls("fast-a"))
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert isinstance(exc, ProviderError) and exc.status == status
    assert SECRET not in str(exc) and SECRET[:12] not in str(exc) and "[redacted]" in str(exc)


def test_a_key_echoed_by_the_server_reaches_no_output_or_file(server, fscale_home, monkeypatch):
    monkeypatch.setenv("STUB_KEY", SECRET)
    write_config(fscale_home, server, api_key_env="STUB_KEY")
    server.script(mid("fast-a"), Behaviour(status=401, error_body="bad key {api_key}"))
    server.script(mid("fast-b"), Behaviour(status=500, echo_auth=True))
    server.script(mid("slow-c"), Behaviour(reply="YES"))
    proc = run_cli("scale", "q?", "-a", "YES,NO", "--json")
    assert server.count(mid("fast-b")) >= 1 and server.count(mid("fast-a")) == 1
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert "[redacted]" in proc.stdout + proc.stderr
    for path in fscale_home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_key_with_a_line_break_is_refused_not_sent_as_an_extra_header(server, fscale_home, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "sk-good-value-123\r\nX-Injected: yes")
    write_config(fscale_home, server, api_key_env="STUB_KEY")
    [(exc, counter)] = asyncio.run(_calls("fast-a"))
    assert isinstance(exc, ProviderError) and exc.kind == "auth" and "STUB_KEY" in str(exc)
    assert "sk-good-value" not in str(exc) and "X-Injected" not in str(exc)
    assert counter.sent == 0 and server.count() == 0


async def test_a_get_on_a_reset_reused_connection_is_not_resent_behind_our_back(fscale_home):
    """aiohttp resends idempotent requests once when a kept-alive connection was dropped; that
    send would skip the limiter. A raw server answers the first GET, then drops the connection
    when the second arrives on it: the client reports it instead of resending silently."""
    seen = {"requests": 0, "connections": 0}

    async def on_conn(reader, writer):
        seen["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen["requests"] += 1
                if seen["requests"] > 1:
                    return  # drop it without answering
                body = b'{"object": "list", "data": [{"id": "m1"}]}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                             % (len(body), body))
                await writer.drain()
                del head
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    (fscale_home / "config.toml").write_text(
        f'[providers.raw]\nbase_url = "http://127.0.0.1:{port}/v1"\n')
    async with srv:
        async with ChatClient(load_settings()) as client:
            assert await client.list_models("raw") == ["m1"]
            with pytest.raises(ProviderError) as err:
                await client.list_models("raw")
    assert err.value.kind == "network"
    assert seen == {"requests": 2, "connections": 1}
