"""Crash-safe files shared by several processes.

Every write goes to a temporary file in the same directory, is fsynced, then renamed over the
target, so a reader (or a process killed mid-write) only ever sees the old or the new content.
Read-modify-write cycles hold an exclusive ``fcntl`` lock on a sibling ``.lock`` file, so
concurrent processes serialise instead of losing each other's updates. A file that cannot be
parsed is moved aside (``name.corrupt-<timestamp>``) with a warning, never silently overwritten
(this is for fscale's own state files; the user's config.toml is never moved, see config.py).
A temporary file is named ``.<name>.<pid>.<random>.tmp``; one whose writer was killed (its pid
is gone) is removed by the next write of the same file.

This module is the one place that creates files and folders in fscale's home (a test scans the
package for any other ``mkdir``, ``os.open`` or file opened for writing): folders 0700 (each
missing parent too, not only the last one), files 0600, created with ``O_NOFOLLOW`` (and
``O_EXCL`` where the file is new), and a symbolic link in place of a state file — a JSON file,
a lock, a journal or a SQLite database and its -wal/-shm — is refused, never followed into
someone else's file. The user's config.toml is the exception: it may be a link, and edits go
through it (:func:`resolve_user_file`).

A home that cannot be written (read-only, full, permission denied, a file where a folder should
be) is described by :func:`home_problem`; :class:`~.errors.StateError` carries that as one line
and exit code 2. Warnings go through :func:`warn`, which keeps each one once per process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import sqlite3

T = TypeVar("T")

#: Warnings for people (files moved aside, state that could not be written, a backend given
#: up); views show them (the CLI on stderr). Fill it with :func:`warn`, which keeps each once.
warnings: list[str] = []
_warned: set[str] = set()
_warn_lock = threading.Lock()


def warn(message: str, key: str | None = None) -> bool:
    """Queue ``message`` (redacted) for the views, once per process per ``key`` (default: the
    message itself): a batch that cannot write its call log says so once, not per item.
    Returns whether it was queued."""
    from .redact import redact

    with _warn_lock:
        if (key or message) in _warned:
            return False
        _warned.add(key or message)
        warnings.append(redact(message) or "")
    return True


#: Files fscale writes are private to the user (they hold prompts, replies, ratings), and so are
#: the folders it creates for them.
FILE_MODE = 0o600
DIR_MODE = 0o700
#: A temporary file whose writer's pid cannot be read is left alone for this long (seconds).
STALE_TEMP_AGE = 600.0


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def ensure_dir(path: Path) -> Path:
    """Create ``path`` and every missing parent with mode 0700 (``Path.mkdir(parents=True)``
    would give the parents the umask's 0755). An existing folder is left as it is; a file in
    the way is an OSError (ENOTDIR)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of a folder", str(path))
        return path
    if path.parent != path:
        ensure_dir(path.parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of a folder",
                                     str(path)) from None
    return path


def refuse_link(path: Path) -> None:
    """An OSError (ELOOP) when ``path`` is a symbolic link: fscale's state files are plain files
    of this user, and a link planted in their place must not send a write into another file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise OSError(errno.ELOOP, "is a symbolic link (fscale does not follow links in its "
                                   "state; remove it)", str(path))


def open_private(path: Path, flags: int = os.O_RDWR) -> int:
    """Open (creating it 0600 if missing, and its folders 0700) a file of the home; never
    through a symbolic link. Returns the descriptor (the caller closes it)."""
    path = Path(path)
    ensure_dir(path.parent)
    return os.open(path, flags | os.O_CREAT | _NOFOLLOW | _CLOEXEC, FILE_MODE)


def append_bytes(path: Path, data: bytes, *, sync: bool = False, mend_torn_line: bool = False
                 ) -> int:
    """Append ``data`` to a journal file of the home (0600, never through a link); with
    ``mend_torn_line`` a newline first closes a line a killed writer left unfinished. Returns
    the bytes written. Hold :func:`locked` when several processes append."""
    fd = open_private(path, os.O_RDWR | os.O_APPEND)
    try:
        if mend_torn_line:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end and os.pread(fd, 1, end - 1) != b"\n":
                data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return len(data)


def resolve_user_file(path: Path) -> Path:
    """The file a user's path names, through symbolic links (config.toml may be a link to a
    dotfiles repository; an edit must change that file, not replace the link)."""
    return Path(os.path.realpath(path))


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
    removed: list[Path] = []
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


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = FILE_MODE) -> Iterator[Any]:
    """Write ``path`` atomically through a binary file object: a temp file in the same folder
    (0600, ``O_EXCL``), fsynced and renamed over ``path`` when the block ends; an exception in
    the block removes the temp file and leaves ``path`` as it was. The rename replaces a
    symbolic link at ``path`` (it never writes through it)."""
    path = Path(path)
    ensure_dir(path.parent)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
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


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + fsync + rename), mode 0600."""
    with atomic_file(path, mode) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str, mode: int = FILE_MODE) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive cross-process lock associated with ``path``."""
    fd = open_private(path.with_name(path.name + ".lock"))
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

    warn(redact(f"warning: {path} could not be read ({reason}); moved aside to {target.name}"))
    return target


def read_bytes(path: Path) -> bytes:
    """A state file's bytes, never through a symbolic link (ELOOP: :func:`refuse_link`)."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path)
        raise
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def read_parsed(path: Path, parse: Callable[[bytes], T], default: Callable[[], T]) -> T:
    """Read and parse ``path``; a missing file gives ``default()``, a corrupt one is moved aside,
    and so is a symbolic link in its place (renaming a link never touches what it points to)."""
    try:
        raw = read_bytes(path)
    except (FileNotFoundError, NotADirectoryError):  # absent (or a file where its folder is)
        return default()
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        move_aside(path, "a symbolic link: fscale does not follow links in its state")
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


#: A database's companion files: SQLite creates them beside it with the database's mode.
SQLITE_SIDES = ("-wal", "-shm", "-journal")


def use_wal(conn: "sqlite3.Connection", *, timeout: float) -> None:
    """Put a SQLite database in WAL mode (the mode is kept in the file: a no-op once it is).

    The switch needs the database to itself. When several processes open a new database at the
    same moment (CLIs started together on a fresh home), SQLite answers "database is locked" at
    once, without waiting on the busy timeout, to all but one of them; and if the one that won
    failed too, the file stays in rollback mode. So the switch is retried until ``timeout``.
    """
    import sqlite3

    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower() == "wal":
                return
            raise sqlite3.OperationalError("database is locked (journal mode not switched)")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def open_sqlite(path: Path, *, timeout: float, readonly: bool = False,
                check_same_thread: bool = True) -> "sqlite3.Connection":
    """The one way fscale opens a SQLite database (call log, send limiter, embedding cache).

    The file is never opened outside SQLite once it exists: closing *any* descriptor of a SQLite
    file drops every POSIX lock this process holds on it, so another process may then checkpoint
    and delete the WAL under a live connection of ours (SQLite's "How To Corrupt", §2.2) — calls
    written afterwards go to a deleted file and are lost. A missing file is created empty first
    (``O_CREAT | O_EXCL | O_NOFOLLOW``, 0600: nobody has it open, so closing that descriptor
    drops no lock), so the database is private from its first byte; SQLite gives its -wal and
    -shm files the database file's mode. The database and its companions must not be symbolic
    links (OSError ELOOP). ``readonly`` opens with ``mode=ro`` and creates nothing; on a
    read-only file system (where a WAL database cannot get its -shm file) it opens the file as
    ``immutable``, which is safe there because nobody can change it (nor on a full disk).
    """
    import sqlite3
    from urllib.parse import quote

    path = Path(path)
    if str(path) == ":memory:":  # an empty log to read from when there is none on disk
        return sqlite3.connect(":memory:", isolation_level=None,
                               check_same_thread=check_same_thread)
    for suffix in ("", *SQLITE_SIDES):
        refuse_link(path.with_name(path.name + suffix))
    if readonly:
        uri = f"file:{quote(str(path))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None,
                                   check_same_thread=check_same_thread)
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
            return conn
        except sqlite3.OperationalError:
            if not (path.exists() and (_read_only_fs(path.parent) or _full(path.parent))):
                raise
        return sqlite3.connect(f"file:{quote(str(path))}?immutable=1", uri=True, timeout=timeout,
                               isolation_level=None, check_same_thread=check_same_thread)
    ensure_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC,
                         FILE_MODE))
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                           check_same_thread=check_same_thread)
    with contextlib.suppress(OSError):
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            os.chmod(path, FILE_MODE)  # an older fscale's database (by path: opens nothing)
    return conn


# -- homes that cannot be written ------------------------------------------------------------
def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _full(folder: Path) -> bool:
    try:
        vfs = os.statvfs(folder)
    except OSError:
        return False
    return vfs.f_bavail == 0 or vfs.f_favail == 0


def _nearest_existing(path: Path) -> Path:
    path = Path(path)
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


_ERRNO_REASONS = {
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a file is in the way of a folder",
    errno.EISDIR: "a folder is in the way of a file",
    errno.ELOOP: "it is a symbolic link, and fscale does not follow links in its state",
}
#: What to do about each reason (the advice ends the one line people see).
_ADVICE = {
    "the disk is full": "free some space",
    "the disk quota is exhausted": "free some space",
    "it is a symbolic link, and fscale does not follow links in its state": "remove the link",
}


def advice(why: str) -> str:
    """What to do about a :func:`home_problem`."""
    for reason, text in _ADVICE.items():
        if why.endswith(reason):
            return text
    return "fix the permissions, or set FSCALE_HOME to a writable folder"


#: SQLite's words for "this file or folder cannot be written" (not "locked" or "busy").
_SQLITE_HOME_WORDS = ("readonly", "read-only", "unable to open", "disk is full", "disk i/o error",
                      "no such file", "out of memory", "cannot open")


def home_problem(exc: BaseException, path: Path | str | None = None) -> str | None:
    """Why a file or folder of the home cannot be used, as words for people — or None when
    ``exc`` is not about the home (a locked database, a bug). ``path``: the file concerned
    (for a SQLite error, which names none); the folder is then examined: read-only file
    system, no space left, no write permission, a file in the way."""
    import sqlite3

    if isinstance(exc, OSError) and not isinstance(exc, (BlockingIOError, TimeoutError,
                                                         ConnectionError)):
        reason = _ERRNO_REASONS.get(exc.errno or 0)
        if reason is None:
            return None
        where = exc.filename or path
        return f"{where}: {reason}" if where else reason
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if not any(word in text for word in _SQLITE_HOME_WORDS):
            return None
        if path is None:
            return f"{exc}"
        path = Path(path)
        folder = _nearest_existing(path.parent)
        if not folder.is_dir():
            reason = "a file is in the way of a folder"
        elif _read_only_fs(folder):
            reason = "the file system is read-only"
        else:
            if _full(folder) or "full" in text:
                reason = "the disk is full"
            elif not os.access(folder, os.W_OK | os.X_OK) or (
                    path.exists() and not os.access(path, os.R_OK | os.W_OK)):
                reason = "permission denied"
            else:
                reason = str(exc)
        return f"{path}: {reason}"
    return None


def warn_state_unwritten(exc: BaseException, path: Path | str) -> None:
    """One warning per folder when shared state (health verdicts, send record, exploration
    counts, the TUI's state) cannot be written there: the process goes on with its own copy."""
    folder = Path(path).parent
    why = home_problem(exc, path) or f"{type(exc).__name__}: {exc}"
    warn(f"warning: fscale's state in {folder} cannot be written ({why}); health verdicts, "
         "rate limits and challenger counts hold for this process only",
         key=f"state-unwritten:{folder}")


def state_error(exc: BaseException, path: Path | str | None, doing: str) -> Exception:
    """``exc`` as a :class:`~.errors.StateError` ("cannot DOING (PATH: why)") when it is about
    the home, else ``exc`` itself (to be re-raised unchanged)."""
    from .errors import StateError

    why = home_problem(exc, path)
    if why is None:
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    return StateError(f"cannot {doing} ({why}); {advice(why)}")
