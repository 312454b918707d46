"""generate(): best-of-k with cross-evaluation and test-time search strategies (design §6).

Views use it through the :class:`~fscale_tui.engine.session.Engine` facade (which also logs
the call)::

    async with Engine() as engine:
        async for event in engine.generate_events(GenerateRequest("Write a haiku", k=3)):
            ...                                   # CandidateGenerated, JudgeVoted, ..., Generated
        result = await engine.generate(GenerateRequest("What is 17*23?", strategy="vote", k=5))

Strategies (``GenerateRequest.strategy``; the registry is ``strategies.strategies()``):

``judge`` (default)  k candidates from models of different families; M judges (default k) from
                     outside the generators' families where the catalogue allows, each shown the
                     candidates in its own random order with neutral labels; majority wins.
``vote``             self-consistency: k samples at temperature > 0, majority of the normalised
                     final answers.
``weighted``         weighted best-of-N: a verifier scores each candidate (1-10, or P(yes) from
                     logprobs), scores are summed per distinct final answer.
``usc``              universal self-consistency: one extra call picks the most consistent one.
``tournament``       pairwise knockout; each match judged m times with the sides swapped.
``beam``, ``dvts``   step-wise search with an LLM judge standing in for a process reward model.

Selection rules, tie-breaks and the judge-reply parser are documented in
``strategies/selection.py`` and ``strategies/ballots.py``; step search and how a partial
solution is continued on each provider in ``strategies/search.py``.

Budget accounting: every request goes through one :class:`RequestCounter`, so
``result.calls_made`` is the number of HTTP requests actually sent (retries included).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..ask.context import Context
from ..decide.answers import answers_match, gold_answer
from ..base.spend import Part
from ..base.events import Event, GenerateStarted, Generated
from . import strategies
from .common import Run, pick_generators, pick_judges
from ..base.calls import GenerateRequest, GenerateResult
from ..base.calls import new_call_id

_DONE = object()


def prepare(ctx: Context, request: GenerateRequest) -> Run:
    """Validate the request and choose generators and judges (raises usage errors early)."""
    request.validate(strategies())
    strategy = strategies()[request.strategy]
    default_k = strategy.default_k or ctx.settings.get("k")
    k = request.k or (len(request.models) if request.models else default_k)
    call_id = request.id or new_call_id()
    run = Run(ctx, request, call_id, emit=lambda event: None)
    run.k = k
    if request.candidates is not None:
        run.k = len(request.candidates)
        known = [ctx.settings.models[a] for a in (request.candidate_models or ())
                 if a in ctx.settings.models]
        # Judges are still chosen away from the authors' families.
        run.generators = known or pick_generators(ctx, request, 1)
    else:
        run.generators = pick_generators(ctx, request, k)
    judges = strategy.judge_count(request.judges, k)
    if judges:
        run.judges = pick_judges(ctx, request, run.generators, judges)
    return run


def judge_independence(generators: Sequence[Any], judges: Sequence[Any]
                       ) -> tuple[bool | None, tuple[str, ...]]:
    """(judges_independent, the judges sharing a family with a generator).

    Judges are picked outside the generators' families wherever the catalogue allows; when no
    other family is usable they are not, and every view says so. None: no judges at all.
    """
    if not judges:
        return None, ()
    families = {g.family for g in generators}
    aliases = {g.alias for g in generators}
    same = tuple(j.alias for j in judges if j.family in families or j.alias in aliases)
    return not same, same


async def generate_events(ctx: Context, request: GenerateRequest) -> AsyncIterator[Event]:
    """Run one generate call, yielding its events; the last one is ``Generated``."""
    run = prepare(ctx, request)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    run.emit = queue.put_nowait
    strategy = strategies()[request.strategy].run

    async def main() -> None:
        try:
            result = await strategy(run)
        except BaseException as exc:  # re-raised in the consumer, below
            queue.put_nowait((_DONE, exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        queue.put_nowait((_DONE, result))

    independent, same_family = judge_independence(run.generators, run.judges)
    yield GenerateStarted(run.call_id, request.strategy, tuple(g.alias for g in run.generators),
                          tuple(j.alias for j in run.judges), run.k, independent, same_family)
    task = asyncio.create_task(main())
    outcome: Any = None
    try:
        while True:
            item = await queue.get()
            if isinstance(item, tuple) and len(item) == 2 and item[0] is _DONE:
                outcome = item[1]
                break
            yield item
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if isinstance(outcome, BaseException):
        raise outcome
    result: GenerateResult = outcome
    result.calls_made = run.counter.sent
    usage = Part.of(run.counter.sent, run.replies).to_dict()
    result.usage = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "cost_usd")}
    result.elapsed_s = time.monotonic() - run.started
    result.item_id = request.item_id
    result.judges_independent = independent
    result.same_family_judges = list(same_family)
    if request.gold is not None:
        _check_gold(result, request.gold)
    yield Generated(run.call_id, result)


def _check_gold(result: GenerateResult, gold: str) -> None:
    """Coverage (some candidate is right) beside the selected answer's correctness."""
    expected = gold_answer(gold)
    result.gold = expected
    result.coverage = any(answers_match(c.answer, expected) for c in result.all_outputs if c.ok)
    result.correct = answers_match(result.answer, expected)
