"""One async OpenAI-compatible chat client for every provider.

All calls of a run share one ``httpx.AsyncClient`` over aiohttp's connection pool (``wire.py``):
no HTTP is parsed in fscale. Each provider gets its own concurrency cap (a semaphore) and send
limit (``ratelimit.py``: a token is taken when a request is actually sent, after the concurrency
slot, shared by every process on the same state directory). Every call retries on 429, 5xx,
timeouts and dropped connections with exponential backoff and jitter, honouring
``Retry-After``; every send, retries and resends included, goes through the limiter and the
``RequestCounter``. 410/404/401/400 are final: retrying cannot help. The tier timeout bounds each
request as a whole (connect, send, a trickling body, a stream), not each read. Streaming uses SSE
(``httpx-sse``). API keys are read from the environment at call time and only ever placed in the
``Authorization`` header; every error text built here passes the redactor, so a server that echoes
the key does not put it in errors, logs or results.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from ..base.calls import ChatReply, RequestCounter
from ..base.errors import ProviderError
from ..base.settings import ModelConfig, ProviderConfig, Settings
from .ratelimit import SendLimiter, make_limiter
from ..base.redact import redact, register_secrets
from .http import CertificateRejected, ConnectionDropped, make_client

RETRYABLE = {"rate_limited", "server", "timeout", "network"}
USER_AGENT = "fscale"
MAX_RETRY_AFTER_S = 120.0



@dataclass
class _ProviderRuntime:
    config: ProviderConfig
    semaphore: asyncio.Semaphore
    headers: dict[str, str] = field(default_factory=dict)
    adapter: Any = None
    http: httpx.AsyncClient | None = None  # own client when the adapter serves in-process


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _error_kind(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status == 410:
        return "dead"
    if status == 404:
        return "unavailable"
    if status in (401, 403):
        return "auth"
    if status >= 500:
        return "server"
    return "bad_request"


def _error_detail(resp: httpx.Response) -> str:
    """A short, key-free description of an HTTP error body."""
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message") if isinstance(err, dict) else str(err)
    except Exception:
        msg = resp.text
    # Redacted before it is cut, so a key echoed by the server is removed whole.
    msg = (redact(" ".join(str(msg or "").split())) or "")[:160]
    return f"HTTP {resp.status_code}" + (f": {msg}" if msg else "")


def _transport_error(exc: httpx.TransportError) -> ProviderError:
    """A connection-level failure as a retryable ``network`` error (key-free, redacted).

    A kept-alive connection that the server closed or reset before answering is resent at once
    (``retry_after=0``): the resend goes through the retry loop, so it is counted and limited.
    """
    if isinstance(exc, ConnectionDropped):
        return ProviderError("network", redact(str(exc)) or "connection dropped", retry_after=0.0)
    if isinstance(exc, CertificateRejected):  # retrying cannot help: not retryable
        return ProviderError("tls", redact(str(exc))[:200])
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ConnectError)):
        return ProviderError("network", redact(str(exc))[:200] or "protocol error")
    return ProviderError("network", f"{type(exc).__name__}: connection failed or dropped")


def _api_key_header(cfg: ProviderConfig, key: str) -> str:
    key = key.strip()
    if not key.isprintable():
        # A CR/LF in the key would split the header: refuse to send it (and never show it).
        raise ProviderError("auth", f"the API key of provider {cfg.name!r} (${cfg.api_key_env}) "
                                    "contains a line break or control character")
    return f"Bearer {key}"


class ChatClient:
    """Sends chat completions; one instance per run, closed with ``aclose()``."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None,
                 limiter: SendLimiter | None = None, on_status: Any = None) -> None:
        self.settings = settings
        self.on_status = on_status
        self._runtimes: dict[str, _ProviderRuntime] = {}
        self._urls: dict[str, httpx.URL] = {}
        if transport is None:
            self.http = make_client()
        else:
            self.http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(60.0, connect=10.0),
                                          follow_redirects=False)
        #: Every send to a provider with an ``rpm`` passes here (shared across processes).
        self.limiter = limiter or make_limiter(settings.paths.state_dir, settings.env)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.limiter.aclose()
        for rt in self._runtimes.values():
            if rt.http is not None:
                await rt.http.aclose()
            closer = getattr(rt.adapter, "aclose", None)
            if closer is not None:
                await closer()

    async def __aenter__(self) -> "ChatClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _runtime(self, provider_name: str) -> _ProviderRuntime:
        rt = self._runtimes.get(provider_name)
        if rt is None:
            cfg = self.settings.providers[provider_name]
            headers = {"Content-Type": "application/json", "Accept": "application/json",
                       "Accept-Encoding": "gzip, deflate", "User-Agent": USER_AGENT}
            key = cfg.api_key(self.settings.env)
            if key:
                register_secrets([key])  # a server echoing it back cannot put it in an error text
                headers["Authorization"] = _api_key_header(cfg, key)
            # The provider type's module (engine/providers/) gives the adapter, if any.
            from ..providers import make_adapter

            adapter = make_adapter(cfg, self.settings)
            if hasattr(adapter, "on_status"):
                adapter.on_status = self.on_status
            rt = _ProviderRuntime(
                config=cfg,
                semaphore=asyncio.Semaphore(max(1, cfg.concurrency)),
                headers=headers,
                adapter=adapter,
            )
            if getattr(adapter, "transport", None) is not None:
                rt.http = httpx.AsyncClient(transport=adapter.transport)
            self._runtimes[provider_name] = rt
        return rt

    async def _base_url(self, rt: _ProviderRuntime, model: ModelConfig) -> str:
        if rt.adapter is None:
            return rt.config.base_url.rstrip("/")
        url: str = await rt.adapter.base_url(model)
        return url.rstrip("/")

    async def chat(
        self,
        model: ModelConfig,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stream: bool = False,
        extra: dict[str, Any] | None = None,
        on_delta: Callable[[str, str], None] | None = None,
        counter: RequestCounter | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        labels: tuple[str, ...] | None = None,
    ) -> ChatReply:
        """One chat completion with retries; raises ``ProviderError`` when it finally fails.

        ``labels`` marks a classification call: providers that support constrained decoding
        (the local llama.cpp servers) restrict the reply to one of them. A model's
        ``options["params"]`` (e.g. seed, temperature of a local variant) override the body.
        """
        rt = self._runtime(model.provider)
        body: dict[str, Any] = {"model": model.id, "messages": messages}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if stream:
            body["stream"] = True
            # Streams report their tokens only when asked (OpenAI, llama.cpp, vLLM, NIM).
            body["stream_options"] = {"include_usage": True}
        if extra:
            body.update(extra)
        params = model.options.get("params")
        if params:
            body.update(params)
        if rt.adapter is not None and hasattr(rt.adapter, "extra_body"):
            body.update(rt.adapter.extra_body(model, labels=labels, stream=stream) or {})
        payload = json.dumps(body).encode()
        retries = self.settings.get("retries") if retries is None else retries
        timeout = self.settings.timeout_for(model.tier) if timeout is None else timeout
        base = self.settings.get("retry_base")
        url = await self._base_url(rt, model) + "/chat/completions"
        attempt = 0
        while True:
            attempt += 1
            try:
                async with rt.semaphore:
                    await self._before_send(rt)
                    if counter is not None:
                        counter.sent += 1
                    started = time.monotonic()
                    reply = await self._send(rt, url, payload, stream, on_delta, timeout)
                    reply.latency_s = time.monotonic() - started
                    reply.attempts = attempt
                    return reply
            except ProviderError as exc:
                if exc.kind not in RETRYABLE or attempt > retries:
                    raise
                if exc.retry_after is not None:
                    if exc.retry_after > MAX_RETRY_AFTER_S:
                        raise
                    delay = exc.retry_after
                else:
                    delay = base * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                await asyncio.sleep(delay)

    async def _before_send(self, rt: _ProviderRuntime) -> None:
        """Take the provider's send token: called once per HTTP request, inside its slot."""
        if rt.config.rpm:
            await self.limiter.acquire(rt.config.name, float(rt.config.rpm), rt.config.burst)

    def _request(self, rt: _ProviderRuntime, url: str, payload: bytes, timeout: float) -> httpx.Request:
        """The POST, built directly (the client's header/cookie merging and URL parsing per
        request cost more than the rest of the engine at loopback speed)."""
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        return httpx.Request("POST", parsed, headers=rt.headers, content=payload, extensions={
            "timeout": {"connect": min(10.0, timeout), "read": timeout, "write": timeout, "pool": timeout}})

    async def _send(self, rt: _ProviderRuntime, url: str, payload: bytes, stream: bool,
                    on_delta: Callable[[str, str], None] | None, timeout: float) -> ChatReply:
        """One HTTP request, bounded as a whole by ``timeout`` (a per-call deadline)."""
        try:
            async with asyncio.timeout(timeout):
                if stream:
                    return await self._send_stream(rt, url, payload, on_delta, timeout)
                resp = await (rt.http or self.http).send(self._request(rt, url, payload, timeout))
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError("timeout", f"no complete reply within {timeout:g}s") from None
        except httpx.TransportError as exc:
            raise _transport_error(exc) from None
        if resp.status_code != 200:
            raise ProviderError(_error_kind(resp.status_code), _error_detail(resp),
                                status=resp.status_code,
                                retry_after=_retry_after(resp.headers.get("retry-after")))
        try:
            data = json.loads(resp.content)
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise ProviderError("malformed", "the reply is not a chat completion (invalid JSON)",
                                status=200) from None
        usage = data.get("usage") or {}
        return ChatReply(
            content=message.get("content"),
            reasoning=message.get("reasoning_content") or message.get("reasoning"),
            latency_s=0.0,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
            logprobs=choice.get("logprobs"),
        )

    async def _send_stream(self, rt: _ProviderRuntime, url: str, payload: bytes,
                           on_delta: Callable[[str, str], None] | None, timeout: float) -> ChatReply:
        content: list[str] = []
        reasoning: list[str] = []
        finish: str | None = None
        usage: dict[str, Any] = {}
        done = False
        resp = await (rt.http or self.http).send(self._request(rt, url, payload, timeout), stream=True)
        try:
            if resp.status_code != 200:
                await resp.aread()
                raise ProviderError(_error_kind(resp.status_code), _error_detail(resp),
                                    status=resp.status_code,
                                    retry_after=_retry_after(resp.headers.get("retry-after")))
            try:
                async for event in EventSource(resp).aiter_sse():
                    data = event.data.strip()
                    if not data:
                        continue
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise ProviderError("malformed", "a stream chunk is not valid JSON", status=200) from None
                    if not isinstance(chunk, dict):
                        raise ProviderError("malformed", "a stream chunk is not a JSON object", status=200)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        piece = delta.get("content") or ""
                        think = delta.get("reasoning_content") or delta.get("reasoning") or ""
                        if piece:
                            content.append(piece)
                        if think:
                            reasoning.append(think)
                        if (piece or think) and on_delta is not None:
                            on_delta(piece, think)
                        finish = choice.get("finish_reason") or finish
            except SSEError:
                raise ProviderError("malformed", "the reply is not an event stream", status=200) from None
            except httpx.TransportError:
                raise ProviderError("network", "the stream was cut mid-way") from None
        finally:
            await resp.aclose()  # an abandoned stream closes its connection (the server sees it)
        if not done and finish is None:
            raise ProviderError("network", "the stream ended before the reply was complete")
        return ChatReply(
            content="".join(content) if content else None,
            reasoning="".join(reasoning) or None,
            latency_s=0.0,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=finish,
        )

    async def list_models(self, provider_name: str) -> list[str]:
        """Model ids the provider's ``GET /models`` lists."""
        rt = self._runtime(provider_name)
        if rt.adapter is not None and hasattr(rt.adapter, "list_models"):
            listed: list[str] = await rt.adapter.list_models()
            return listed
        url = rt.config.base_url.rstrip("/") + "/models"
        try:
            async with rt.semaphore:
                await self._before_send(rt)
                async with asyncio.timeout(30.0):
                    resp = await self.http.get(url, headers=rt.headers, timeout=30.0)
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError("timeout", "no reply within 30s") from None
        except httpx.TransportError as exc:
            raise _transport_error(exc) from None
        if resp.status_code != 200:
            raise ProviderError(_error_kind(resp.status_code), _error_detail(resp), status=resp.status_code)
        try:
            return [str(item["id"]) for item in resp.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise ProviderError("malformed", "the model list is not valid JSON") from None
