"""Synchronous Python API: thin wrappers that run the async engine with ``asyncio.run``.

Inside an already running event loop (a notebook, an async app) use the engine directly::

    async with Engine() as engine:
        result = await engine.scale(ScaleRequest(question, ("YES", "NO")))
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from .engine.config import Settings
from .engine.errors import UsageError
from .engine.session import Engine
from .engine.vote import ScaleRequest, ScaleResult

__all__ = ["scale", "scale_batch", "ScaleResult", "ScaleRequest"]


def _run(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise UsageError("fscale.scale() was called inside a running event loop: "
                     "use 'async with Engine() as e: await e.scale(...)' instead")


def _request(question: str, answers: Sequence[str], *, context: str | None = None,
             k: int | None = None, panel: str | None = None, models: Sequence[str] | None = None,
             tie_break: str | None = None, id: str | None = None) -> ScaleRequest:
    return ScaleRequest(question=question, answers=tuple(answers), context=context,
                        models=tuple(models) if models else None, panel=panel, k=k,
                        tie_break=tie_break, id=id)


def scale(question: str, answers: Sequence[str], *, context: str | None = None,
          k: int | None = None, panel: str | None = None, models: Sequence[str] | None = None,
          tie_break: str | None = None, settings: Settings | None = None) -> ScaleResult:
    """Ask several models to classify; returns the decision with votes and confidence."""
    request = _request(question, answers, context=context, k=k, panel=panel, models=models,
                       tie_break=tie_break)

    async def go() -> ScaleResult:
        async with Engine(settings) as engine:
            return await engine.scale(request)

    return _run(go())


def scale_batch(items: Iterable[dict[str, Any]], *, k: int | None = None, panel: str | None = None,
                models: Sequence[str] | None = None, tie_break: str | None = None,
                concurrency: int | None = None,
                settings: Settings | None = None) -> list[ScaleResult | Exception]:
    """Classify many items (dicts with question, answers, optional context and id).

    Returns one entry per item in input order: a ScaleResult, or the exception that item
    raised (a bad item never stops the batch).
    """
    requests: list[ScaleRequest | Exception] = []
    for item in items:
        try:
            requests.append(_request(item["question"], item["answers"], context=item.get("context"),
                                     k=item.get("k", k), panel=item.get("panel", panel),
                                     models=item.get("models", models), tie_break=tie_break,
                                     id=item.get("id")))
        except (KeyError, TypeError) as exc:
            requests.append(UsageError(f"bad item: missing or invalid {exc}"))

    async def go() -> list[ScaleResult | Exception]:
        out: list[ScaleResult | Exception | None] = [None] * len(requests)
        async with Engine(settings) as engine:
            async for index, outcome in engine.scale_batch(requests, concurrency=concurrency):
                out[index] = outcome
        return out  # type: ignore[return-value]

    return _run(go())
