"""Tests for the scripted OpenAI stub server (tests/oai_server.py)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.oai_server import Behaviour, StubOpenAIServer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAT = "/chat/completions"


@pytest.fixture(scope="module")
def server():
    with StubOpenAIServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def srv(server):
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def client(srv):
    with httpx.Client(base_url=srv.base_url, timeout=5.0) as c:
        yield c


def ask(client: httpx.Client, model: str, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Is water wet?"}], **extra}
    return client.post(CHAT, json=body)


def sse_events(lines) -> list[str]:
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


# --------------------------------------------------------------------------- #
# Raw-socket helpers (exercise the hand-written HTTP parser directly)
# --------------------------------------------------------------------------- #


def raw_request(body: bytes, *, path: str = "/v1/chat/completions", extra_headers: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra_headers}\r\n"
    ).encode() + body


class RawReader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), "connection closed before headers"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        n = int(headers["content-length"])
        while len(self.buf) < n:
            assert self._fill(), "connection closed mid-body"
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def at_eof(self) -> bool:
        return not self.buf and not self._fill()


# --------------------------------------------------------------------------- #
# Basic replies
# --------------------------------------------------------------------------- #


def test_scripted_reply_has_openai_shape(srv, client):
    srv.script("alpha", Behaviour(reply="Paris"))
    r = ask(client, "alpha")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    data = r.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert isinstance(data["created"], int)
    assert data["model"] == "alpha"
    choice = data["choices"][0]
    assert choice["index"] == 0
    assert choice["message"] == {"role": "assistant", "content": "Paris"}
    assert choice["finish_reason"] == "stop"
    u = data["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and u["completion_tokens"] > 0
    # unscripted models get the default behaviour
    assert ask(client, "other").json()["choices"][0]["message"]["content"] == "YES"
    srv.set_default(Behaviour(reply="NO"))
    assert ask(client, "other").json()["choices"][0]["message"]["content"] == "NO"


def test_successive_behaviours_then_last_repeats(srv, client):
    srv.script("m", Behaviour(reply="one"), Behaviour(status=500), Behaviour(reply="three"))
    got = []
    for _ in range(5):
        r = ask(client, "m")
        got.append(r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.status_code)
    assert got == ["one", 500, "three", "three", "three"]
    assert srv.count("m") == 5
    assert srv.count() == 5
    # re-scripting restarts the sequence
    srv.script("m", Behaviour(reply="again"))
    assert ask(client, "m").json()["choices"][0]["message"]["content"] == "again"
    srv.reset()
    assert srv.count() == 0 and srv.requests == []
    assert ask(client, "m").json()["choices"][0]["message"]["content"] == "YES"


def test_request_records(srv, client):
    srv.script("rec", Behaviour(reply="ok"))
    client.post(CHAT, json={"model": "rec", "messages": []}, headers={"X-Trace": "abc"})
    [rec] = srv.requests
    assert (rec.model, rec.path, rec.method, rec.status) == ("rec", "/v1/chat/completions", "POST", 200)
    assert rec.body == {"model": "rec", "messages": []}
    assert rec.headers["x-trace"] == "abc"
    assert rec.stream is False and rec.cancelled is False
    assert rec.t_end is not None and rec.t_end >= rec.t_start
    # the snapshot is a copy
    srv.requests[0].model = "mutated"
    assert srv.requests[0].model == "rec"


def test_latency_is_applied_and_requests_overlap(srv):
    srv.script("slow", Behaviour(reply="late", latency=0.3))

    async def two():
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=5) as c:
            body = {"model": "slow", "messages": []}
            t0 = time.monotonic()
            rs = await asyncio.gather(c.post(CHAT, json=body), c.post(CHAT, json=body))
            return rs, time.monotonic() - t0

    rs, elapsed = asyncio.run(two())
    assert [r.json()["choices"][0]["message"]["content"] for r in rs] == ["late", "late"]
    assert elapsed >= 0.3
    recs = srv.requests
    assert len(recs) == 2
    for rec in recs:
        assert rec.t_end - rec.t_start >= 0.29
    # served concurrently: both started before either finished
    assert max(r.t_start for r in recs) < min(r.t_end for r in recs)


# --------------------------------------------------------------------------- #
# Errors and odd bodies
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("status", [404, 410, 429, 500, 503])
def test_error_status_with_retry_after(srv, client, status):
    srv.script("err", Behaviour(status=status, retry_after=7))
    r = ask(client, "err")
    assert r.status_code == status
    assert r.headers["retry-after"] == "7"
    err = r.json()["error"]
    assert err["message"] and err["type"]
    assert srv.requests[-1].status == status


def test_error_body_fractional_retry_after_and_no_header_by_default(srv, client):
    srv.script("e", Behaviour(status=429, retry_after=1.5, error_body="slow down"), Behaviour(status=503))
    r = ask(client, "e")
    assert (r.status_code, r.text, r.headers["retry-after"]) == (429, "slow down", "1.5")
    r = ask(client, "e")
    assert r.status_code == 503 and "retry-after" not in r.headers


def test_malformed_json_body(srv, client):
    srv.script("bad", Behaviour(malformed=True))
    r = ask(client, "bad")
    assert r.status_code == 200
    with pytest.raises(ValueError):
        json.loads(r.text)


def test_null_content(srv, client):
    srv.script("nul", Behaviour(null_content=True))
    msg = ask(client, "nul").json()["choices"][0]["message"]
    assert msg["role"] == "assistant" and msg["content"] is None


def test_reasoning_fields(srv, client):
    srv.script("r1", Behaviour(reply="YES", reasoning_content="because A", reasoning="because B"))
    msg = ask(client, "r1").json()["choices"][0]["message"]
    assert msg == {
        "role": "assistant",
        "content": "YES",
        "reasoning_content": "because A",
        "reasoning": "because B",
    }


def test_reply_fn_and_usage_off(srv, client):
    srv.script("echo", Behaviour(reply_fn=lambda body: body["messages"][-1]["content"].upper(), usage=False))
    data = client.post(CHAT, json={"model": "echo", "messages": [{"role": "user", "content": "hi there"}]}).json()
    assert data["choices"][0]["message"]["content"] == "HI THERE"
    assert "usage" not in data


def test_bad_requests_and_other_endpoints(srv, client):
    r = client.post(CHAT, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    r = client.post(CHAT, json={"messages": []})
    assert r.status_code == 400 and "model" in r.json()["error"]["message"]
    assert client.get("/nope").status_code == 404
    r = client.get(srv.base_url.removesuffix("/v1") + "/health")
    assert r.status_code == 200
    assert srv.count(path="/health") == 1
    assert srv.count() == 2  # the two 400s were chat requests


def test_models_endpoint(srv, client):
    srv.script("b-model", Behaviour())
    srv.script("a-model", Behaviour())
    data = client.get("/models").json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["b-model", "a-model"]
    assert all(m["object"] == "model" and m["owned_by"] == "stub" for m in data["data"])
    srv.set_models(["x", "y", "z"])
    assert [m["id"] for m in client.get("/models").json()["data"]] == ["x", "y", "z"]
    srv.reset()  # back to the constructor's list (here: the scripted ids, none now)
    assert client.get("/models").json()["data"] == []
    with StubOpenAIServer(models=["fixed"]) as other:
        other.script("scripted", Behaviour())
        assert [m["id"] for m in httpx.get(other.base_url + "/models").json()["data"]] == ["fixed"]


# --------------------------------------------------------------------------- #
# Streaming
# --------------------------------------------------------------------------- #


def test_streaming_full(srv, client):
    srv.script("s", Behaviour(reply="The answer is YES", reasoning_content="thinking hard"))
    with client.stream("POST", CHAT, json={"model": "s", "messages": [], "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(list(r.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "s" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant"
    content = "".join(d.get("content") or "" for d in deltas)
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    assert content == "The answer is YES"
    assert reasoning == "thinking hard"
    n_content = sum(1 for d in deltas if d.get("content"))
    assert n_content >= 3
    # reasoning deltas come before content deltas
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all("content" not in d for d in deltas[:first_content])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    [rec] = srv.requests
    assert rec.stream and not rec.cancelled and rec.t_end is not None
    # the keep-alive connection is still usable after a stream
    assert ask(client, "s").json()["choices"][0]["message"]["content"] == "The answer is YES"


def test_streaming_cut_mid_way_raises_on_client(srv, client):
    srv.script("cut", Behaviour(reply="a fairly long reply text", cut_stream_after=2))
    got: list[str] = []
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        with client.stream("POST", CHAT, json={"model": "cut", "messages": [], "stream": True}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                got.append(line)
    events = sse_events(got)
    assert len(events) == 2 and "[DONE]" not in events
    assert json.loads(events[0])["choices"][0]["delta"]["content"]


def test_streaming_with_chunk_delay(srv, client):
    srv.script("slowstream", Behaviour(reply="abcdef", chunk_delay=0.05))
    stamps = []
    with client.stream("POST", CHAT, json={"model": "slowstream", "messages": [], "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                stamps.append(time.monotonic())
    # 3 content chunks + final chunk + [DONE] => 4 gaps of >= 0.05 s
    assert len(stamps) == 5
    assert stamps[-1] - stamps[0] >= 0.15


# --------------------------------------------------------------------------- #
# Cancellation detection
# --------------------------------------------------------------------------- #


def test_cancel_detected_when_client_times_out(srv):
    srv.script("slow", Behaviour(reply="never", latency=3.0))
    with httpx.Client(base_url=srv.base_url, timeout=0.2) as c:
        with pytest.raises(httpx.ReadTimeout):
            ask(c, "slow")
    assert srv.wait_until(lambda: srv.cancelled("slow") == 1, timeout=2.0)
    [rec] = srv.requests
    assert rec.cancelled and rec.t_end is None
    # a request that completes is not counted as cancelled
    srv.script("fast", Behaviour(reply="ok"))
    with httpx.Client(base_url=srv.base_url, timeout=2) as c:
        assert ask(c, "fast").status_code == 200
    assert srv.cancelled("fast") == 0


def test_cancel_detected_when_raw_socket_closes(srv):
    srv.script("slow", Behaviour(latency=3.0))
    s = socket.create_connection(("127.0.0.1", srv.port))
    try:
        s.sendall(raw_request(b'{"model":"slow","messages":[]}'))
        assert srv.wait_until(lambda: srv.count("slow") == 1, timeout=2.0)
        assert srv.cancelled("slow") == 0
    finally:
        s.close()
    assert srv.wait_until(lambda: srv.cancelled("slow") == 1, timeout=2.0)


def test_cancel_detected_between_stream_chunks(srv, client):
    srv.script("drip", Behaviour(reply="one two three", chunk_delay=3.0))
    with client.stream("POST", CHAT, json={"model": "drip", "messages": [], "stream": True}) as r:
        first = next(line for line in r.iter_lines() if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["delta"]["content"]
        # leaving the block without reading the rest closes the connection
    # noticed while sleeping between chunks, not only when the next write is due
    assert srv.wait_until(lambda: srv.cancelled("drip") == 1, timeout=1.5)
    assert srv.requests[0].t_end is None


# --------------------------------------------------------------------------- #
# Rate-window helper
# --------------------------------------------------------------------------- #


def test_max_in_window(srv, client):
    srv.script("w", Behaviour())
    srv.script("v", Behaviour())
    for _ in range(4):
        ask(client, "w")
    ask(client, "v")
    time.sleep(1.5)  # the bursts are further apart than the window, however loaded the machine
    for _ in range(3):
        ask(client, "w")
    assert srv.max_in_window(1.0) == 5
    assert srv.max_in_window(1.0, model="w") == 4
    assert srv.max_in_window(60) == 8
    assert srv.max_in_window(60, model="w") == 7
    assert srv.max_in_window(60, model="nobody") == 0


# --------------------------------------------------------------------------- #
# Connection handling
# --------------------------------------------------------------------------- #


def test_keep_alive_reuses_one_connection(srv):
    srv.script("k", Behaviour(reply="k"))
    before = srv.connections_opened
    with httpx.Client(base_url=srv.base_url, timeout=5) as c:
        for _ in range(5):
            assert ask(c, "k").json()["choices"][0]["message"]["content"] == "k"
    assert srv.connections_opened - before == 1
    assert srv.count("k") == 5


def test_raw_pipelining_chunked_body_and_connection_close(srv):
    srv.script("p", Behaviour(reply="one"), Behaviour(reply="two"), Behaviour(reply="three"))
    body = b'{"model":"p","messages":[]}'
    chunked = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (10, body[:10])
        + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:])
        + b"0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        rd = RawReader(s)
        # two pipelined requests in one write, the second one with a chunked body
        s.sendall(raw_request(body) + chunked)
        st1, h1, b1 = rd.response()
        st2, h2, b2 = rd.response()
        assert (st1, st2) == (200, 200)
        assert "connection" not in h1  # keep-alive by default
        assert json.loads(b1)["choices"][0]["message"]["content"] == "one"
        assert json.loads(b2)["choices"][0]["message"]["content"] == "two"
        # Connection: close is honoured: response says so and the server closes
        s.sendall(raw_request(body, extra_headers="Connection: close\r\n"))
        st3, h3, b3 = rd.response()
        assert st3 == 200 and h3["connection"].lower() == "close"
        assert json.loads(b3)["choices"][0]["message"]["content"] == "three"
        assert rd.at_eof()


# --------------------------------------------------------------------------- #
# Standalone mode
# --------------------------------------------------------------------------- #


def test_standalone_mode(tmp_path):
    script = {
        "solo": [{"reply": "first"}, {"status": 429, "retry_after": 3}, {"reply": "last"}],
        "__default__": {"reply": "DEFAULT"},
    }
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.oai_server", "--port", "0", "--script", str(path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line: list[str] = []
        t = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        t.start()
        t.join(10)
        assert line and line[0].startswith("READY http://127.0.0.1:"), (line, proc.poll())
        base = line[0].split()[1]
        assert base.endswith("/v1")
        with httpx.Client(base_url=base, timeout=5) as c:
            got = []
            for _ in range(4):
                r = ask(c, "solo")
                got.append(r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.status_code)
            assert got == ["first", 429, "last", "last"]
            assert ask(c, "unscripted").json()["choices"][0]["message"]["content"] == "DEFAULT"
            root = base.removesuffix("/v1")
            stats = c.get(root + "/_stub/stats").json()
            assert stats["models"]["solo"]["count"] == 4
            # runtime re-scripting of the separate process
            assert c.post(root + "/_stub/script", json={"solo": {"reply": "rescripted"}}).status_code == 200
            assert ask(c, "solo").json()["choices"][0]["message"]["content"] == "rescripted"
            assert c.post(root + "/_stub/reset").status_code == 200
            assert c.get(root + "/_stub/stats").json()["total"] == 0
    finally:
        proc.terminate()
        try:
            rc = proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
    assert rc == 0


def test_cancel_detected_when_async_task_is_cancelled(srv):
    """The product cancels slow asyncio tasks; httpx must drop the connection and we must see it."""
    srv.script("slow", Behaviour(latency=3.0))
    srv.script("quick", Behaviour(reply="fast"))

    async def race():
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=10) as c:
            body = {"messages": []}
            slow = asyncio.create_task(c.post(CHAT, json={"model": "slow", **body}))
            quick = await c.post(CHAT, json={"model": "quick", **body})
            await asyncio.sleep(0.05)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            return quick.json()["choices"][0]["message"]["content"]

    assert asyncio.run(race()) == "fast"
    assert srv.wait_until(lambda: srv.cancelled("slow") == 1, timeout=1.5)
    assert srv.cancelled("quick") == 0
