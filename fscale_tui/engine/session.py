"""The engine facade both views use: ``async with Engine() as engine: ...``.

It owns the settings, the registry, the shared HTTP client and the health store for one run,
and exposes each capability twice: as an async stream of events (``scale_events``) for live
views, and as a plain awaitable returning the result (``scale``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx

from .client import ChatClient
from .config import ModelConfig, Settings, load_settings
from .errors import ProviderError
from .events import Decided, Event, ProbeResult
from .health import PROBE_MESSAGES, HealthStore, status_for_error
from .registry import Registry
from .vote import ScaleRequest, ScaleResult, VoteRunner, new_call_id

#: Called with every finished scale call (the request, its result); later features such as the
#: call log and ratings subscribe here instead of being wired into the vote loop.
CallObserver = Callable[[ScaleRequest, ScaleResult], None]


def _default_observers() -> list[CallObserver]:
    return []


class Engine:
    def __init__(self, settings: Settings | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 observers: Iterable[CallObserver] | None = None) -> None:
        self.settings = settings or load_settings()
        self.health = HealthStore(self.settings)
        self.registry = Registry(self.settings, is_down=self.health.is_down)
        self.client = ChatClient(self.settings, transport=transport)
        self.observers: list[CallObserver] = list(observers if observers is not None
                                                  else _default_observers())
        self.rating_of: Callable[[str], float] = lambda alias: 0.0

    async def __aenter__(self) -> "Engine":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- scale ---------------------------------------------------------------------------
    def _runner(self, request: ScaleRequest) -> VoteRunner:
        request.validate()
        members = self.registry.select(models=request.models, panel=request.panel, k=request.k)
        s = self.settings
        return VoteRunner(
            self.client, members, request,
            call_id=request.id or new_call_id(),
            max_tokens=request.max_tokens or s.get("max_tokens"),
            temperature=s.get("temperature") if request.temperature is None else request.temperature,
            tie_break=request.tie_break or s.get("tie_break"),
            substitute=self.registry.substitute,
            is_down=self.health.is_down,
            rating_of=self.rating_of,
            on_failure=self._note_failure,
        )

    def _note_failure(self, model: ModelConfig, exc: ProviderError) -> None:
        """Share dead / unavailable / rate-limited verdicts with later calls and processes."""
        status = status_for_error(exc.kind)
        if status != "error":
            self.health.record(model, status, detail=str(exc), retry_after=exc.retry_after)

    async def scale_events(self, request: ScaleRequest) -> AsyncIterator[Event]:
        """Run one scale call, yielding its events; the last one is ``Decided``."""
        runner = self._runner(request)
        async for event in runner.events():
            if isinstance(event, Decided):
                self._notify(request, event.result)
            yield event

    async def scale(self, request: ScaleRequest) -> ScaleResult:
        result: ScaleResult | None = None
        async for event in self.scale_events(request):
            if isinstance(event, Decided):
                result = event.result
        assert result is not None
        return result

    def _notify(self, request: ScaleRequest, result: ScaleResult) -> None:
        for observer in self.observers:
            observer(request, result)

    async def scale_batch(self, requests: Iterable[ScaleRequest | Exception], *,
                          concurrency: int | None = None,
                          on_event: Callable[[Event], None] | None = None,
                          ) -> AsyncIterator[tuple[int, ScaleResult | Exception]]:
        """Run many calls with at most ``concurrency`` in flight; yields ``(index, outcome)``
        in completion order. A failing item yields its exception and never stops the others.
        Provider rate limits and concurrency caps still apply to every request."""
        limit = asyncio.Semaphore(concurrency or self.settings.get("batch_concurrency"))
        done: asyncio.Queue[tuple[int, ScaleResult | Exception]] = asyncio.Queue()

        async def one(index: int, item: ScaleRequest | Exception) -> None:
            if isinstance(item, Exception):
                done.put_nowait((index, item))
                return
            async with limit:
                try:
                    outcome: ScaleResult | Exception
                    if on_event is None:
                        outcome = await self.scale(item)
                    else:
                        outcome = None  # type: ignore[assignment]
                        async for event in self.scale_events(item):
                            on_event(event)
                            if isinstance(event, Decided):
                                outcome = event.result
                except Exception as exc:  # isolated per item
                    outcome = exc
            done.put_nowait((index, outcome))

        tasks: list[asyncio.Task[None]] = []
        try:
            for index, item in enumerate(requests):
                tasks.append(asyncio.create_task(one(index, item)))
            for _ in range(len(tasks)):
                yield await done.get()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- health --------------------------------------------------------------------------
    async def probe(self, model: ModelConfig) -> ProbeResult:
        """One tiny request; classifies the model and persists down-verdicts."""
        slow_after = float(self.settings.get("slow_after"))
        try:
            reply = await self.client.chat(model, PROBE_MESSAGES, max_tokens=16, temperature=0.0,
                                           retries=0)
        except ProviderError as exc:
            status = status_for_error(exc.kind)
            self.health.record(model, status, detail=str(exc), retry_after=exc.retry_after)
            return ProbeResult("health", model.alias, status, None, str(exc))
        status = "ok" if reply.latency_s <= slow_after else "slow"
        self.health.record(model, status, latency_s=reply.latency_s)
        return ProbeResult("health", model.alias, status, reply.latency_s, "")

    async def health_events(self, models: list[ModelConfig]) -> AsyncIterator[ProbeResult]:
        """Probe all models concurrently; results arrive as they finish."""
        tasks = [asyncio.create_task(self.probe(m)) for m in models]
        try:
            for fut in asyncio.as_completed(tasks):
                yield await fut
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def refresh_catalogue(self) -> dict[str, Any]:
        """Ask each usable provider's /models; report catalogue entries that are gone."""
        report: dict[str, Any] = {}
        for name, provider in self.settings.providers.items():
            entries = [m for m in self.settings.models.values() if m.provider == name]
            if not entries or not provider.usable(self.settings.env):
                continue
            try:
                ids = set(await self.client.list_models(name))
            except ProviderError as exc:
                report[name] = {"error": str(exc)}
                continue
            gone = sorted(m.alias for m in entries if m.id not in ids)
            known = {m.id for m in entries}
            report[name] = {"listed": len(ids), "catalogued": len(entries), "gone": gone,
                            "new": sorted(ids - known)}
        return report
