"""Running many calls at once with a bound, for ``scale --batch`` and ``generate --batch``."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
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
                  *, window: int | None = None,
                  ) -> AsyncIterator[tuple[int, R | Exception]]:
    """Run ``run(item)`` for every item, at most ``concurrency`` at once; yield
    ``(index, outcome)`` in completion order. An item that is already an exception (a bad input
    line) is passed through, and an item that raises yields its exception: one failure never
    stops the others. Leaving the loop early cancels what is still running.

    ``items`` is consumed lazily — a list, or an iterator that reads and decodes a file line by
    line, pulled in a worker thread so that reading a slow pipe never blocks the event loop —
    and never more than ``window`` items past the oldest unfinished one (default
    ``4 × concurrency``): a caller that prints in input order holds at most that many results,
    and memory stays flat however long the input is."""
    limit = max(1, concurrency)
    window = max(limit, window or 4 * limit)
    in_memory = isinstance(items, (list, tuple))
    source = iter(items)
    fetched: collections.deque[Any] = collections.deque()
    exhausted = False
    running: dict[asyncio.Future[Any], int] = {}
    finished: set[int] = set()  # indices done, above the oldest unfinished one
    oldest = 0  # every index below is finished
    started = 0  # the next index to start

    def finish(index: int) -> None:
        nonlocal oldest
        finished.add(index)
        while oldest in finished:
            finished.discard(oldest)
            oldest += 1

    async def one(item: Any) -> R | Exception:
        try:
            return await run(item)
        except Exception as exc:  # isolated per item; its error line still names the item
            if getattr(exc, "item_id", None) is None:
                try:
                    exc.item_id = getattr(item, "item_id", None)  # type: ignore[attr-defined]
                except AttributeError:
                    pass
            return exc

    try:
        while True:
            ready: list[tuple[int, Exception]] = []
            while len(running) < limit and started < oldest + window:
                if not fetched:
                    if exhausted:
                        break
                    want = min(limit, oldest + window - started)
                    more = _take(source, want) if in_memory else \
                        await asyncio.to_thread(_take, source, want)
                    if len(more) < want:
                        exhausted = True
                    if not more:
                        break
                    fetched.extend(more)
                item = fetched.popleft()
                index, started = started, started + 1
                if isinstance(item, Exception):
                    finish(index)
                    ready.append((index, item))
                else:
                    running[asyncio.ensure_future(one(item))] = index
            for outcome in ready:
                yield outcome
            if not running:
                if exhausted and not fetched:
                    return
                continue
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=running.__getitem__):
                index = running.pop(task)
                finish(index)
                yield index, task.result()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def _take(source: Iterator[Any], n: int) -> list[Any]:
    """Up to ``n`` more items of ``source`` (fewer only at its end)."""
    out = []
    for item in source:
        out.append(item)
        if len(out) >= n:
            break
    return out
