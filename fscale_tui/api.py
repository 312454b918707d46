"""Synchronous Python API: thin wrappers that run the async engine with ``asyncio.run``.

Inside an already running event loop (a notebook, an async app) use the engine directly::

    async with Engine() as engine:
        result = await engine.scale(ScaleRequest(question, ("YES", "NO")))
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .engine.base.settings import Settings
from .engine.base.errors import UsageError
from .engine.session import Engine
from .engine.base.calls import ScaleRequest, ScaleResult

if TYPE_CHECKING:
    from .engine.base.calls import GenerateRequest, GenerateResult

__all__ = ["scale", "scale_batch", "ScaleResult", "ScaleRequest", "generate", "generate_batch",
           "GenerateResult", "GenerateRequest"]


T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise UsageError("fscale.scale() was called inside a running event loop: "
                     "use 'async with Engine() as e: await e.scale(...)' instead")


def _listed(value: Any) -> Any:
    """A sequence given to the API as the list the schema expects (a string stays a string)."""
    if value is None or isinstance(value, (str, list)):
        return value
    try:
        return list(value)
    except TypeError:
        return value  # not a sequence: the schema says what it must be


def _request(question: str, answers: str | Sequence[str], *, context: str | None = None,
             k: int | str | None = None, panel: str | None = None,
             models: str | Sequence[str] | None = None, tie_break: str | None = None,
             item_id: str | None = None, alpha: float | None = None,
             budget: str | None = None) -> ScaleRequest:
    """The same request the CLI builds, through the same schema as a batch line
    (``engine/items.py``): ``answers``/``models`` as a list or a comma string, ``k`` a number
    or ``"auto"``; a wrong type is a UsageError naming the argument, never coerced."""
    from .engine.items import scale_api_request

    item = {"question": question, "answers": _listed(answers), "context": context, "k": k,
            "panel": panel, "models": _listed(models), "id": item_id}
    return scale_api_request({n: v for n, v in item.items() if v is not None},
                             {"tie_break": tie_break, "alpha": alpha,
                              "budget": None if budget is None else str(budget)})


def scale(question: str, answers: str | Sequence[str], *, context: str | None = None,
          k: int | str | None = None, panel: str | None = None,
          models: str | Sequence[str] | None = None,
          tie_break: str | None = None, settings: Settings | None = None,
          alpha: float | None = None, budget: str | None = None) -> ScaleResult:
    """Ask several models to classify; returns the decision with votes and confidence.

    ``answers`` is a list of labels or a comma-separated string (``"YES,NO"``); ``k`` a number
    or ``"auto"`` (the routed models, as few as the evidence allows, as ``fscale scale -k
    auto``); ``alpha`` with ``k="auto"``: abstain unless calibrated-confident at that risk;
    ``budget`` with ``k="auto"``: ``"0.7x"`` of the best single model's price, or USD per item."""
    request = _request(question, answers, context=context, k=k, panel=panel, models=models,
                       tie_break=tie_break, alpha=alpha, budget=budget)

    async def go() -> ScaleResult:
        async with Engine(settings) as engine:
            return await engine.scale(request)

    return _run(go())


def scale_batch(items: Iterable[dict[str, Any]], *, k: int | str | None = None,
                panel: str | None = None,
                models: Sequence[str] | None = None, tie_break: str | None = None,
                concurrency: int | None = None, settings: Settings | None = None,
                budget: str | None = None) -> list[ScaleResult | Exception]:
    """Classify many items (dicts with question, answers, optional context and id).

    Returns one entry per item in input order: a ScaleResult, or the exception that item
    raised (a bad item never stops the batch). An item's ``id`` is kept as ``item_id``; every
    call gets its own unique call id.
    """
    from .engine.items import convert_item, scale_api_request

    defaults = {"k": convert_item({"question": "-", "k": k}, _scale_schema()).k,
                "panel": panel, "models": tuple(_listed(models)) if models else None,
                "tie_break": tie_break, "budget": None if budget is None else str(budget)}
    requests: list[ScaleRequest | Exception] = []
    for item in items:
        try:
            requests.append(scale_api_request(item, defaults))
        except UsageError as exc:  # one bad item is one error entry; the others run
            requests.append(exc)

    async def go() -> list[ScaleResult | Exception]:
        out: list[ScaleResult | Exception | None] = [None] * len(requests)
        async with Engine(settings) as engine:
            async for index, outcome in engine.scale_batch(requests, concurrency=concurrency):
                out[index] = outcome
        return out  # type: ignore[return-value]

    return _run(go())


# -- generate ------------------------------------------------------------------------------------
_GENERATE_FIELDS = ("context", "k", "strategy", "judges", "models", "panel", "judge_models",
                    "max_tokens", "temperature", "max_steps", "width", "gold", "seed", "verifier",
                    "early_stop", "candidates", "candidate_models", "id")


def _scale_schema() -> Any:
    from .engine.items import ScaleItem

    return ScaleItem


def _generate_request(question: str, **fields: Any) -> "GenerateRequest":
    """A generate request through the same schema as a batch line (``engine/items.py``)."""
    from .engine.items import generate_api_request

    given = {k: _listed(v) for k, v in fields.items() if v is not None}
    return generate_api_request({"question": question, **given}, {})


def generate(question: str, *, context: str | None = None, k: int | None = None,
             strategy: str = "judge", judges: int | None = None,
             models: Sequence[str] | None = None, panel: str | None = None,
             judge_models: Sequence[str] | None = None, max_tokens: int | None = None,
             temperature: float | None = None, max_steps: int | None = None,
             width: int | None = None, gold: str | None = None, seed: int | None = None,
             verifier: str | None = None, early_stop: bool | None = None,
             candidates: Sequence[str] | None = None,
             candidate_models: Sequence[str] | None = None,
             settings: Settings | None = None) -> "GenerateResult":
    """Generate k candidates and select one (strategy: judge, vote, weighted, usc, tournament,
    beam, dvts). Returns a GenerateResult: output, all_outputs, winner_model, judge_votes,
    calls_made, elapsed_s (and coverage / correct when ``gold`` is given). ``candidates``
    (with optional ``candidate_models``) skips generation: only the selection runs."""
    request = _generate_request(question, context=context, k=k, strategy=strategy, judges=judges,
                                models=models, panel=panel, judge_models=judge_models,
                                max_tokens=max_tokens, temperature=temperature,
                                max_steps=max_steps, width=width, gold=gold, seed=seed,
                                verifier=verifier, early_stop=early_stop,
                                candidates=candidates, candidate_models=candidate_models)

    async def go() -> "GenerateResult":
        async with Engine(settings) as engine:
            return await engine.generate(request)

    return _run(go())


def generate_batch(items: Iterable[dict[str, Any]], *, concurrency: int | None = None,
                   settings: Settings | None = None, **defaults: Any) -> list["GenerateResult | Exception"]:
    """Generate for many items (dicts with question and optional context, id, gold, k,
    strategy, models, ...); keyword arguments are defaults for every item.

    Returns one entry per item in input order: a GenerateResult, or the exception that item
    raised (a bad item never stops the batch).
    """
    unknown = set(defaults) - set(_GENERATE_FIELDS)
    if unknown:
        raise UsageError(f"unknown option(s) for generate_batch: {', '.join(sorted(unknown))}")
    from .engine.items import generate_api_request

    given = {k: _listed(v) for k, v in defaults.items() if v is not None}
    requests: list[GenerateRequest | Exception] = []
    for item in items:
        try:
            if not isinstance(item, dict):
                raise UsageError(f"an item must be a dict, not {type(item).__name__}")
            requests.append(generate_api_request({**given, **item}, {}))
        except UsageError as exc:  # one bad item is one error entry; the others run
            requests.append(exc)

    async def go() -> list[GenerateResult | Exception]:
        out: list[Any] = [None] * len(requests)  # every place is filled by the batch
        async with Engine(settings) as engine:
            async for index, outcome in engine.generate_batch(requests, concurrency=concurrency):
                out[index] = outcome
        return out

    return _run(go())
