"""The engine facade: the only API the CLI and the TUI use (``async with Engine() as e: ...``).

One engine per run owns the settings, the registry, the health store, the shared HTTP client
(created on first use), the one ask path (:class:`~fscale_tui.engine.ask.asker.Asker`), the call log
and one background writer thread. It exposes

- model calls as async event streams and awaitables: ``scale_events``/``scale``/
  ``scale_batch`` (``-k N``, panels, and ``-k auto`` cascades), ``generate_events``/
  ``generate``/``generate_batch``, ``health_events``/``probe``, ``profile``,
  ``calibrate``, ``refresh_catalogue``;
- the catalogue (``engine.catalog``: models, panels, editing panels) and the call log
  (``engine.calls``: history, one call, ratings, feedback) plus ``propose_evolve`` /
  ``apply_evolve``, as blocking calls (the TUI runs them in thread workers).

Blocking writes (call log, health state) never run on the event loop: they go to the
background writer, in order, and ``aclose()`` drains it.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .ask.asker import Asker
from .ask.context import Context
from .base.background import BackgroundWriter
from .base.batch import bounded, final_result
from .catalog.service import Catalog
from .catalog.config import load_settings
from .base.settings import ModelConfig, Settings
from .wire.coordination import make_coordination
from .base.events import ChallengerAnswered, Decided, Event, Generated, ProbeResult, StageFinished, StageStarted
from .ask.health import PROBE_MESSAGES, HealthStore
from .learning.service import CallLog
from .providers import usable
from .catalog.registry import Registry
from .base.prompts import build_messages
from .decide.vote import VoteRunner, result_from
from .base.calls import GenerateRequest, GenerateResult, ScaleRequest, ScaleResult, StageOutcome, Vote, new_call_id
from .decide.rules import rule_for


if TYPE_CHECKING:  # numpy and the routing modules load only when -k auto or routing is used
    from .routing.calibrate import AdaptiveReport, CalibrationReport
    from .providers.local.control import LocalServers
    from .routing.cascade import Cascade
    from .routing.service import Routing
    from .routing.tasks import Task
    from .wire.client import ChatClient
    from .wire.coordination import SharedView, SpendWindow

class Engine:
    """``on_status``: called on the event loop's thread with events that belong to no call
    but can keep a first run waiting (``Preparing``: a local model's weights being joined,
    ``ServerStarting`` / ``ServerReady``: its server starting); views show them as progress.
    ``origin``: who makes the calls when it is not a person at the CLI (``"mcp"``: an agent),
    logged with each call as ``extra.origin``."""

    def __init__(self, settings: Settings | None = None, *, transport: Any = None,
                 on_status: Callable[[Event], None] | None = None,
                 origin: str | None = None) -> None:
        self.settings = settings or load_settings()
        self.on_status = on_status
        self.writer = BackgroundWriter()
        #: What processes share (send record, health verdicts, exploration counts): the
        #: embedded state directory, or Redis when FSCALE_REDIS_URL / [fleet] redis_url is set.
        self.coordination = make_coordination(self.settings)
        self.health = HealthStore(self.settings, submit=self.writer.submit,
                                  backend=self.coordination.health)
        self.registry = Registry(self.settings, is_down=self.health.is_down)
        self.catalog = Catalog(self.settings, self.registry, self.health)
        self.calls = CallLog(self.settings, self.writer, origin=origin)
        self._transport = transport
        self._client: ChatClient | None = None
        self.asker = Asker(self.settings, lambda: self.client, self.health, self.registry)
        #: What the features (routing, learning, strategies) may use of this engine.
        self.context = Context(self.settings, self.registry, self.asker)
        #: Used by ``--tie-break rating``: the call log's ratings (a snapshot, read off the loop).
        self.rating_of: Callable[[str], float] = self.calls.rating_of
        self._challenger_tasks: set[asyncio.Task[Any]] = set()
        self._cascade: Cascade | None = None
        self._plan_lock = threading.Lock()
        self._draws: SharedView | None = None  # made on first use
        self._spend: SpendWindow | None = None

    def capture_calls(self, sink: Callable[[Any, bool], None]) -> None:
        """Hand every finished call's log record to ``sink(record, learn)`` instead of writing
        it (workers of a distributed batch; the driver writes them with :meth:`record_calls`)."""
        self.calls.sink = sink

    def record_calls(self, records: Iterable[tuple[Any, bool]]) -> int:
        """Write call-log records made elsewhere (e.g. by Ray actors), once, on the writer."""
        n = 0
        for record, learn in records:
            self.calls.record(record, learn=learn)
            n += 1
        return n

    def coordination_info(self) -> dict[str, Any]:
        """Which coordination backend is in use, where, and shared by whom (no secret)."""
        return self.coordination.describe()

    @property
    def routing(self) -> Routing:
        """Clusters, profile reports and routing decisions (blocking; numpy)."""
        from .routing.service import Routing

        return Routing(self.settings)

    @property
    def local(self) -> LocalServers:
        """The embedded local model servers (status, start, stop)."""
        from .providers.local.control import LocalServers

        return LocalServers(self.settings)

    def export_replay(self, path: Any, limit: int = 100_000) -> tuple[int, int]:
        """Write the logged calls as a replay file; -> (lines written, calls read)."""
        from pathlib import Path

        from .providers.replay import replay_lines_from_calls, write_replay_file

        calls = [self.calls.call(f"#{row['seq']}") for row in self.calls.history(limit)]
        ids = {m.alias: m.id for m in self.settings.models.values()}
        return write_replay_file(Path(path), replay_lines_from_calls(calls, ids)), len(calls)

    @property
    def client(self) -> ChatClient:
        """The shared HTTP client, created on first use (commands that ask no model never
        import the HTTP stack)."""
        if self._client is None:
            from .wire.client import ChatClient

            self._client = ChatClient(self.settings, transport=self._transport,
                                      on_status=self.on_status,
                                      limiter=self.coordination.limiter())
        return self._client

    def warm(self) -> None:
        """Do the slow one-time set-up (the HTTP stack's imports, the TLS context) now, e.g.
        in a view's thread worker, so that the first question does not wait on the loop."""
        from .wire.http import ssl_context

        ssl_context()

    async def __aenter__(self) -> "Engine":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for task in list(self._challenger_tasks):
            task.cancel()
        await asyncio.gather(*self._challenger_tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        await self.calls.close()
        # Off the loop: the last writes may wait on another process's lock.
        await asyncio.to_thread(self.writer.close)
        self.coordination.close()

    def close(self) -> None:
        """For views that never started the event loop (blocking commands)."""
        self.writer.close()
        self.coordination.close()

    # -- scale (and -k auto) ---------------------------------------------------------------
    def _select(self, request: ScaleRequest) -> tuple[list[ModelConfig], list[str]]:
        """Members of a plain call and notes for people (e.g. -k capped)."""
        members = self.registry.select(models=request.models, panel=request.panel, k=request.k)
        notes = []
        if request.k is not None and len(members) < request.k:
            notes.append(f"-k {request.k}: only {len(members)} usable model"
                         f"{'s' if len(members) != 1 else ''} ({', '.join(m.alias for m in members)})"
                         " will vote; set another provider's key or declare more models in "
                         "config.toml ('fscale config path') for more")
        return members, notes

    def _auto_plan(self, request: ScaleRequest, tie_break: str, labels: int) -> Any:
        """The ``-k auto`` plan of one request (one at a time: the embedder's cache and
        client are shared)."""
        from .base.budget import configured_budget, parse_budget

        budget = (parse_budget(request.budget) if request.budget is not None
                  else None if request.alpha is not None else configured_budget(self.settings))
        with self._plan_lock:
            return self.cascade().plan(request.question, request.context, lam=request.lam,
                                       tie_break=tie_break, rating_of=self.rating_of,
                                       alpha=request.alpha, labels=labels, budget=budget)

    def cascade(self) -> Cascade:
        """The ``-k auto`` router and cascade, loaded once per engine (numpy only then)."""
        if self._cascade is None:
            from .routing.cascade import Cascade

            self._cascade = Cascade(self.settings, self.registry)
        return self._cascade

    async def scale_events(self, request: ScaleRequest) -> AsyncIterator[Event]:
        """Run one scale call, yielding its events; ``Decided`` comes the moment it is known.

        A plain call is one vote; ``request.auto`` runs the ``-k auto`` cascade, each stage a
        vote of the same runner. With the ``challenger`` setting on, shadow models outside the
        call's models may be asked (within ``shadow_budget``, see ``_plan_shadows``); they never
        affect the decision. Remote shadows run in parallel with the call and get at most
        ``challenger_grace`` seconds after ``Decided``; local ones start only after ``Decided``
        (they would share the CPU with the panel). Their votes are attached
        (``result.challengers``), the call is logged and ``ChallengerAnswered`` yielded. The call
        log and the spend ledger see every call exactly once, even if the consumer stops
        iterating after ``Decided``.
        """
        request.validate()
        call_id = request.id or new_call_id()
        labels = request.labels
        messages = build_messages(request.question, labels, request.context)
        tie_break = request.tie_break or self.settings.get("tie_break")
        from .base.calls import RequestCounter

        counter = RequestCounter()
        used: set[str] = set()
        reserved: set[str] = set()
        ask_kwargs: dict[str, Any] = {
            "max_tokens": request.max_tokens or self.settings.get("max_tokens"),
            "temperature": (self.settings.get("temperature") if request.temperature is None
                            else request.temperature),
            "stream": request.stream, "counter": counter}
        if request.auto:
            # In a worker thread: loading the router reads files, and embedding the question
            # may be an HTTP call to a local embedding server (``--embedding local``).
            plan = await asyncio.to_thread(self._auto_plan, request, tie_break, len(labels))
            exclude = plan.all_members()
            notes = [plan.note] if plan.note else []
        else:
            members, notes = self._select(request)
            exclude = {m.alias for m in members}
        if tie_break == "rating":
            await self.calls.ratings_snapshot()
        aliases = await self._plan_shadows(call_id, exclude, reserved)
        # Shadows on this machine's CPU (embedded local models) would slow the panel down:
        # they start after the decision.
        deferred = any(self.catalog.shares_cpu(a) for a in aliases)
        shadow_kwargs = {**ask_kwargs, "stream": False}
        challenger = None if deferred or not aliases else \
            self._launch_shadows(aliases, call_id, messages, labels, shadow_kwargs)
        started = time.monotonic()
        result: ScaleResult | None = None
        notified = False
        try:
            if request.auto:
                stages = self._auto_stages(plan, call_id, request, messages, used, reserved,
                                           ask_kwargs, counter, started)
            else:
                stages = self._plain_stage(members, call_id, request, messages, used, reserved,
                                           ask_kwargs, counter, started, tie_break)
            async for event in stages:
                if isinstance(event, Decided):
                    result = event.result
                    result.notes = notes + result.notes
                    if aliases:
                        # Announced now; the shadows' votes follow in ChallengerAnswered.
                        result.challengers = [Vote(a, status="pending") for a in aliases]
                    else:
                        notified = True
                        self._log_call(request, result, 0)
                yield event
            if deferred and result is not None:  # the decision is out: now the local shadows
                challenger = self._launch_shadows(aliases, call_id, messages, labels,
                                                  shadow_kwargs)
            if challenger is not None and result is not None:
                # Deferred shadows delay nothing the user waits for: they may finish.
                grace = (max(self.settings.timeout_for(self.settings.models[a].tier)
                             for a in aliases) if deferred
                         else float(self.settings.get("challenger_grace")))
                shadows = await challenger.collect(grace)
                result.challengers = shadows
                result.challenger_calls = challenger.counter.sent
                notified = True
                self._log_call(request, result, len(aliases))
                yield ChallengerAnswered(result.id, result.challenger)
        finally:
            if challenger is not None and not challenger.done():
                await challenger.cancel()
            if result is not None and not notified:
                # The consumer stopped after Decided: still log the call (challenger cancelled).
                if aliases and (result.challenger is None
                                or result.challenger.status == "pending"):
                    result.challengers = [Vote(a, status="cancelled") for a in aliases]
                    result.challenger_calls = challenger.counter.sent if challenger else 0
                self._log_call(request, result, len(aliases))
            elif result is None and aliases and self._spend is not None:
                # The call failed: nothing was spent on it; its reservation goes.
                self._spend.reserved -= len(aliases)
                self._write_spend(self._spend.record(call_id, 0, 0), len(aliases))

    async def _plain_stage(self, members: list[ModelConfig], call_id: str, request: ScaleRequest,
                           messages: list[dict[str, str]], used: set[str], reserved: set[str],
                           ask_kwargs: dict[str, Any], counter: Any, started: float,
                           tie_break: str) -> AsyncIterator[Event]:
        rule = rule_for("majority", tie_break=tie_break, rating_of=self.rating_of)
        runner = VoteRunner(self.asker, members, request.labels, messages, call_id=call_id,
                            rule=rule, used=used, reserved=reserved, ask_kwargs=ask_kwargs)
        async for event in runner.events():
            yield event
        assert runner.tally is not None
        yield Decided(call_id, result_from(call_id, request, runner.votes, runner.tally,
                                           calls_made=counter.sent, started=started,
                                           decided_early=runner.decided_early))

    async def _auto_stages(self, plan: Any, call_id: str, request: ScaleRequest,
                           messages: list[dict[str, str]], used: set[str], reserved: set[str],
                           ask_kwargs: dict[str, Any], counter: Any,
                           started: float) -> AsyncIterator[Event]:
        """``-k auto``: the stages of the plan, each a vote; stop at the first that accepts."""
        labels = request.labels
        votes: list[Vote] = []
        outcomes: list[StageOutcome] = []
        answer: str | None = None
        conf: float | None = None
        decided_early = False
        tally = None
        for index, stage in enumerate(plan.stages):
            names = [m.alias for m in stage.members]
            if stage.skip is not None:
                outcomes.append(StageOutcome(stage.spec, names, None, 0.0, stage.threshold, False,
                                             skipped=stage.skip))
                continue
            yield StageStarted(call_id, index, stage.spec, tuple(names), stage.threshold)
            runner = VoteRunner(self.asker, stage.members, labels, messages, call_id=call_id,
                                rule=stage.rule, threshold=stage.threshold, used=used,
                                reserved=reserved, prior=votes, ask_kwargs=ask_kwargs)
            async for event in runner.events():
                yield event
            votes.extend(runner.votes)
            tally = runner.tally
            assert tally is not None
            c = tally.agreement
            accepted = (stage.threshold is not None and tally.answer is not None
                        and c >= stage.threshold - 1e-12)
            decided_early = decided_early or runner.decided_early
            outcome = StageOutcome(stage.spec, [v.model for v in runner.stage_votes()
                                                if v.status != "replaced"],
                                   tally.answer, c, stage.threshold, accepted,
                                   decided_early=runner.decided_early)
            outcomes.append(outcome)
            yield StageFinished(call_id, index, stage.spec, outcome.answer, c, stage.threshold,
                                accepted)
            if accepted:
                answer, conf = tally.answer, c
                break
        rule = rule_for("majority")
        overall = rule.decide([rule.ballot(v.model, v.answer if v.status == "answered" else None)
                               for v in votes if v.status != "replaced"], labels)
        result = ScaleResult(
            id=call_id, answer=answer, confidence=conf, votes=votes, calls_made=counter.sent,
            elapsed_s=time.monotonic() - started, decided_early=decided_early,
            counts=dict(overall.counts), valid_votes=overall.valid,
            members=[v.model for v in votes if v.status != "replaced"],
            question=request.question, answers=list(labels), item_id=request.item_id,
            auto=True, stages=outcomes, calibrated=plan.calibrated, signal=plan.signal,
            route={"cluster": plan.cluster, "models": plan.routed}, planned=plan.spend)
        if answer is None:
            asked = [v for v in votes if v.status != "replaced"]
            failed = bool(asked) and all(v.status == "failed" for v in asked)
            if failed:
                result.status = "all_failed"
            elif plan.always_answers:  # no abstention asked for: say why there is no answer
                result.status = "tie" if overall.valid else "no_votes"
                result.tied = list(tally.tied) if tally is not None else []
            else:
                result.status = "abstained"
        yield Decided(call_id, result)

    def _log_call(self, request: ScaleRequest, result: ScaleResult, reserved: int) -> None:
        """Log a finished call, and count its decision and shadow requests in the spend ledger
        (``reserved``: the shadows it held in the budget until now)."""
        self.calls.record_scale(request, result)
        window = self._spend
        if window is None:
            return
        window.reserved -= reserved
        entry = window.record(result.id, result.calls_made, result.challenger_calls)
        self._write_spend(entry, reserved)

    def _write_spend(self, entry: tuple[str, int, int], held: int) -> None:
        """A call's entry in the spend ledger, replacing the ``held`` shadows it reserved (on
        the writer thread)."""
        ledger = self.coordination.spend
        window = self._spend
        if window is not None:
            window.queued(entry)

        def write() -> None:
            try:
                ledger.record([entry], {entry[0]: held} if held else None)
            except Exception as exc:  # a spend ledger we cannot write must not stop the call
                from .base import storage

                storage.warnings.append(f"warning: the spend ledger was not written "
                                        f"({type(exc).__name__}: {exc})")
            finally:
                if window is not None:
                    window.written(entry[0])

        self.writer.submit(write)

    def _profiled(self) -> set[str]:
        """Models with a routing profile (labelled accuracy): nothing left to learn label-free.
        Known when this engine loaded the router (``-k auto``)."""
        router = getattr(self._cascade, "router", None)
        return set(getattr(router, "psi", None) or ())

    async def _plan_shadows(self, call_id: str, exclude: set[str],
                            reserved: set[str]) -> list[str]:
        """The shadow challengers of one call (``learning.challenger.plan``): outsiders worth
        exploring — not profiled, of another family than some member (a family's votes never
        vouch for each other), still uncertain and able to take a seat — drawn by Thompson
        sampling from the label-free accuracy posterior (never-rated first), as many as the
        spend budget allows: shadows ≤ ``shadow_budget`` × decision calls over the last 200
        calls of every process of this FSCALE_HOME, at most ``challengers`` per call.
        Their names are reserved for the call (no member substitutes to them), and their
        number in the shared ledger (``SpendLedger.reserve``: processes starting together
        cannot spend the same budget twice)."""
        s = self.settings
        if not s.get("challenger") or not s.get("log_calls"):
            return []  # nothing would record their evidence
        share = float(s.get("shadow_budget"))
        if share <= 0 or int(s.get("challengers")) <= 0:
            return []
        from .learning.challenger import BUDGET_WINDOW, allowance, eligible, plan

        if self._spend is None:
            from .wire.coordination import SpendWindow

            self._spend = SpendWindow(self.coordination.spend, BUDGET_WINDOW)
        # Embedded local models only challenge local panels: starting a llama.cpp server for a
        # shadow vote would cost seconds of CPU on every call of a remote panel.
        local_panel = any(self.catalog.shares_cpu(a) for a in exclude)
        pool = [m for m in s.models.values()
                if local_panel or not self.catalog.shares_cpu(m.alias)]
        family_of = self.calls.family_of
        known = self._profiled()
        families = {family_of(a) for a in exclude}
        # The cheap tests first: most calls of a settled panel stop here, reading nothing.
        candidates = [a for a in eligible(pool, exclude=exclude, available=self.registry.available,
                                          allow_thinking=bool(s.get("challenger_thinking")))
                      if a not in known and families - {family_of(a)}]
        if not candidates:
            return []
        window = self._spend
        if not window.loaded:
            await asyncio.to_thread(window.load)
        budget = allowance(window.window(), share, window.reserved, BUDGET_WINDOW)
        if budget < 1:
            return []
        # The snapshot is read in a thread (a few ms, at most once a second per engine).
        if self._draws is None:
            from .wire.coordination import SharedView

            self._draws = SharedView(self.coordination.draws.load)
        draws = await asyncio.to_thread(self._draws.get) if self._draws._data is None \
            else self._draws.get()
        await self.calls.ratings_snapshot()
        estimates = self.calls.estimates
        seats = [estimates[a].accuracy for a in exclude if a in estimates]
        bar = min(seats) if len(seats) == len(exclude) and seats else None
        aliases = plan(candidates, estimates, budget=budget, max_k=int(s.get("challengers")),
                       voters=exclude, family_of=family_of, known=known, draws=draws, bar=bar)
        if not aliases:
            return []
        # This engine's calls still on their way to the ledger (queued behind the call log's
        # writes, which a reader may hold up) count as if they were there.
        granted = await asyncio.to_thread(self.coordination.spend.reserve, call_id, len(aliases),
                                          share, BUDGET_WINDOW, window.pending())
        aliases = aliases[:granted]
        if not aliases:
            return []
        window.reserved += len(aliases)
        shared = self.coordination.draws
        for alias in aliases:
            self._draws.put(alias, int(draws.get(alias, 0)) + 1)
            self.writer.submit(functools.partial(shared.add, alias))
            reserved.add(alias)
        return aliases

    def _launch_shadows(self, aliases: list[str], call_id: str, messages: list[dict[str, str]],
                        labels: tuple[str, ...], ask_kwargs: dict[str, Any]) -> Any:
        """Ask the shadows (a ``learning.challenger.Shadows``: collected after the decision)."""
        from .base.calls import RequestCounter
        from .learning.challenger import Shadows

        counter = RequestCounter()
        tasks = [asyncio.ensure_future(self.asker.ask(
            self.settings.models[alias], messages, labels=labels, call_id=call_id,
            **{**ask_kwargs, "counter": counter})) for alias in aliases]
        for task in tasks:
            self._challenger_tasks.add(task)
            task.add_done_callback(self._challenger_tasks.discard)
        return Shadows(aliases, tasks, counter)

    async def scale(self, request: ScaleRequest) -> ScaleResult:
        return await final_result(self.scale_events(request), Decided)

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

    # -- generate ----------------------------------------------------------------------------
    async def generate_events(self, request: GenerateRequest) -> AsyncIterator[Event]:
        """One generate call's events (the last is ``Generated``); the call is logged."""
        from .strategies.generate import generate_events

        async for event in generate_events(self.context, request):
            if isinstance(event, Generated):
                self.calls.record_generate(request, event.result)
            yield event

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        return await final_result(self.generate_events(request), Generated)

    async def generate_batch(self, requests: Iterable[GenerateRequest | Exception], *,
                             concurrency: int | None = None,
                             on_event: Callable[[Event], None] | None = None,
                             ) -> AsyncIterator[tuple[int, GenerateResult | Exception]]:
        async def run(item: GenerateRequest) -> GenerateResult:
            return await final_result(self.generate_events(item), Generated, on_event)

        async for outcome in bounded(requests, run,
                                     concurrency or self.settings.get("batch_concurrency")):
            yield outcome

    # -- health ------------------------------------------------------------------------------
    async def probe(self, model: ModelConfig) -> ProbeResult:
        """One tiny request; classifies the model and persists the verdict. A model whose
        provider has no key is reported ``no_key`` without touching the network."""
        why = self.catalog.why_not(model)
        if why is not None:
            return ProbeResult("health", model.alias, "no_key", None, why)
        status, reply = await self.asker.probe(model, PROBE_MESSAGES,
                                               slow_after=float(self.settings.get("slow_after")))
        return ProbeResult("health", model.alias, status,
                           reply.latency_s if reply.ok else None, reply.error or "")

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
        from .base.errors import ProviderError

        report: dict[str, Any] = {}
        for name, provider in self.settings.providers.items():
            entries = [m for m in self.settings.models.values() if m.provider == name]
            if not entries or not usable(provider, self.settings.env):
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

    # -- routing -----------------------------------------------------------------------------
    @staticmethod
    def tasks(path: str) -> list[Task]:
        """The labelled tasks of a JSONL file (what profile and calibrate run on); a missing
        or malformed file is a usage error naming the line."""
        from .routing.tasks import load_tasks

        return load_tasks(path)

    async def profile(self, tasks: Sequence[Task], models: list[ModelConfig],
                      **kwargs: Any) -> dict[str, int]:
        from .routing.profile import run_profile

        return await run_profile(self.context, tasks, models, **kwargs)

    async def calibrate(self, tasks: Sequence[Task], stages: list[str], *, store: bool = True,
                        force: bool = False, **kwargs: Any) -> CalibrationReport:
        """Calibrate a fixed ``-k auto`` cascade on labelled tasks; stored (``report.stored``)
        unless ``store`` is false, or every call would abstain and ``force`` is not given
        (``report.refused``)."""
        from .routing.calibrate import calibrate_on_tasks, keep

        report = await calibrate_on_tasks(self.context, tasks, stages, **kwargs)
        keep(report, self.settings, store=store, force=force)
        return report

    async def calibrate_adaptive(self, tasks: Sequence[Task], *, store: bool = True,
                                 force: bool = False, **kwargs: Any) -> AdaptiveReport:
        """Choose the adaptive ``-k auto`` stopping rule on labelled tasks (and keep the
        per-stage confidences ``--alpha`` calibrates from); stored as :meth:`calibrate` says."""
        from .routing.calibrate import calibrate_adaptive_on_tasks, keep

        report = await calibrate_adaptive_on_tasks(self.context, tasks, **kwargs)
        keep(report, self.settings, store=store, force=force)
        return report

    # -- learning: evolve --------------------------------------------------------------------
    def propose_evolve(self, panel: str | None = None, *, min_calls: int = 30,
                       size: int | None = None) -> Any:
        """The champion panel for ``panel`` (default: the default panel), ranked by the label-free
        accuracy estimates (``learning.reliability``); Elo ratings ride along for display."""
        from .learning.evolve import propose_panel

        name = panel or self.settings.get("panel")
        current = self.registry.panel(name)
        candidates = [m.alias for m in self.settings.models.values() if self.registry.available(m)]
        models = self.settings.models
        return propose_panel(self.calls.ratings(), current, candidates=candidates,
                             family_of=lambda a: models[a].family if a in models else a,
                             size=size, min_calls=min_calls, name=name,
                             estimates=self.calls.reliability())

    def apply_evolve(self, proposal: Any) -> None:
        from .learning.evolve import apply_panel

        apply_panel(self.settings, proposal)
