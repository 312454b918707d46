"""Running many calls at once with a bound, for ``scale --batch`` and ``generate --batch``."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class _Final(Protocol[R_co]):
    """The event that ends a call's stream (``Decided``, ``Generated``): it carries the result."""

    @property
    def result(self) -> R_co: ...


async def final_result(events: AsyncIterator[Any], final: type[_Final[R]],
                       on_event: Callable[[Any], None] | None = None) -> R:
    """Consume a call's event stream to its end; return the ``result`` of its ``final`` event."""
    result: R | None = None
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

    ``items`` is consumed lazily: a list directly; any other iterable (a file or stdin read and
    decoded line by line) by a reader thread, so a slow pipe never blocks the event loop and
    each line runs as soon as it arrives. Never more than ``window`` items (default
    ``4 × concurrency``) are taken past the oldest unfinished one: a caller that prints in
    input order holds at most that many results, and memory stays flat however long the
    input is."""
    limit = max(1, concurrency)
    feed = _Feed(items, max(limit, window or 4 * limit))
    running: dict[asyncio.Future[Any], int] = {}
    arrival: asyncio.Future[Any] | None = None

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
            while len(running) < limit:
                taken = feed.take()
                if taken is None:
                    break
                index, item = taken
                if isinstance(item, Exception):
                    feed.finish(index)
                    yield index, item
                else:
                    running[asyncio.ensure_future(one(item))] = index
            feed.raise_failure()
            if not running and feed.exhausted:
                return
            waiting = set(running)
            if len(running) < limit and not feed.exhausted:
                if arrival is None:
                    arrival = asyncio.ensure_future(feed.arrived())
                waiting.add(arrival)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if arrival is not None and arrival in done:
                arrival = None
            for task in sorted((t for t in done if t in running), key=running.__getitem__):
                index = running.pop(task)
                feed.finish(index)
                yield index, task.result()
    finally:
        feed.close()
        pending = [*running, *([arrival] if arrival is not None else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class _Feed:
    """The items of :func:`bounded`, numbered, taken at most ``window`` past the oldest
    unfinished one: from a list directly, from any other iterable through a reader thread."""

    def __init__(self, items: Iterable[Any], window: int) -> None:
        self.window = window
        self.oldest = 0  # every index below is finished
        self._finished: set[int] = set()
        self._next = 0  # the index of the next item taken
        self._buffer: collections.deque[Any] = collections.deque()
        self._failure: BaseException | None = None
        self._end = False
        self._list = items if isinstance(items, (list, tuple)) else None
        self._event: asyncio.Event | None = None
        if self._list is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
            self._room = threading.Condition()
            self._read = 0  # items the reader has produced
            self._closed = False
            self._incoming: collections.deque[tuple[Any, bool, bool]] = collections.deque()
            self._wake_pending = False
            threading.Thread(target=self._reader, args=(iter(items),), daemon=True,
                             name="fscale-batch-reader").start()

    # -- the reader thread ------------------------------------------------------------------
    def _reader(self, source: Iterator[Any]) -> None:
        # Once the window is full, wait until half of it is free and read on in a burst: one
        # wake-up per half window instead of a thread switch per item.
        refill = max(1, self.window // 2)
        try:
            for item in source:
                with self._room:
                    if self._read >= self.oldest + self.window:
                        while self._read > self.oldest + self.window - refill \
                                and not self._closed:
                            self._room.wait()
                    if self._closed:
                        return
                    self._read += 1
                self._post(item, end=False)
            self._post(None, end=True)
        except BaseException as exc:  # a read error ends the batch with that error
            self._post(exc, end=True, failure=True)

    def _post(self, item: Any, *, end: bool, failure: bool = False) -> None:
        # Items land in a thread-safe deque; the loop is woken once per batch of them (not per
        # item) while it has not yet drained the previous ones.
        self._incoming.append((item, end, failure))
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is gone: nobody is waiting any more
                pass

    def _drain(self) -> None:
        self._wake_pending = False  # before draining: a later post schedules another drain
        while self._incoming:
            item, end, failure = self._incoming.popleft()
            if failure:
                self._failure = item
            elif not end:
                self._buffer.append(item)
            if end:
                self._end = True
        assert self._event is not None
        self._event.set()

    # -- the event loop side ----------------------------------------------------------------
    @property
    def exhausted(self) -> bool:
        """No item will be taken any more."""
        if self._list is not None:
            return self._next >= len(self._list)
        return self._end and not self._buffer

    def take(self) -> tuple[int, Any] | None:
        """The next ``(index, item)`` if one is ready and within the window, else None."""
        if self._next >= self.oldest + self.window:
            return None
        if self._list is not None:
            if self._next >= len(self._list):
                return None
            item = self._list[self._next]
        elif self._buffer:
            item = self._buffer.popleft()
        else:
            return None
        index, self._next = self._next, self._next + 1
        return index, item

    async def arrived(self) -> None:
        """Return once the reader has posted something (an item, the end or a failure)."""
        assert self._event is not None
        await self._event.wait()
        self._event.clear()

    def finish(self, index: int) -> None:
        self._finished.add(index)
        moved = False
        while self.oldest in self._finished:
            self._finished.discard(self.oldest)
            self.oldest += 1
            moved = True
        # Wake the reader only when it can read a burst (see _reader).
        if moved and self._list is None \
                and self._read <= self.oldest + self.window - max(1, self.window // 2):
            with self._room:
                self._room.notify()

    def raise_failure(self) -> None:
        if self._failure is not None and not self._buffer:
            raise self._failure

    def close(self) -> None:
        if self._list is None:
            with self._room:
                self._closed = True
                self._room.notify()
