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

from .batch import bounded, final_result
from .client import ChatClient, RequestCounter
from .config import ModelConfig, Settings, load_settings
from .errors import ProviderError
from .events import ChallengerAnswered, Decided, Event, ProbeResult
from .health import PROBE_MESSAGES, HealthStore, status_for_error
from .registry import Registry
from .vote import ScaleRequest, ScaleResult, Vote, VoteRunner, build_messages, new_call_id

#: Called with every finished scale call (the request, its result); later features such as the
#: call log and ratings subscribe here instead of being wired into the vote loop.
CallObserver = Callable[[ScaleRequest, ScaleResult], None]


def _default_observers(settings: Settings) -> list[CallObserver]:
    """The call log + ratings (engine.learning): every finished scale call is logged and rated."""
    from .learning.calllog import CallRecorder

    return [CallRecorder(settings)]


class Engine:
    def __init__(self, settings: Settings | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 observers: Iterable[CallObserver] | None = None) -> None:
        self.settings = settings or load_settings()
        self.health = HealthStore(self.settings)
        self.registry = Registry(self.settings, is_down=self.health.is_down)
        self.client = ChatClient(self.settings, transport=transport)
        self.observers: list[CallObserver] = list(observers if observers is not None
                                                  else _default_observers(self.settings))
        #: Used by ``--tie-break rating``; reads the stored ratings (engine.learning) on first use.
        self.rating_of: Callable[[str], float] = self._stored_rating
        self._ratings: dict[str, float] | None = None
        self._challenger_tasks: set[asyncio.Task[Any]] = set()
        self._own_store: Any = None

    async def __aenter__(self) -> "Engine":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for task in list(self._challenger_tasks):
            task.cancel()
        await asyncio.gather(*self._challenger_tasks, return_exceptions=True)
        await self.client.aclose()
        for observer in self.observers:
            close = getattr(observer, "close", None)
            if close is not None:
                close()
        if self._own_store is not None:
            self._own_store.close()

    def _stored_rating(self, alias: str) -> float:
        from .learning.ratings import BASE

        if self._ratings is None:
            self._ratings = self._learning_store().rating_values()
        return self._ratings.get(alias, BASE)

    # -- scale ---------------------------------------------------------------------------
    def _runner(self, request: ScaleRequest, *, members: list[ModelConfig] | None = None,
                reserved: frozenset[str] = frozenset()) -> VoteRunner:
        request.validate()
        if members is None:
            members = self.registry.select(models=request.models, panel=request.panel, k=request.k)
        s = self.settings

        def substitute(failed: ModelConfig, used: set[str]) -> ModelConfig | None:
            # The shadow challenger (``reserved``) is never drafted as a substitute.
            return self.registry.substitute(failed, set(used) | reserved)

        return VoteRunner(
            self.client, members, request,
            call_id=request.id or new_call_id(),
            max_tokens=request.max_tokens or s.get("max_tokens"),
            temperature=s.get("temperature") if request.temperature is None else request.temperature,
            tie_break=request.tie_break or s.get("tie_break"),
            substitute=substitute,
            is_down=self.health.is_down,
            rating_of=self.rating_of,
            on_failure=self._note_failure,
        )

    def _note_failure(self, model: ModelConfig, exc: ProviderError) -> None:
        """Share dead / unavailable / rate-limited verdicts with later calls and processes."""
        status = status_for_error(exc.kind)
        if status != "error":
            self.health.record(model, status, detail=str(exc), retry_after=exc.retry_after)

    def _learning_store(self) -> Any:
        """The call log's open store (shared with the recorder: one connection per run)."""
        from .learning.calllog import CallRecorder, LearningStore

        for observer in self.observers:
            if isinstance(observer, CallRecorder):
                return observer.store
        if self._own_store is None:
            self._own_store = LearningStore.for_settings(self.settings)
        return self._own_store

    def _provider_type(self, model: ModelConfig) -> str:
        provider = self.settings.providers.get(model.provider)
        return provider.type if provider else "openai"

    def _pick_challenger(self, members: list[ModelConfig]) -> ModelConfig | None:
        """One model outside the panel, by Thompson sampling over its rating (engine.learning)."""
        s = self.settings
        if not s.get("challenger") or not s.get("log_calls"):
            return None  # nothing would record its evidence
        from .learning.challenger import eligible, thompson_pick

        # Embedded local models only challenge local panels: starting a llama.cpp server for a
        # shadow vote would cost seconds of CPU on every call of a remote panel.
        local_panel = any(self._provider_type(m) == "local" for m in members)
        pool = [m for m in s.models.values()
                if local_panel or self._provider_type(m) != "local"]
        candidates = eligible(pool, exclude=[m.alias for m in members],
                              available=self.registry.available,
                              allow_thinking=bool(s.get("challenger_thinking")))
        if not candidates:
            return None
        try:
            table = self._learning_store().ratings()
        except Exception:  # an unreadable log must not stop the call: explore uniformly
            table = {}
        alias = thompson_pick(candidates, table)
        return s.models[alias] if alias else None

    async def scale_events(self, request: ScaleRequest) -> AsyncIterator[Event]:
        """Run one scale call, yielding its events; ``Decided`` comes the moment it is known.

        With the ``challenger`` setting on, one shadow model outside the panel is asked in
        parallel; it never affects the decision. After ``Decided`` the engine waits at most
        ``challenger_grace`` seconds more for it (then cancels it), attaches its vote to the
        result (``result.challenger``), logs the call and yields ``ChallengerAnswered``.
        Observers (the call log) always see the call exactly once, even if the consumer stops
        iterating after ``Decided``.
        """
        request.validate()
        members = self.registry.select(models=request.models, panel=request.panel, k=request.k)
        shadow = self._pick_challenger(members)
        runner = self._runner(request, members=members,
                              reserved=frozenset({shadow.alias} if shadow else ()))
        task: asyncio.Task[Any] | None = None
        counter = RequestCounter()
        if shadow is not None:
            from .learning import challenger

            labels = tuple(a.strip() for a in request.answers)
            task = asyncio.create_task(challenger.ask(
                self.client, shadow, build_messages(request.question, labels, request.context),
                labels, max_tokens=runner.max_tokens, temperature=runner.temperature,
                counter=counter, on_failure=self._note_failure))
            self._challenger_tasks.add(task)
            task.add_done_callback(self._challenger_tasks.discard)
        result: ScaleResult | None = None
        notified = False
        try:
            async for event in runner.events():
                if isinstance(event, Decided):
                    result = event.result
                    if shadow is not None:
                        # Announced now; the challenger's vote follows in ChallengerAnswered.
                        result.challenger = Vote(model=shadow.alias, answer=None, latency_s=None,
                                                 status="pending")
                    if task is None:
                        notified = True
                        self._notify(request, result)
                yield event
            if task is not None and shadow is not None and result is not None:
                from .learning import challenger

                result.challenger = await challenger.collect(
                    task, shadow.alias, float(self.settings.get("challenger_grace")))
                result.challenger_calls = counter.sent
                task = None
                notified = True
                self._notify(request, result)
                yield ChallengerAnswered(result.id, result.challenger)
        finally:
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if result is not None and not notified:
                # The consumer stopped after Decided: still log the call (challenger cancelled).
                if shadow is not None and (result.challenger is None
                                           or result.challenger.status == "pending"):
                    result.challenger = Vote(model=shadow.alias, answer=None, latency_s=None,
                                             status="cancelled")
                    result.challenger_calls = counter.sent
                self._notify(request, result)

    async def scale(self, request: ScaleRequest) -> ScaleResult:
        return await final_result(self.scale_events(request), Decided)

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
        async def run(item: ScaleRequest) -> ScaleResult:
            return await final_result(self.scale_events(item), Decided, on_event)

        async for outcome in bounded(requests, run,
                                     concurrency or self.settings.get("batch_concurrency")):
            yield outcome

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
