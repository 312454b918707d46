"""The one output boundary: every byte fscale writes to stdout or stderr passes here.

:data:`out` and :data:`err` are text streams that hand each write to the process's *current*
``sys.stdout`` / ``sys.stderr`` (so test runners and redirections that swap them still work)
after :func:`~fscale_tui.engine.base.redact.redact` has masked every known secret in it. The CLI's
rich consoles write through them (``cli/common.console``), and so do the JSON writer, the error
line, warnings, tables and the local server's log lines. The TUI renders server text through
the same redactor (``messages.EngineEvent`` and ``widgets.votes.first_lines``). The
``fscale`` logger's records come here too.

Nothing else in the package prints: ``tests/test_output_boundary.py`` fails on a ``print(``, a
``sys.stdout``/``sys.stderr`` write or a rich ``Console(`` outside this module and the console
factory. The engine imports no view framework, so this module is plain text; the rich
consoles are built in ``cli/common.py`` on top of it.
"""

from __future__ import annotations

import io
import logging
import sys
import traceback
from typing import Any, TextIO

from .redact import redact


class RedactingStream(io.TextIOBase):
    """A text stream that redacts every write before it reaches ``sys.<name>``."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    @property
    def target(self) -> TextIO:
        stream: TextIO = getattr(sys, self._name)  # looked up per write: tests replace sys.stderr
        return stream

    def write(self, text: str) -> int:
        if text:
            self.target.write(redact(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self.target.flush()
        except (AttributeError, ValueError):  # closed or replaced by an object without flush
            pass

    def isatty(self) -> bool:
        try:
            return bool(self.target.isatty())
        except (AttributeError, ValueError):
            return False

    def fileno(self) -> int:
        return self.target.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.target, "errors", None)


#: stdout (data) and stderr (people), redacted.
out = RedactingStream("stdout")
err = RedactingStream("stderr")


class _RedactLogRecords(logging.Filter):
    """Every record of the ``fscale`` logger is redacted before any handler sees it (the host
    application's handlers included, when fscale is used as a library)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(message), ()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class _LastResort(logging.Handler):
    """What Python's last-resort handler does (warnings and worse, the message alone, on
    stderr, only while nobody configured logging), but through :data:`err`."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:  # the application configured logging: its handlers
            return
        try:
            err.write(self.format(record) + "\n")
            err.flush()
        except Exception:  # a closed stream must not turn a warning into a crash
            self.handleError(record)


def _install_logging() -> None:
    logger = logging.getLogger("fscale")
    if not any(isinstance(f, _RedactLogRecords) for f in logger.filters):
        logger.addFilter(_RedactLogRecords())
        logger.addHandler(_LastResort())


_install_logging()


def print_traceback() -> None:
    """The current exception's traceback on stderr (``--debug``), redacted like everything else."""
    err.write(traceback.format_exc())
    err.flush()


__all__ = ["RedactingStream", "err", "out", "print_traceback"]
