"""One async OpenAI-compatible chat client for every provider.

All calls of a run share one ``httpx.AsyncClient`` (connection pooling). Each provider gets its
own concurrency cap (a semaphore) and rate limit (a token bucket), and every call retries on
429, 5xx, timeouts and dropped connections with exponential backoff and jitter, honouring
``Retry-After``. 410/404/401/400 are final: retrying cannot help. Streaming uses SSE.
API keys are read from the environment at call time and only ever placed in the
``Authorization`` header: they never appear in errors, logs or results.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .config import ModelConfig, ProviderConfig, Settings
from .errors import ProviderError

#: A token bucket's accounting window, a little over a minute so that arrival jitter at the
#: server can never make it see more than ``rpm`` requests in any 60 s.
RATE_WINDOW_S = 61.0
RETRYABLE = {"rate_limited", "server", "timeout", "network"}
MAX_RETRY_AFTER_S = 120.0

#: Provider types other than plain "openai" are served by a module whose
#: ``make_adapter(provider, settings)`` returns an object with ``async base_url(model) -> str``
#: and optionally ``transport`` (an ``httpx.AsyncBaseTransport`` answering in-process),
#: ``async list_models()`` and ``async aclose()``; an adapter with an ``on_status`` attribute
#: gets the engine's status hook (e.g. local servers report joining weights and starting up).
PROVIDER_TYPES = {
    "local": "fscale_tui.engine.local.provider",
    "replay": "fscale_tui.engine.replay",
}


class TokenBucket:
    """At most ``rpm`` request starts in any 60-second window, with a small burst.

    The bucket holds ``burst`` tokens and refills at ``(rpm - burst) / window``: tokens on hand
    at the start of any window plus what refills during it can never exceed ``rpm``, so the
    limit is a guarantee, not an average.
    """

    def __init__(self, rpm: float, burst: int | None = None) -> None:
        if rpm <= 0:
            raise ValueError("rpm must be positive")
        default_burst = max(1, int(rpm // 10))
        self.capacity = max(1, min(burst or default_burst, int(rpm // 2) or 1))
        refill = rpm - self.capacity
        self.rate = (refill if refill > 0 else rpm) / RATE_WINDOW_S
        self.tokens = float(self.capacity)
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        # The lock makes waiters queue in FIFO order instead of racing for each token.
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self.tokens) / self.rate)


@dataclass
class RequestCounter:
    """Counts HTTP requests actually sent (retries included) for budget accounting."""

    sent: int = 0


@dataclass
class ChatReply:
    content: str | None
    reasoning: str | None
    latency_s: float
    attempts: int = 1
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    logprobs: Any = None


@dataclass
class _ProviderRuntime:
    config: ProviderConfig
    semaphore: asyncio.Semaphore
    bucket: TokenBucket | None
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
    msg = " ".join(str(msg or "").split())[:160]
    return f"HTTP {resp.status_code}" + (f": {msg}" if msg else "")


class ChatClient:
    """Sends chat completions; one instance per run, closed with ``aclose()``."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None,
                 on_status: Any = None) -> None:
        self.settings = settings
        self.on_status = on_status
        self._runtimes: dict[str, _ProviderRuntime] = {}
        if transport is None:
            # Plain-http endpoints (local servers, loopback) get the lean keep-alive transport;
            # https providers keep httpx's own pool (see transport.py for why).
            from .transport import FastHTTP1Transport

            transport = FastHTTP1Transport(httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=128, max_keepalive_connections=16)))
        self.http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(60.0, connect=10.0),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.http.aclose()
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
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            key = cfg.api_key(self.settings.env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            adapter = None
            if cfg.type != "openai":
                module = PROVIDER_TYPES.get(cfg.type)
                if module is None:
                    raise ProviderError("bad_request", f"provider {cfg.name!r} has unknown type {cfg.type!r}")
                adapter = importlib.import_module(module).make_adapter(cfg, self.settings)
                if hasattr(adapter, "on_status"):
                    adapter.on_status = self.on_status
            rt = _ProviderRuntime(
                config=cfg,
                semaphore=asyncio.Semaphore(max(1, cfg.concurrency)),
                bucket=TokenBucket(float(cfg.rpm), cfg.burst) if cfg.rpm else None,
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
        return (await rt.adapter.base_url(model)).rstrip("/")

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
                if rt.bucket is not None:
                    await rt.bucket.acquire()
                async with rt.semaphore:
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

    async def _send(self, rt: _ProviderRuntime, url: str, payload: bytes, stream: bool,
                    on_delta: Callable[[str, str], None] | None, timeout: float) -> ChatReply:
        try:
            if stream:
                return await self._send_stream(rt, url, payload, on_delta, timeout)
            resp = await (rt.http or self.http).post(url, content=payload, headers=rt.headers, timeout=timeout)
        except httpx.TimeoutException:
            raise ProviderError("timeout", f"no reply within {timeout:g}s") from None
        except httpx.TransportError as exc:
            raise ProviderError("network", f"{type(exc).__name__}: connection failed or dropped") from None
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
        async with (rt.http or self.http).stream("POST", url, content=payload, headers=rt.headers,
                                    timeout=timeout) as resp:
            if resp.status_code != 200:
                await resp.aread()
                raise ProviderError(_error_kind(resp.status_code), _error_detail(resp),
                                    status=resp.status_code,
                                    retry_after=_retry_after(resp.headers.get("retry-after")))
            try:
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise ProviderError("malformed", "a stream chunk is not valid JSON", status=200) from None
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
            except httpx.TransportError:
                raise ProviderError("network", "the stream was cut mid-way") from None
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
            return await rt.adapter.list_models()
        url = rt.config.base_url.rstrip("/") + "/models"
        try:
            resp = await self.http.get(url, headers=rt.headers, timeout=30.0)
        except httpx.TimeoutException:
            raise ProviderError("timeout", "no reply within 30s") from None
        except httpx.TransportError as exc:
            raise ProviderError("network", f"{type(exc).__name__}: connection failed") from None
        if resp.status_code != 200:
            raise ProviderError(_error_kind(resp.status_code), _error_detail(resp), status=resp.status_code)
        try:
            return [str(item["id"]) for item in resp.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise ProviderError("malformed", "the model list is not valid JSON") from None
