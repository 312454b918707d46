"""Crash-safe files shared by several processes.

Every write goes to a temporary file in the same directory, is fsynced, then renamed over the
target, so a reader (or a process killed mid-write) only ever sees the old or the new content.
Read-modify-write cycles hold an exclusive ``fcntl`` lock on a sibling ``.lock`` file, so
concurrent processes serialise instead of losing each other's updates. A file that cannot be
parsed is moved aside (``name.corrupt-<timestamp>``) with a warning, never silently overwritten
(this is for fscale's own state files; the user's config.toml is never moved, see config.py).
Files are written 0600 and the folders created for them 0700. A temporary file is named
``.<name>.<pid>.<random>.tmp``; one whose writer was killed (its pid is gone) is removed by the
next write of the same file.
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
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger("fscale")
T = TypeVar("T")

#: Warnings about files moved aside; views show them (the CLI on stderr).
warnings: list[str] = []


#: Files fscale writes are private to the user (they hold prompts, replies, ratings), and so are
#: the folders it creates for them.
FILE_MODE = 0o600
DIR_MODE = 0o700
#: A temporary file whose writer's pid cannot be read is left alone for this long (seconds).
STALE_TEMP_AGE = 600.0


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) with mode 0700 if it does not exist yet."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return path


def _temp_prefix(path: Path) -> str:
    """Temporary files of ``path`` carry their writer's pid: ``.<name>.<pid>.<random>.tmp``."""
    return f".{path.name}.{os.getpid()}."


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(path: Path) -> list[Path]:
    """Remove temporary files of ``path`` left by a writer that was killed mid-write.

    A temp file is stale when the pid in its name is no longer running (another live writer's
    file is never touched), or, for names without a pid, when it is older than STALE_TEMP_AGE.
    """
    removed = []
    head = f".{path.name}."
    try:
        candidates = [p for p in path.parent.iterdir()
                      if p.name.startswith(head) and p.name.endswith(".tmp")]
    except OSError:
        return removed
    for tmp in candidates:
        pid_text = tmp.name[len(head):].split(".", 1)[0]
        try:
            if pid_text.isdigit():
                stale = int(pid_text) != os.getpid() and not pid_alive(int(pid_text))
            else:
                stale = time.time() - tmp.stat().st_mtime > STALE_TEMP_AGE
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + fsync + rename), mode 0600."""
    ensure_dir(path.parent)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
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


def atomic_write_text(path: Path, text: str, mode: int = FILE_MODE) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive cross-process lock associated with ``path``."""
    lock_path = path.with_name(path.name + ".lock")
    ensure_dir(lock_path.parent)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
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


def open_sqlite(path: Path, *, timeout: float, readonly: bool = False,
                check_same_thread: bool = True) -> "sqlite3.Connection":
    """The one way fscale opens a SQLite database (call log, send limiter, embedding cache).

    The file is never opened outside SQLite: closing *any* descriptor of a SQLite file drops
    every POSIX lock this process holds on it, so another process may then checkpoint and
    delete the WAL under a live connection of ours (SQLite's "How To Corrupt", §2.2) — calls
    written afterwards go to a deleted file and are lost. Privacy is set by path (``chmod``,
    which opens nothing); SQLite gives its -wal and -shm files the database file's mode.
    ``readonly`` opens with ``mode=ro`` and creates nothing.
    """
    import sqlite3
    from urllib.parse import quote

    path = Path(path)
    if readonly:
        return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=timeout,
                               isolation_level=None, check_same_thread=check_same_thread)
    ensure_dir(path.parent)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                           check_same_thread=check_same_thread)
    with contextlib.suppress(OSError):
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            os.chmod(path, FILE_MODE)
    return conn
