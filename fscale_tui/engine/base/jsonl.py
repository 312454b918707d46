"""The one JSONL reader every command uses (batch files, task files, replay files, data sets).

A JSONL record ends at ``\\n`` and nowhere else. ``str.splitlines()`` also splits on U+2028,
U+2029, U+0085, form feeds and other characters that are legal *inside* a JSON string, which
cut one record in two and shifted every later line number; this reader reads bytes, splits on
``b"\\n"`` only, and decodes each line as UTF-8 on its own, so one undecodable or malformed
line becomes an error for that line while every other line is still read.

``iter_jsonl`` yields ``(lineno, value_or_error)`` for tolerant readers (a batch turns a bad
line into one error result); ``read_jsonl`` raises a :class:`UsageError` naming ``file:line``
for strict readers (task and replay files).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import FscaleError, UsageError


class JSONLError(ValueError):
    """One line that is not valid UTF-8 or not valid JSON (the message says which)."""


def split_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(lineno, line)`` for every line of ``data``, split on ``\\n`` only (``\\r\\n`` too)."""
    for lineno, line in enumerate(data.split(b"\n"), 1):
        yield lineno, line[:-1] if line.endswith(b"\r") else line


def parse_line(line: bytes | str) -> Any:
    """One JSON value from one line; :class:`JSONLError` if it is not UTF-8 or not JSON."""
    if isinstance(line, bytes):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONLError(f"not valid UTF-8 (byte 0x{line[exc.start]:02x} at column "
                             f"{exc.start + 1})") from None
    else:
        text = line
    if text.startswith("\ufeff"):  # a byte-order mark on the first line
        text = text[1:]
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONLError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise JSONLError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise JSONLError(f"invalid JSON: {exc}") from None


def _parse_numbered(numbered: Iterable[tuple[int, bytes | str]]) -> Iterator[tuple[int, Any]]:
    for lineno, line in numbered:
        if not line.strip():
            continue
        try:
            yield lineno, parse_line(line)
        except JSONLError as exc:
            yield lineno, exc


def iter_lines(lines: Iterable[bytes | str]) -> Iterator[tuple[int, Any]]:
    """Parse already-split lines: ``(lineno, value)`` or ``(lineno, JSONLError)``; blanks skipped."""
    return _parse_numbered((lineno, line.rstrip(b"\r\n") if isinstance(line, bytes)
                            else line.rstrip("\r\n")) for lineno, line in enumerate(lines, 1))


def iter_jsonl(data: bytes) -> Iterator[tuple[int, Any]]:
    """``(lineno, value)`` or ``(lineno, JSONLError)`` for each non-blank line of ``data``."""
    return _parse_numbered(split_lines(data))


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    """The bytes of ``path`` ('-' = stdin); a missing or unreadable file is a UsageError."""
    stream = _open_binary(path, what)
    if stream is None:
        return sys.stdin.buffer.read()
    with stream:
        try:
            return stream.read()
        except OSError as exc:
            raise UsageError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None


def _open_binary(path: str | Path, what: str) -> IO[bytes] | None:
    if str(path) == "-":
        return None
    if not str(path).strip():
        raise UsageError(f"{what}: the file name is empty")
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's generator
    except FileNotFoundError:
        raise UsageError(f"{what} {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {str(path)!r} is a directory") from None
    except OSError as exc:
        raise UsageError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None


def iter_file_lines(path: str | Path, what: str = "file") -> Iterator[tuple[int, bytes]]:
    """Stream ``path`` ('-' = stdin): ``(lineno, line)`` for every non-blank line, read one at a
    time (memory follows the longest line, not the file). Lines end at ``\n`` only and are
    yielded with their terminator (``\n`` or ``\r\n``: whitespace to a JSON decoder, so no
    copy of a long line is made to cut it off)."""
    stream = _open_binary(path, what)
    if stream is None:
        source = getattr(sys.stdin, "buffer", None)
        if source is None:  # replaced by a text-only object (tests, embedding)
            source = (line.encode("utf-8", "surrogatepass") for line in sys.stdin)
        lines: Iterable[bytes] = source
    else:
        lines = stream
    try:
        for lineno, line in enumerate(lines, 1):
            if line and not line.isspace():
                yield lineno, line
    except OSError as exc:
        raise UsageError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    finally:
        if stream is not None:
            stream.close()


def count_items(path: str | Path) -> int:
    """The number of non-blank lines of a file (a batch's total, for its progress bar)."""
    count = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.isspace():
                count += 1
    return count


def read_jsonl(path: str | Path, what: str = "file", *,
               error: type[FscaleError] = UsageError) -> list[tuple[int, Any]]:
    """Strict: every non-blank line of ``path`` as ``(lineno, value)``; the first bad line
    raises ``error("<path>:<lineno>: ...")``."""
    out = []
    for lineno, value in iter_jsonl(read_bytes(path, what)):
        if isinstance(value, JSONLError):
            raise error(f"{what} {str(path)}:{lineno}: {value}")
        out.append((lineno, value))
    return out


__all__ = ["JSONLError", "count_items", "iter_file_lines", "iter_jsonl", "iter_lines", "parse_line",
           "read_bytes", "read_jsonl", "split_lines"]
