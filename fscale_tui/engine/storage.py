"""Crash-safe files shared by several processes.

Every write goes to a temporary file in the same directory, is fsynced, then renamed over the
target, so a reader (or a process killed mid-write) only ever sees the old or the new content.
Read-modify-write cycles hold an exclusive ``fcntl`` lock on a sibling ``.lock`` file, so
concurrent processes serialise instead of losing each other's updates. A file that cannot be
parsed is moved aside (``name.corrupt-<timestamp>``) with a warning, never silently overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("fscale")
T = TypeVar("T")

#: Warnings about files moved aside; views show them (the CLI on stderr).
warnings: list[str] = []


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + fsync + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # fsync the directory so the rename itself survives a crash.
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive cross-process lock associated with ``path``."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def move_aside(path: Path, reason: str) -> Path:
    """Rename an unreadable file out of the way and record a warning."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, target)
    from .redact import redact

    message = redact(f"warning: {path} could not be read ({reason}); moved aside to {target.name}")
    warnings.append(message)
    log.warning(message)
    return target


def read_parsed(path: Path, parse: Callable[[bytes], T], default: Callable[[], T]) -> T:
    """Read and parse ``path``; a missing file gives ``default()``, a corrupt one is moved aside."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return default()
    try:
        return parse(raw)
    except Exception as exc:  # any parse failure means the file is unusable as it is
        move_aside(path, f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
        return default()


def _parse_json_object(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def read_json(path: Path) -> dict[str, Any]:
    return read_parsed(path, _parse_json_object, dict)


def write_json(path: Path, value: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def update_json(path: Path, change: Callable[[dict[str, Any]], T]) -> T:
    """Read-modify-write a JSON object file under the lock; ``change`` mutates it in place."""
    with locked(path):
        value = read_json(path)
        result = change(value)
        write_json(path, value)
        return result
