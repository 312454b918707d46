"""A lean HTTP/1.1 keep-alive transport for plain ``http://`` endpoints.

The shared ``httpx.AsyncClient`` mounts this for ``http://`` URLs (the embedded local models,
llama.cpp/vLLM/Ollama servers on the LAN, the loopback test server) and keeps httpx's own
transport for everything else (``https://`` providers, proxies). Why: httpcore's pool spends
O(connections) work on every request and event, which dominates when replies come back in
milliseconds (measured in bench/overhead.py: it caps a zero-latency batch well below the
engine's own cost). Remote providers are latency- and rate-limit-bound, so they are left alone.

It speaks only what the chat API needs: a request with a ``Content-Length`` body, and responses
framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or connection close. A cancelled
request closes its connection (the server sees it go), and a request sent on an idle
connection the server had already closed is retried once on a fresh one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

MAX_IDLE_PER_HOST = 32
_HEAD_LIMIT = 64 * 1024


class _Conn:
    __slots__ = ("reader", "writer", "reused")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False

    def close(self) -> None:
        self.writer.close()


class _ConnectionGone(Exception):
    """The server closed an idle keep-alive connection before answering on it."""


def _timeout(request: httpx.Request, which: str) -> float | None:
    return (request.extensions.get("timeout") or {}).get(which)


class _Body(httpx.AsyncByteStream):
    """The response body; the connection goes back to the pool once it is read to the end."""

    def __init__(self, transport: "FastHTTP1Transport", key: tuple[str, int], conn: _Conn,
                 length: int | None, chunked: bool, keep_alive: bool, read_timeout: float | None) -> None:
        self._t = transport
        self._key = key
        self._conn: _Conn | None = conn
        self._length = length
        self._chunked = chunked
        self._keep = keep_alive
        self._timeout = read_timeout

    async def _read(self, coro):  # type: ignore[no-untyped-def]
        try:
            async with asyncio.timeout(self._timeout):
                return await coro
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the response body") from None
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError("the server closed the connection mid-response") from None
        except (ConnectionError, OSError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        reader = conn.reader
        try:
            if self._chunked:
                while True:
                    line = await self._read(reader.readuntil(b"\r\n"))
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        await self._read(reader.readuntil(b"\r\n"))  # trailer end
                        break
                    data = await self._read(reader.readexactly(size + 2))
                    yield data[:-2]
            elif self._length is not None:
                remaining = self._length
                while remaining > 0:
                    data = await self._read(reader.read(min(remaining, 65536)))
                    if not data:
                        raise httpx.RemoteProtocolError("the server closed the connection mid-response")
                    remaining -= len(data)
                    yield data
            else:  # delimited by connection close
                self._keep = False
                while True:
                    data = await self._read(reader.read(65536))
                    if not data:
                        break
                    yield data
        except BaseException:
            self._release(reusable=False)
            raise
        self._release(reusable=self._keep)

    def _release(self, reusable: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if reusable:
            self._t._checkin(self._key, conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        # Closed before the end (e.g. an abandoned stream): the connection cannot be reused.
        self._release(reusable=False)


class FastHTTP1Transport(httpx.AsyncBaseTransport):
    """``http://`` requests on pooled asyncio connections; anything else goes to ``fallback``."""

    def __init__(self, fallback: httpx.AsyncBaseTransport | None = None) -> None:
        self._fallback = fallback or httpx.AsyncHTTPTransport()
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    def _checkin(self, key: tuple[str, int], conn: _Conn) -> None:
        pool = self._idle.setdefault(key, [])
        if len(pool) < MAX_IDLE_PER_HOST and not conn.writer.is_closing():
            conn.reused = True
            pool.append(conn)
        else:
            conn.close()

    def _checkout(self, key: tuple[str, int]) -> _Conn | None:
        pool = self._idle.get(key)
        while pool:
            conn = pool.pop()
            if not conn.writer.is_closing() and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    async def _open(self, key: tuple[str, int], request: httpx.Request) -> _Conn:
        try:
            async with asyncio.timeout(_timeout(request, "connect")):
                reader, writer = await asyncio.open_connection(key[0], key[1], limit=_HEAD_LIMIT * 4)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"could not connect to {key[0]}:{key[1]} in time") from None
        except OSError as exc:
            raise httpx.ConnectError(f"could not connect to {key[0]}:{key[1]}: {exc.strerror or exc}") from None
        return _Conn(reader, writer)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            return await self._fallback.handle_async_request(request)
        key = (url.host, url.port or 80)
        body = await request.aread()
        head = [f"{request.method} {url.raw_path.decode('ascii')} HTTP/1.1\r\n".encode("ascii")]
        for name, value in request.headers.raw:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"\r\n")
        payload = b"".join(head) + body
        for attempt in (1, 2):
            conn = self._checkout(key) or await self._open(key, request)
            try:
                return await self._exchange(key, conn, payload, request)
            except _ConnectionGone:
                conn.close()
                if attempt == 2:
                    raise httpx.RemoteProtocolError("the server closed the connection without a response") from None
            except BaseException:
                # Cancellation (early decision, Esc) or an error: the connection is closed, so
                # the server sees the request abandoned.
                conn.close()
                raise
        raise AssertionError("unreachable")

    async def _exchange(self, key: tuple[str, int], conn: _Conn, payload: bytes,
                        request: httpx.Request) -> httpx.Response:
        reused = conn.reused
        try:
            conn.writer.write(payload)
            async with asyncio.timeout(_timeout(request, "read")):
                await conn.writer.drain()
                head = await conn.reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise httpx.ReadTimeout("no response in time") from None
        except asyncio.IncompleteReadError as exc:
            if reused and not exc.partial:
                raise _ConnectionGone from None
            raise httpx.RemoteProtocolError("the server closed the connection without a response") from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError("the response head is too large") from None
        except (ConnectionError, OSError) as exc:
            if reused:
                raise _ConnectionGone from None
            raise httpx.ReadError(str(exc) or type(exc).__name__) from None
        lines = head[:-4].split(b"\r\n")
        try:
            version, status_text = lines[0].split(b" ", 2)[:2]
            status = int(status_text)
        except ValueError:
            raise httpx.RemoteProtocolError("malformed status line") from None
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        keep_alive = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip(), value.strip()
            headers.append((name, value))
            lname = name.lower()
            if lname == b"content-length":
                length = int(value)
            elif lname == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lname == b"connection":
                keep_alive = value.lower() != b"close" and (keep_alive or value.lower() == b"keep-alive")
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            length = 0
        stream = _Body(self, key, conn, None if chunked else length, chunked, keep_alive,
                       _timeout(request, "read"))
        return httpx.Response(status, headers=headers, stream=stream,
                              extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()
        await self._fallback.aclose()
