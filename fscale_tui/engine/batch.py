"""Running many calls at once with a bound, for ``scale --batch`` and ``generate --batch``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

R = TypeVar("R")


async def final_result(events: AsyncIterator[Any], final: type,
                       on_event: Callable[[Any], None] | None = None) -> Any:
    """Consume a call's event stream to its end; return the ``result`` of its ``final`` event."""
    result = None
    async for event in events:
        if on_event is not None:
            on_event(event)
        if isinstance(event, final):
            result = event.result
    if result is None:
        raise RuntimeError(f"the event stream ended without {final.__name__}")
    return result


async def bounded(items: Iterable[Any], run: Callable[[Any], Awaitable[R]], concurrency: int,
                  ) -> AsyncIterator[tuple[int, R | Exception]]:
    """Run ``run(item)`` for every item, at most ``concurrency`` at once; yield
    ``(index, outcome)`` in completion order. An item that is already an exception (a bad input
    line) is passed through, and an item that raises yields its exception: one failure never
    stops the others. Leaving the loop early cancels what is still running."""
    limit = asyncio.Semaphore(max(1, concurrency))
    done: asyncio.Queue[tuple[int, R | Exception]] = asyncio.Queue()

    async def one(index: int, item: Any) -> None:
        if isinstance(item, Exception):
            done.put_nowait((index, item))
            return
        async with limit:
            try:
                outcome: R | Exception = await run(item)
            except Exception as exc:  # isolated per item
                outcome = exc
        done.put_nowait((index, outcome))

    tasks = [asyncio.create_task(one(i, item)) for i, item in enumerate(items)]
    try:
        for _ in range(len(tasks)):
            yield await done.get()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
