"""A scripted, in-process OpenAI chat-completions server for tests and benchmarks.

The server is a real HTTP/1.1 server bound to 127.0.0.1, written on raw
``asyncio`` (a ``Protocol`` with a hand-written HTTP parser, no third-party
dependencies).  Its event loop runs in a background daemon thread so that
synchronous tests -- and CLI subprocesses started by the tests -- can reach it
by port::

    with StubOpenAIServer() as srv:
        srv.script("model-a", Behaviour(reply="YES"), Behaviour(status=429, retry_after=1))
        ...  # point the product at srv.base_url

Endpoints
---------
``POST /v1/chat/completions``  scripted per model (see :class:`Behaviour`)
``GET  /v1/models``            OpenAI-style model list
``GET  /health``               200 ``{"status": "ok"}``
anything else                  404 (405 for a known path with the wrong method)

Extra control endpoints (not recorded as requests), handy when the server runs
in another process (``python -m tests.oai_server``):

``GET  /_stub/stats``   ``{"total": n, "models": {id: {"count": c, "cancelled": k}}, "connections_opened": n}``
``POST /_stub/reset``   same as :meth:`StubOpenAIServer.reset`
``POST /_stub/script``  body in the script.json format (see ``main``); merges

Standalone::

    python -m tests.oai_server --port 0 --script script.json

prints ``READY http://127.0.0.1:PORT/v1`` on one stdout line and serves until
SIGTERM/SIGINT.  ``script.json`` maps model id -> dict of Behaviour fields (or
a list of them); optional keys ``"__default__"`` (a Behaviour dict) and
``"__models__"`` (list of ids for ``GET /v1/models``).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import http
import itertools
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

__all__ = ["Behaviour", "RequestRecord", "StubOpenAIServer", "behaviour_from_dict"]

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
HEALTH_PATH = "/health"

_MAX_HEADER_BYTES = 64 * 1024


# --------------------------------------------------------------------------- #
# Public data types
# --------------------------------------------------------------------------- #


@dataclass
class Behaviour:
    reply: str = "YES"  # content of the assistant message
    latency: float = 0.0  # seconds before the response starts (server-side sleep)
    status: int = 200  # e.g. 404, 410, 429, 500, 503
    retry_after: float | None = None  # Retry-After header (seconds) on non-200 replies
    reasoning_content: str | None = None  # message.reasoning_content / delta.reasoning_content
    reasoning: str | None = None  # message.reasoning / delta.reasoning
    null_content: bool = False  # message.content = null
    malformed: bool = False  # 200 with a body that is not valid JSON
    cut_stream_after: int | None = None  # streaming: send N SSE chunks then drop the connection
    chunk_delay: float = 0.0  # streaming: sleep between chunks
    reply_fn: Callable[[dict], str] | None = None  # compute the reply from the request body
    usage: bool = True  # include usage {prompt_tokens, completion_tokens, total_tokens}
    error_body: str | None = None  # body for non-200 replies; "{authorization}" / "{api_key}" echo the request's
    # -- wire faults (non-streaming replies), as real servers and proxies produce them -- #
    informational: tuple[int, ...] = ()  # interim 1xx responses sent before the final one, e.g. (100, 103)
    trailers: bool = False  # send the body chunked, ending with trailer fields
    lf_only: bool = False  # end the status line and header lines with a bare LF
    bad_content_length: bool = False  # "Content-Length: abc" (body follows, then the connection closes)
    reset: bool = False  # abort the connection (RST) on receiving the request, without answering
    trickle: float | None = None  # send the body one byte at a time, this many seconds apart
    echo_auth: bool = False  # the error message quotes the request's Authorization header


@dataclass
class RequestRecord:
    model: str
    path: str
    method: str
    body: dict | None  # parsed JSON body (None if not JSON)
    headers: dict[str, str]  # lower-cased names
    t_start: float  # time.monotonic() when the request was fully read
    t_end: float | None  # when the response was fully written (None if never)
    status: int
    cancelled: bool  # client closed the connection before the response was complete
    stream: bool


_BEHAVIOUR_FIELDS = {f.name for f in dataclasses.fields(Behaviour)}


def behaviour_from_dict(d: dict | Behaviour) -> Behaviour:
    """Build a :class:`Behaviour` from a JSON-ish dict (unknown keys are an error)."""
    if isinstance(d, Behaviour):
        return d
    if not isinstance(d, dict):
        raise TypeError(f"behaviour must be an object, got {type(d).__name__}")
    unknown = set(d) - _BEHAVIOUR_FIELDS - {"reply_fn"}
    if unknown:
        raise ValueError(f"unknown Behaviour field(s): {sorted(unknown)}")
    if "reply_fn" in d and d["reply_fn"] is not None:
        raise ValueError("reply_fn cannot be given in a JSON script")
    return Behaviour(**d)


def _behaviours_from_json(v: Any) -> list[Behaviour]:
    if isinstance(v, list):
        if not v:
            raise ValueError("empty behaviour list")
        return [behaviour_from_dict(x) for x in v]
    return [behaviour_from_dict(v)]


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #

_REASONS: dict[int, str] = {s.value: s.phrase for s in http.HTTPStatus}
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_ids = itertools.count(1)
_ID_PREFIX = "chatcmpl-stub%06x" % (os.getpid() & 0xFFFFFF)


def _fmt_retry_after(v: float) -> str:
    if float(v).is_integer():
        return str(int(v))
    return f"{float(v):g}"


def _error_json(status: int, message: str, type_: str | None = None, code: Any = None) -> bytes:
    if type_ is None:
        type_ = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            429: "rate_limit_exceeded",
        }.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return _dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code if code is not None else status}}
    ).encode()


def _approx_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


def _prompt_tokens(body: dict) -> int:
    n = 0
    msgs = body.get("messages")
    if isinstance(msgs, list):
        for m in msgs:
            if isinstance(m, dict):
                c = m.get("content")
                if isinstance(c, str):
                    n += _approx_tokens(c)
                elif c is not None:
                    n += _approx_tokens(json.dumps(c))
                n += 3
    return max(1, n)


def _split(text: str, parts: int = 3) -> list[str]:
    if not text:
        return [text]
    parts = max(1, min(parts, len(text)))
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


class _BadRequest(Exception):
    pass


@dataclass
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


# --------------------------------------------------------------------------- #
# Connection protocol
# --------------------------------------------------------------------------- #


class _Conn(asyncio.Protocol):
    __slots__ = (
        "srv",
        "loop",
        "transport",
        "buf",
        "busy",
        "closed",
        "_waiter",
        "_sent_continue",
        "_head",
        "task",
    )

    def __init__(self, srv: "StubOpenAIServer", loop: asyncio.AbstractEventLoop) -> None:
        self.srv = srv
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False  # a request is being answered by a task
        self.closed = False  # peer closed (EOF / reset) or we closed
        self._waiter: asyncio.Future | None = None
        self._sent_continue = False
        self._head: tuple | None = None  # parsed head of a request whose body is incomplete
        self.task: asyncio.Task | None = None

    # -- asyncio callbacks -------------------------------------------------- #
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.srv._conns.add(self)
        self.srv._connections_opened += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()

    def eof_received(self) -> bool:
        # The client half- or fully-closed: treat it as "went away".
        self._mark_closed()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._mark_closed()
        self.srv._conns.discard(self)

    # -- internals ---------------------------------------------------------- #
    def _mark_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(False)

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def _sleep(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; return False early if the peer goes away."""
        if self.closed:
            return False
        if delay <= 0:
            return True
        w = self.loop.create_future()
        self._waiter = w
        h = self.loop.call_later(delay, _resolve_true, w)
        try:
            return await w
        finally:
            h.cancel()
            self._waiter = None

    def _process(self) -> None:
        while not self.busy and not self.closed and self.buf:
            try:
                req = self._parse()
            except _BadRequest as e:
                self._write_simple(400, _error_json(400, f"bad request: {e}"), keep_alive=False)
                self._close()
                return
            if req is None:
                return
            self._sent_continue = False
            self.srv._dispatch(self, req)

    def _parse(self) -> _Request | None:
        buf = self.buf
        head = self._head
        if head is None:
            # tolerate stray CRLFs between requests
            while buf[:2] == b"\r\n":
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEADER_BYTES:
                    raise _BadRequest("headers too large")
                return None
            head = self._head = _parse_head(bytes(buf[:end]).decode("latin-1"), end + 4)
        method, target, version, headers, body_start, n = head
        if n < 0:  # chunked request body
            res = _parse_chunked(buf, body_start)
            if res is None:
                self._maybe_continue(headers, version)
                return None
            body, consumed = res
        else:
            if len(buf) < body_start + n:
                self._maybe_continue(headers, version)
                return None
            body = bytes(buf[body_start : body_start + n])
            consumed = body_start + n
        del buf[:consumed]
        self._head = None
        conn = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            keep_alive = "keep-alive" in conn
        else:
            keep_alive = "close" not in conn
        if target.startswith(("http://", "https://")):  # absolute-form
            target = urlsplit(target).path or "/"
        path = target.split("?", 1)[0]
        return _Request(method.upper(), path, version, headers, body, keep_alive)

    def _maybe_continue(self, headers: dict[str, str], version: str) -> None:
        if (
            not self._sent_continue
            and version == "HTTP/1.1"
            and headers.get("expect", "").lower() == "100-continue"
            and self.transport is not None
        ):
            self._sent_continue = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _write_simple(
        self,
        status: int,
        body: bytes,
        keep_alive: bool,
        content_type: str = "application/json",
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        if self.transport is None or self.closed:
            return
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
        ]
        if extra:
            head.extend(f"{k}: {v}" for k, v in extra)
        if not keep_alive:
            head.append("Connection: close")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        if not keep_alive:
            self._close()


def _parse_head(head: str, body_start: int) -> tuple:
    """Parse request line + headers. Returns (method, target, version, headers,
    body_start, content_length) with content_length -1 for a chunked body."""
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest("malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest("malformed header line")
        name = name.strip().lower()
        value = value.strip()
        if name in headers:
            headers[name] = headers[name] + ", " + value
        else:
            headers[name] = value
    if "chunked" in headers.get("transfer-encoding", "").lower():
        n = -1
    else:
        cl = headers.get("content-length")
        try:
            n = int(cl) if cl else 0
        except ValueError:
            raise _BadRequest("bad content-length") from None
        if n < 0:
            raise _BadRequest("bad content-length")
    return method, target, version, headers, body_start, n


def _resolve_true(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(True)


def _parse_chunked(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_s = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_s, 16)
        except ValueError:
            raise _BadRequest("bad chunk size") from None
        pos = eol + 2
        if size == 0:
            # skip trailers until empty line
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return bytes(out), eol + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos : pos + size]
        pos += size + 2


# --------------------------------------------------------------------------- #
# The server
# --------------------------------------------------------------------------- #


class StubOpenAIServer:
    """Scripted OpenAI chat-completions server running on a background loop thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, models: list[str] | None = None,
                 tls: Any = None) -> None:
        self.host = host
        #: An ``ssl.SSLContext`` to serve HTTPS with (``base_url`` is then ``https://``).
        self.tls = tls
        self.port = port
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Behaviour]] = {}
        self._counters: dict[str, int] = {}
        self._default = Behaviour()
        self._initial_models: list[str] | None = list(models) if models is not None else None
        self._models: list[str] | None = self._initial_models
        self._records: list[RequestRecord] = []
        self._conns: set[_Conn] = set()
        self._connections_opened = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------ #
    def start(self) -> "StubOpenAIServer":
        if self._thread is not None:
            return self
        self._stopping = False
        loop = asyncio.new_event_loop()
        self._loop = loop
        t = threading.Thread(target=self._run_loop, args=(loop,), name="StubOpenAIServer", daemon=True)
        self._thread = t
        t.start()
        fut = asyncio.run_coroutine_threadsafe(self._bind(), loop)
        try:
            fut.result(timeout=10)
        except BaseException:
            self._halt_loop()
            raise
        return self

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                loop.close()

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Conn(self, loop), self.host, self.port, backlog=2048, reuse_address=True,
            ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            if c.task is not None and not c.task.done():
                c.task.cancel()
            if c.transport is not None:
                c.transport.abort()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except (asyncio.TimeoutError, Exception):
                pass
        self._server = None

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._stopping = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
        except Exception:
            pass
        self._halt_loop()

    def _halt_loop(self) -> None:
        loop, t = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
        if t is not None:
            t.join(timeout=5)
        self._loop = None
        self._thread = None

    def __enter__(self) -> "StubOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/v1"

    @property
    def connections_opened(self) -> int:
        """Number of TCP connections accepted since start (extra, for keep-alive checks)."""
        return self._connections_opened

    # -- scripting -------------------------------------------------------------- #
    def script(self, model: str, *behaviours: Behaviour) -> None:
        if not behaviours:
            raise ValueError("script() needs at least one Behaviour")
        bs = [behaviour_from_dict(b) for b in behaviours]
        with self._lock:
            self._scripts[model] = bs
            self._counters[model] = 0

    def set_default(self, behaviour: Behaviour) -> None:
        with self._lock:
            self._default = behaviour_from_dict(behaviour)

    def reset(self) -> None:
        """Clear scripts, the default behaviour, records and per-model counters; the
        /v1/models list goes back to what the constructor was given."""
        with self._lock:
            self._models = self._initial_models
            self._scripts.clear()
            self._counters.clear()
            self._default = Behaviour()
            self._records.clear()

    def set_models(self, ids: list[str] | None) -> None:
        """Ids listed by GET /v1/models; ``None`` = the scripted model ids (default)."""
        with self._lock:
            self._models = list(ids) if ids is not None else None

    def load_script(self, data: dict) -> None:
        """Apply a script.json-style mapping (model -> behaviour dict or list)."""
        for key, val in data.items():
            if key == "__default__":
                self.set_default(behaviour_from_dict(val))
            elif key == "__models__":
                self.set_models([str(x) for x in val])
            else:
                self.script(key, *_behaviours_from_json(val))

    # -- inspection ------------------------------------------------------------- #
    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return [copy.copy(r) for r in self._records]

    def count(self, model: str | None = None, path: str = CHAT_PATH) -> int:
        with self._lock:
            return sum(1 for r in self._records if r.path == path and (model is None or r.model == model))

    def cancelled(self, model: str) -> int:
        with self._lock:
            return sum(1 for r in self._records if r.model == model and r.cancelled)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def max_in_window(self, window_s: float = 60.0, model: str | None = None) -> int:
        """Largest number of chat requests whose t_start fall in a half-open window
        ``[t, t + window_s)`` of that length."""
        with self._lock:
            ts = sorted(
                r.t_start for r in self._records if r.path == CHAT_PATH and (model is None or r.model == model)
            )
        best = 0
        i = 0
        for j, t in enumerate(ts):
            while t - ts[i] >= window_s:
                i += 1
            best = max(best, j - i + 1)
        return best

    def _stats(self) -> dict:
        with self._lock:
            models: dict[str, dict[str, int]] = {}
            total = 0
            for r in self._records:
                if r.path != CHAT_PATH:
                    continue
                total += 1
                m = models.setdefault(r.model, {"count": 0, "cancelled": 0})
                m["count"] += 1
                if r.cancelled:
                    m["cancelled"] += 1
        return {"total": total, "models": models, "connections_opened": self._connections_opened}

    # -- request handling (loop thread) ---------------------------------------- #
    def _next_behaviour(self, model: str) -> Behaviour:
        with self._lock:
            bs = self._scripts.get(model)
            if not bs:
                return self._default
            i = self._counters.get(model, 0)
            self._counters[model] = i + 1
            return bs[i] if i < len(bs) else bs[-1]

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self._records.append(rec)

    def _finish(self, rec: RequestRecord, *, cancelled: bool = False, status: int | None = None) -> None:
        # Called right *before* the final (synchronous, non-blocking) transport.write so
        # that a client which has just received the response always sees t_end set.
        with self._lock:
            if status is not None:
                rec.status = status
            if cancelled:
                rec.cancelled = True
                rec.t_end = None
            else:
                rec.t_end = time.monotonic()

    def _dispatch(self, conn: _Conn, req: _Request) -> None:
        t_start = time.monotonic()
        path, method = req.path, req.method

        if path == CHAT_PATH:
            if method != "POST":
                self._simple_recorded(conn, req, t_start, 405, _error_json(405, "method not allowed"))
                return
            self._chat(conn, req, t_start)
            return

        if path == MODELS_PATH:
            if method != "GET":
                self._simple_recorded(conn, req, t_start, 405, _error_json(405, "method not allowed"))
                return
            with self._lock:
                ids = list(self._models) if self._models is not None else list(self._scripts)
            body = _dumps(
                {
                    "object": "list",
                    "data": [{"id": i, "object": "model", "created": 0, "owned_by": "stub"} for i in ids],
                }
            ).encode()
            self._simple_recorded(conn, req, t_start, 200, body)
            return

        if path == HEALTH_PATH:
            self._simple_recorded(conn, req, t_start, 200, b'{"status":"ok"}')
            return

        if path.startswith("/_stub/"):
            self._control(conn, req)
            return

        self._simple_recorded(conn, req, t_start, 404, _error_json(404, f"unknown path {path}"))

    def _simple_recorded(self, conn: _Conn, req: _Request, t_start: float, status: int, body: bytes) -> None:
        rec = RequestRecord(
            model="",
            path=req.path,
            method=req.method,
            body=_json_object(req.body),
            headers=req.headers,
            t_start=t_start,
            t_end=None,
            status=status,
            cancelled=False,
            stream=False,
        )
        self._record(rec)
        self._finish(rec)
        conn._write_simple(status, body, req.keep_alive)

    def _control(self, conn: _Conn, req: _Request) -> None:
        ka = req.keep_alive
        try:
            if req.path == "/_stub/stats" and req.method == "GET":
                conn._write_simple(200, _dumps(self._stats()).encode(), ka)
            elif req.path == "/_stub/reset" and req.method == "POST":
                self.reset()
                conn._write_simple(200, b'{"ok":true}', ka)
            elif req.path == "/_stub/script" and req.method == "POST":
                data = json.loads(req.body or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("script must be a JSON object")
                self.load_script(data)
                conn._write_simple(200, b'{"ok":true}', ka)
            else:
                conn._write_simple(404, _error_json(404, f"unknown path {req.path}"), ka)
        except Exception as e:  # noqa: BLE001
            conn._write_simple(400, _error_json(400, f"{type(e).__name__}: {e}"), ka)

    def _chat(self, conn: _Conn, req: _Request, t_start: float) -> None:
        body = _try_json(req.body)
        model = body.get("model") if isinstance(body, dict) else None
        stream = bool(body.get("stream")) if isinstance(body, dict) else False
        rec = RequestRecord(
            model=model if isinstance(model, str) else "",
            path=req.path,
            method=req.method,
            body=body if isinstance(body, dict) else None,
            headers=req.headers,
            t_start=t_start,
            t_end=None,
            status=200,
            cancelled=False,
            stream=stream,
        )
        if not isinstance(body, dict) or not isinstance(model, str) or not model:
            rec.status = 400
            self._record(rec)
            msg = "request body is not a JSON object" if not isinstance(body, dict) else "missing 'model'"
            self._finish(rec)
            conn._write_simple(400, _error_json(400, msg), req.keep_alive)
            return

        beh = self._next_behaviour(model)
        rec.status = beh.status
        self._record(rec)

        if beh.reset:
            # Drop the connection with a RST, as a server or proxy does with a kept-alive
            # connection it has timed out: the request was sent but is never answered.
            self._finish(rec, cancelled=True)
            conn.closed = True
            if conn.transport is not None:
                conn.transport.abort()
            return

        if beh.latency <= 0 and beh.trickle is None and not (stream and beh.status == 200):
            # Fast path: answer synchronously inside data_received.
            self._respond_plain(conn, req, rec, beh, body)
            return

        conn.busy = True
        conn.task = asyncio.get_running_loop().create_task(self._respond_async(conn, req, rec, beh, body))

    async def _respond_async(self, conn: _Conn, req: _Request, rec: RequestRecord, beh: Behaviour, body: dict) -> None:
        try:
            if not await conn._sleep(beh.latency):
                if not self._stopping:
                    self._finish(rec, cancelled=True)
                return
            if rec.stream and beh.status == 200:
                await self._respond_stream(conn, req, rec, beh, body)
            else:
                trickle = self._respond_plain(conn, req, rec, beh, body)
                if trickle is not None:
                    await trickle
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 -- never kill the loop
            if not conn.closed:
                self._finish(rec, status=500)
                conn._write_simple(500, _error_json(500, f"stub internal error: {e!r}"), False)
        finally:
            conn.busy = False
            conn.task = None
            if not conn.closed and conn.buf:
                conn.loop.call_soon(conn._process)

    # -- response builders ------------------------------------------------------- #
    def _reply_text(self, beh: Behaviour, body: dict) -> str:
        if beh.reply_fn is not None:
            r = beh.reply_fn(body)
            return r if isinstance(r, str) else str(r)
        return beh.reply

    def _respond_plain(self, conn: _Conn, req: _Request, rec: RequestRecord, beh: Behaviour, body: dict) -> Any:
        if conn.closed:
            if not self._stopping:
                self._finish(rec, cancelled=True)
            return
        status = beh.status
        extra: list[tuple[str, str]] = []
        if status != 200:
            if beh.retry_after is not None:
                extra.append(("Retry-After", _fmt_retry_after(beh.retry_after)))
            auth = req.headers.get("authorization", "")
            if beh.error_body is not None:
                payload = (beh.error_body.replace("{authorization}", auth)
                           .replace("{api_key}", auth.removeprefix("Bearer ")).encode())
            elif beh.echo_auth:  # like servers that quote the credentials they refused
                payload = _error_json(status, f"invalid credentials: Authorization: {auth} "
                                              f"(key {auth.split()[-1] if auth else ''})")
            else:
                payload = _error_json(status, f"stub error {status} for model {rec.model}")
            self._finish(rec)
            self._write_final(conn, req, beh, status, payload, extra)
            return
        if beh.malformed:
            payload = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "mess'
            self._finish(rec)
            conn._write_simple(200, payload, req.keep_alive)
            return
        try:
            text = self._reply_text(beh, body)
        except Exception as e:  # noqa: BLE001
            self._finish(rec, status=500)
            conn._write_simple(500, _error_json(500, f"reply_fn raised {e!r}"), req.keep_alive)
            return
        msg: dict[str, Any] = {"role": "assistant", "content": None if beh.null_content else text}
        if beh.reasoning_content is not None:
            msg["reasoning_content"] = beh.reasoning_content
        if beh.reasoning is not None:
            msg["reasoning"] = beh.reasoning
        obj: dict[str, Any] = {
            "id": f"{_ID_PREFIX}{next(_ids):08x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": rec.model,
            "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": "stop"}],
        }
        if beh.usage:
            obj["usage"] = _usage(body, "" if beh.null_content else text, beh)
        payload = _dumps(obj).encode()
        if beh.trickle is not None:  # only reached from _respond_async, which awaits it
            return self._trickle(conn, req, rec, beh, payload)
        self._finish(rec)
        self._write_final(conn, req, beh, 200, payload, [])

    def _write_final(self, conn: _Conn, req: _Request, beh: Behaviour, status: int, payload: bytes,
                     extra: list[tuple[str, str]]) -> None:
        """The final response, with the wire faults the behaviour asks for."""
        tr = conn.transport
        if tr is None or conn.closed:
            return
        for code in beh.informational:
            interim = f"HTTP/1.1 {code} {_REASONS.get(code, 'Informational')}\r\n"
            if code == 103:
                interim += "Link: </style.css>; rel=preload; as=style\r\n"
            tr.write((interim + "\r\n").encode("latin-1"))
        if not (beh.trailers or beh.lf_only or beh.bad_content_length):
            conn._write_simple(status, payload, req.keep_alive, extra=extra)
            return
        keep_alive = req.keep_alive and not beh.bad_content_length
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", "Content-Type: application/json"]
        head.extend(f"{k}: {v}" for k, v in extra)
        if beh.trailers:
            head += ["Transfer-Encoding: chunked", "Trailer: X-Checksum, X-Served-By"]
            body = b"%x\r\n%b\r\n0\r\nX-Checksum: 0123abcd\r\nX-Served-By: stub\r\n\r\n" % (len(payload), payload)
        elif beh.bad_content_length:
            head.append("Content-Length: abc")
            body = payload
        else:
            head.append(f"Content-Length: {len(payload)}")
            body = payload
        if not keep_alive:
            head.append("Connection: close")
        eol = "\n" if beh.lf_only else "\r\n"
        tr.write((eol.join(head) + eol + eol).encode("latin-1") + body)
        if not keep_alive:
            conn._close()

    async def _trickle(self, conn: _Conn, req: _Request, rec: RequestRecord, beh: Behaviour, payload: bytes) -> None:
        """A 200 whose body arrives one byte at a time (``beh.trickle`` seconds apart)."""
        tr = conn.transport
        if tr is None or conn.closed:
            self._finish(rec, cancelled=True)
            return
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        tr.write(head.encode("latin-1"))
        for i in range(len(payload)):
            if i and not await conn._sleep(beh.trickle or 0.0):
                if not self._stopping:
                    self._finish(rec, cancelled=True)
                return
            if i == len(payload) - 1:
                self._finish(rec)
            tr.write(payload[i : i + 1])
        if not req.keep_alive:
            conn._close()

    async def _respond_stream(self, conn: _Conn, req: _Request, rec: RequestRecord, beh: Behaviour, body: dict) -> None:
        tr = conn.transport
        if conn.closed or tr is None:
            if not self._stopping:
                self._finish(rec, cancelled=True)
            return
        try:
            text = self._reply_text(beh, body)
        except Exception as e:  # noqa: BLE001
            self._finish(rec, status=500)
            conn._write_simple(500, _error_json(500, f"reply_fn raised {e!r}"), req.keep_alive)
            return

        events = _sse_events(rec.model, beh, text, body)
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
        if not req.keep_alive:
            head += "Connection: close\r\n"
        tr.write((head + "\r\n").encode("latin-1"))

        cut = beh.cut_stream_after
        delay = beh.chunk_delay
        n_data = 0
        for i, ev in enumerate(events):
            is_done = ev is _DONE
            if cut is not None and (is_done or n_data >= cut):
                # Drop the connection mid-body: no [DONE], no terminating chunk.
                self._finish(rec)
                conn._close()
                return
            if i > 0 and delay > 0:
                if not await conn._sleep(delay):
                    if not self._stopping:
                        self._finish(rec, cancelled=True)
                    return
            if conn.closed:
                if not self._stopping:
                    self._finish(rec, cancelled=True)
                return
            data = b"data: [DONE]\n\n" if is_done else b"data: " + ev + b"\n\n"
            tr.write(b"%x\r\n%b\r\n" % (len(data), data))
            if not is_done:
                n_data += 1
        self._finish(rec)
        tr.write(b"0\r\n\r\n")
        if not req.keep_alive:
            conn._close()


_DONE = object()


def _usage(body: dict, completion: str, beh: Behaviour) -> dict:
    p = _prompt_tokens(body)
    c = _approx_tokens(completion) + _approx_tokens(beh.reasoning_content or "") + _approx_tokens(beh.reasoning or "")
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _sse_events(model: str, beh: Behaviour, text: str, body: dict) -> list:
    """Return the list of SSE payloads (bytes) followed by the _DONE marker."""
    cid = f"{_ID_PREFIX}{next(_ids):08x}"
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
        o: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            o["usage"] = usage
        return _dumps(o).encode()

    if beh.malformed:
        return [b'{"id": "chatcmpl-broken", "object": "chat.completion.chunk", "choices": [{"delta": {"cont', _DONE]

    deltas: list[dict] = []
    if beh.reasoning_content:
        deltas.extend({"reasoning_content": p} for p in _split(beh.reasoning_content))
    if beh.reasoning:
        deltas.extend({"reasoning": p} for p in _split(beh.reasoning))
    if beh.null_content:
        deltas.append({"content": None})
    else:
        deltas.extend({"content": p} for p in _split(text))
    deltas[0] = {"role": "assistant", **deltas[0]}
    out: list = [chunk(d) for d in deltas]
    out.append(chunk({}, "stop"))
    # As OpenAI and llama.cpp do: a stream reports its usage only when the request asks for it
    # (stream_options.include_usage), in one more chunk whose choices are empty.
    if beh.usage and (body.get("stream_options") or {}).get("include_usage"):
        last = _dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                       "model": model, "choices": [],
                       "usage": _usage(body, "" if beh.null_content else text, beh)})
        out.append(last.encode())
    out.append(_DONE)
    return out


def _json_object(b: bytes) -> dict | None:
    v = _try_json(b)
    return v if isinstance(v, dict) else None


def _try_json(b: bytes) -> Any:
    if not b:
        return None
    try:
        return json.loads(b)
    except (ValueError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------- #
# Standalone mode
# --------------------------------------------------------------------------- #


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.oai_server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--script", help="JSON file: model id -> Behaviour dict or list; optional __default__, __models__")
    ap.add_argument("--models", help="comma-separated ids listed by GET /v1/models")
    args = ap.parse_args(argv)

    srv = StubOpenAIServer(args.host, args.port)
    if args.script:
        with open(args.script, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            ap.error("script must be a JSON object")
        srv.load_script(data)
    if args.models:
        srv.set_models([m for m in args.models.split(",") if m])

    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    srv.start()
    sys.stdout.write(f"READY {srv.base_url}\n")
    sys.stdout.flush()
    try:
        while not stop.wait(0.2):
            pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
