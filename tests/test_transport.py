"""The lean HTTP/1.1 transport against raw servers that misbehave in the ways real ones do."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fscale_tui.engine.transport import FastHTTP1Transport


async def _serve(handler):
    """A raw TCP server on loopback; ``handler(reader, writer, n)`` answers connection n."""
    count = {"n": 0}

    async def on_conn(reader, writer):
        count["n"] += 1
        try:
            await handler(reader, writer, count["n"])
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", count


async def _read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")]
    if length:
        await reader.readexactly(length[0])
    return head


async def test_idle_connection_closed_by_server_is_retried_on_a_fresh_one():
    async def handler(reader, writer, n):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # ...then close without saying so (an idle timeout on the server side).

    server, base, count = await _serve(handler)
    async with server, httpx.AsyncClient(transport=FastHTTP1Transport()) as client:
        r1 = await client.post(base + "/x", content=b"{}")
        await asyncio.sleep(0.05)
        r2 = await client.post(base + "/x", content=b"{}")
    assert r1.text == r2.text == "ok" and count["n"] == 2


async def test_close_delimited_and_chunked_bodies():
    async def handler(reader, writer, n):
        await _read_request(reader)
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            await writer.drain()
            await _read_request(reader)  # the same connection is reused
            writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
        await writer.drain()

    server, base, count = await _serve(handler)
    async with server, httpx.AsyncClient(transport=FastHTTP1Transport()) as client:
        assert (await client.get(base + "/a")).text == "abcde"
        assert (await client.get(base + "/b")).text == "until close"
    assert count["n"] == 1


async def test_truncated_body_is_a_protocol_error_and_cancel_closes_the_connection():
    closed = asyncio.Event()

    async def handler(reader, writer, n):
        await _read_request(reader)
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await writer.drain()
            return
        # connection 2: never answer; notice when the client goes away
        if await reader.read(1) == b"":
            closed.set()

    server, base, _ = await _serve(handler)
    async with server, httpx.AsyncClient(transport=FastHTTP1Transport()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(base + "/a")
        task = asyncio.create_task(client.get(base + "/b"))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.wait_for(closed.wait(), 2)


async def test_connect_error_and_read_timeout_map_to_httpx_errors():
    async with httpx.AsyncClient(transport=FastHTTP1Transport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:1/x")

    async def handler(reader, writer, n):
        await _read_request(reader)
        await asyncio.sleep(2)

    server, base, _ = await _serve(handler)
    async with server, httpx.AsyncClient(transport=FastHTTP1Transport(), timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(base + "/slow")


async def test_non_http_schemes_go_to_the_fallback_transport():
    seen = []

    class Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            seen.append(str(request.url))
            return httpx.Response(200, text="fallback")

    async with httpx.AsyncClient(transport=FastHTTP1Transport(Recording())) as client:
        r = await client.get("https://example.invalid/v1/models")
    assert r.text == "fallback" and seen == ["https://example.invalid/v1/models"]
