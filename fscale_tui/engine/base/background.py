"""One background thread for blocking writes (call log, health state), in the order they happen.

The engine's event loop must never wait on a file lock or a busy SQLite database: another
process may hold either for seconds. Every such write is submitted here instead; a single
daemon thread runs them one after another (so they land in the order they were made) and the
engine drains the queue when it closes, so nothing is lost when the process exits normally.
A process stopped another way (Ctrl-C or SIGTERM while a writer was still open, an exception
past the engine) drains every writer still holding work at interpreter exit (``atexit``), so a
result that was printed is never missing from the call log.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("fscale")
T = TypeVar("T")

_STOP = object()
#: Writers with a running thread (drained at exit, see the module doc).
_LIVE: "weakref.WeakSet[BackgroundWriter]" = weakref.WeakSet()
#: The longest the exit waits for one writer (another process may hold the database).
EXIT_DRAIN_S = 60.0


@atexit.register
def _drain_at_exit() -> None:
    for writer in list(_LIVE):
        writer.drain(EXIT_DRAIN_S)


class BackgroundWriter:
    """A FIFO of callables run on one daemon thread, started on first use."""

    def __init__(self, name: str = "fscale-writer") -> None:
        self.name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        #: Thread-local resources of the writer thread (e.g. its SQLite connection), closed
        #: by the callables registered with :meth:`on_close`.
        self.local: dict[str, Any] = {}
        self._closers: list[Callable[[], None]] = []

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                for close in self._closers:
                    try:
                        close()
                    except Exception:  # closing must not stop the others
                        log.exception("closing a writer resource failed")
                return
            fn, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # reported through the future
                    future.set_exception(exc)
            with self._idle:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.notify_all()

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn()`` on the writer thread after everything submitted before it."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._idle:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
                _LIVE.add(self)
            self._pending += 1
        self._queue.put((fn, future))
        return future

    def on_close(self, close: Callable[[], None]) -> None:
        """Run ``close()`` on the writer thread when it stops (e.g. close its connection)."""
        self._closers.append(close)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far has run; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Drain, then stop the thread (resources registered with on_close are closed)."""
        thread = self._thread
        if thread is None:
            return
        self.drain(timeout)
        self._queue.put(_STOP)
        thread.join(timeout)
        self._thread = None
