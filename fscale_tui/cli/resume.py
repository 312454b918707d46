"""``--batch FILE --resume OUT``: finish a batch that was stopped (Ctrl-C, SIGTERM, a crash).

OUT is the JSONL output of the earlier run (``fscale scale --batch FILE > OUT``). Every item
whose result is already in OUT is skipped; the others run, and their results are appended to
OUT, so that in the end OUT holds every item once. An item is matched by its ``item_id`` (the
item's own ``id``), or by its position in FILE (``index``) when it has none. A line that a
killed process left half-written at the end of OUT is cut off first (that item runs again).
Nothing goes to stdout: the results are in OUT.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..engine.base.errors import UsageError

T = TypeVar("T")


def result_key(item_id: Any, index: int | None) -> str:
    """How a result line and an item are matched: the item's id, else its line's position."""
    return f"id:{item_id}" if item_id is not None else f"#{index}"


class ResumeFile:
    """What OUT already holds, and where the remaining results go."""

    def __init__(self, path: str) -> None:
        if path == "-":
            raise UsageError("--resume needs the output FILE of the earlier run, not '-'")
        self.path = Path(path)
        #: key -> status of every result line already in OUT.
        self.done: dict[str, str] = {}
        #: Bytes of a torn last line that were cut off (0: none).
        self.cut = 0
        self._read()

    def _read(self) -> None:
        """Line by line (OUT may be large): the results it holds, and a torn last line cut."""
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise UsageError(f"--resume {str(self.path)!r}: cannot be read ({exc.strerror})") \
                from None
        end = 0  # the end of the last complete line
        with fh:
            for line in fh:
                if not line.endswith(b"\n"):  # half-written by a killed process: runs again
                    self.cut = len(line)
                    break
                end += len(line)
                try:
                    obj = json.loads(line) if line.strip() else None
                except ValueError:
                    obj = None
                if isinstance(obj, dict) and isinstance(obj.get("status"), str):
                    index = obj.get("index")
                    key = result_key(obj.get("item_id"), index if isinstance(index, int) else None)
                    self.done[key] = obj["status"]
        if self.cut:
            os.truncate(self.path, end)

    def pending(self, items: Iterable[T]) -> tuple[Iterator[T], list[int]]:
        """The items without a result in OUT (a stream: the batch reads them as it runs), and
        their positions in the batch file (filled as the stream is read)."""
        where: list[int] = []

        def keep() -> Iterator[T]:
            for index, item in enumerate(items):
                if result_key(getattr(item, "item_id", None), index) not in self.done:
                    where.append(index)
                    yield item

        return keep(), where

    def note(self, total: int | None) -> str:
        cut = " (a half-written last line was cut off)" if self.cut else ""
        done = len(self.done)
        if total is None:
            return f"resuming {self.path}: {done} item{'s' if done != 1 else ''} already done{cut}"
        return (f"resuming {self.path}: {min(done, total)} of {total} item"
                f"{'s' if total != 1 else ''} already done{cut}; {max(0, total - done)} to go")

    def writer(self, print_json: Callable[..., None]) -> Callable[[dict[str, Any]], None]:
        """A function appending one result line to OUT with ``print_json(obj, file=...)`` (each
        line written and flushed whole); :meth:`close` closes OUT."""
        self._stream = open(self.path, "a", encoding="utf-8")  # the user's output file

        def write(obj: dict[str, Any]) -> None:
            print_json(obj, file=self._stream)

        return write

    def close(self) -> None:
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.close()
