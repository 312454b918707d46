"""What every one-shot command shares: error handling, stdin/context reading, output.

Contract: stdout is data (the answer, or one JSON object per result with ``--json``); people
read stderr. Errors are one line on stderr and a documented exit code (design §10); ``--debug``
adds the traceback and keeps the exit code. ``NO_COLOR`` turns every style off. This module
must not import textual, nor (at import) rich or the engine's call machinery.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer

from ..engine.errors import ExitCode, FscaleError, UsageError, exit_code_for

F = TypeVar("F", bound=Callable[..., Any])
DEBUG = {"on": False}


def no_color() -> bool:
    """``NO_COLOR`` set and not empty (no-color.org): no styling at all, not only no colours
    (rich alone would still print bold and dim)."""
    return bool(os.environ.get("NO_COLOR"))


def console(*, stderr: bool = False, **kwargs: Any):
    """A rich console with the CLI's rules: no highlighting, no styles under ``NO_COLOR``."""
    from rich.console import Console

    kwargs.setdefault("highlight", False)
    if no_color():
        kwargs["color_system"] = None
    return Console(stderr=stderr, **kwargs)


def stderr_console():
    """The console people read: stderr, styled only on a terminal and without ``NO_COLOR``."""
    return console(stderr=True, soft_wrap=True)


def stdout_console(*, fixed_width_when_piped: bool = False):
    """A console for tables on stdout (data). Piped output can be kept from folding."""
    width = None if (not fixed_width_when_piped or sys.stdout.isatty()) else 200
    return console(soft_wrap=False, width=width)


def show_progress(quiet: bool, as_json: bool) -> bool:
    """Whether people get progress and votes on stderr: always on a terminal (``--json``
    too: the JSON goes to stdout), without a terminal only when stdout is not JSON; never
    with ``--quiet``."""
    if quiet:
        return False
    return not as_json or stderr_is_terminal()


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def fail(message: str, code: ExitCode) -> None:
    """Print one clear line on stderr (secrets redacted) and exit with ``code``."""
    from ..engine.redact import redact

    sys.stderr.write(f"fscale: error: {redact(message)}\n")
    raise typer.Exit(int(code))


def flush_storage_warnings() -> None:
    storage = sys.modules.get("fscale_tui.engine.storage")
    if storage is None:  # nothing was stored, so nothing to warn about
        return
    from ..engine.redact import redact

    for message in storage.warnings:
        sys.stderr.write(f"fscale: {redact(message)}\n")
    storage.warnings.clear()


def guarded(fn: F) -> F:
    """Turn engine errors, Ctrl-C and crashes into one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except FscaleError as exc:
            flush_storage_warnings()
            if DEBUG["on"]:
                traceback.print_exc(file=sys.stderr)
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            sys.stderr.write("fscale: interrupted\n")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except BrokenPipeError:
            # The reader of our stdout went away (e.g. `| head`): not an error of ours.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:
            if DEBUG["on"]:
                traceback.print_exc(file=sys.stderr)
            fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
                 ExitCode.INTERNAL_ERROR)
        finally:
            flush_storage_warnings()

    return wrapper  # type: ignore[return-value]


def run(coro: Any) -> Any:
    """``asyncio.run`` (asyncio is imported only by commands that run the event loop)."""
    import asyncio

    return asyncio.run(coro)


def stdin_has_data() -> bool:
    """True when stdin is a pipe or a file (not a terminal, /dev/null or a closed fd).

    Reading a terminal or an inherited socket would block a script forever, so only pipes
    and regular files count as piped input.
    """
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def decode_utf8(data: bytes, what: str) -> str:
    """``data`` as text; input that is not UTF-8 is a usage error (exit 2) naming the first bad byte.

    The policy (README "Input"): fscale reads stdin and files as UTF-8 and refuses anything else
    before a single request is sent, rather than guessing or silently replacing characters that
    the models would then see (and the call log would store) as something else.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start}); convert it first, e.g. iconv -f LATIN1 -t UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_stdin(what: str) -> str:
    """All of stdin as UTF-8 text (see :func:`decode_utf8`)."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # replaced by a text-only object (tests, embedding)
        return sys.stdin.read()
    return decode_utf8(stream.read(), f"{what} on stdin")


def read_text_file(path: str, what: str) -> str:
    if path == "-":
        return read_stdin(what)
    from ..engine.jsonl import read_bytes

    return decode_utf8(read_bytes(path, what), f"{what} {path!r}")


def resolve_context(context: str | None, context_file: str | None, *, use_stdin: bool = True) -> str | None:
    """--context TEXT, --context-file PATH ('-' = stdin), or piped stdin, in that order."""
    if context is not None and context_file is not None:
        raise UsageError("give --context or --context-file, not both")
    if context is not None:
        return context
    if context_file is not None:
        return read_text_file(context_file, "context file")
    if use_stdin and stdin_has_data():
        data = read_stdin("context")
        return data if data.strip() else None
    return None


def optional_value(argv: list[str], flag: str, default: str) -> list[str]:
    """``--ray`` may stand alone (``--ray [ADDRESS]``): give it ``default`` when no value follows."""
    out = list(argv)
    for i in range(len(out) - 1, 0, -1):
        if out[i] == flag and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, default)
    return out


def run_on_ray(kind: str, items: list[Any], out: Any, *, address: str, actors: int | None,
               concurrency: int | None, overrides: dict[str, Any] | None = None,
               settings: Any = None) -> None:
    """``--batch --ray``: the items on a Ray actor pool; results into ``out`` in input order."""
    try:
        from ..integrations.ray import run_requests
        import ray  # noqa: F401
    except ImportError:
        from ..engine.errors import UsageError

        raise UsageError("--ray needs Ray: pip install 'fscale[ray]'") from None
    for index, outcome in run_requests(kind, items, address=address, actors=actors or 2,
                                       item_concurrency=concurrency, overrides=overrides,
                                       settings=settings):
        out.add(index, outcome)


def check_argv(argv: list[str]) -> None:
    """Arguments that were not valid UTF-8 arrive as lone surrogates: refuse them (exit 2)."""
    for i, arg in enumerate(argv[1:], 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            fail(f"argument {i} is not valid UTF-8", ExitCode.USAGE_ERROR)


def split_list(value: str | None) -> tuple[str, ...] | None:
    """``"a, b,c"`` -> ``("a", "b", "c")``; the same rule the TUI uses."""
    from ..engine.requests import split_labels

    return split_labels(value)


def print_json(obj: Any) -> None:
    """One JSON document on stdout; its text passes the redactor (vote errors quote servers)."""
    from ..engine.redact import redact

    sys.stdout.write(redact(json.dumps(obj, ensure_ascii=False)) + "\n")
    sys.stdout.flush()


def load_settings_for_cli():
    from ..engine.config import load_settings

    return load_settings()


@contextlib.contextmanager
def engine_facade(settings: Any = None) -> Iterator[Any]:
    """The engine for a command that asks no model (catalogue, call log): no event loop, no
    HTTP client; its background writes are flushed on the way out."""
    from ..engine.session import Engine

    engine = Engine(settings)
    try:
        yield engine
    finally:
        engine.close()


def read_batch_items(path: str, build: Callable[[dict[str, Any]], Any],
                     labels: list[Any] | None = None) -> list[Any]:
    """Read a JSONL batch file ('-' = stdin): one ``build(obj)`` per non-empty line.

    Lines end at ``\\n`` only (U+2028, U+2029 and U+0085 inside a JSON string are text), and each
    line is decoded on its own: a line that is not UTF-8, not a JSON object with a ``question``,
    or that ``build`` rejects becomes a ``UsageError("line N: ...")`` in its place, so one bad
    line never stops the batch. ``labels`` (optional) gets each item's ``label`` (or None), in
    the items' order: the batch's accuracy when the items carry one.
    """
    from ..engine.jsonl import JSONLError, iter_jsonl, read_bytes

    items: list[Any] = []
    for lineno, obj in iter_jsonl(read_bytes(path, "batch file")):
        try:
            if isinstance(obj, JSONLError):
                raise obj
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            if not isinstance(obj.get("question"), str):
                raise ValueError("no question")
            items.append(build(obj))
        except (ValueError, TypeError, UsageError) as exc:
            error = UsageError(f"line {lineno}: {exc}")
            if isinstance(obj, dict) and obj.get("id") is not None:
                error.item_id = str(obj["id"])  # type: ignore[attr-defined]
            items.append(error)
        if labels is not None:
            label = obj.get("label") if isinstance(obj, dict) else None
            labels.append(None if label is None else str(label))
    if not items:
        raise UsageError(f"batch file {path!r} has no items")
    return items


class BatchOutput:
    """Batch results as JSON lines on stdout, in input order, each as soon as it can go out.

    A failed item becomes ``{"schema", "index", "id": null, "item_id", "status": "error",
    <empty_field>: null, "error"}`` (``item_id``: the line's own ``id`` when it had one).
    The exit code: 0 if every item was decided, 4 if every item failed, else 3.
    ``labels`` (each item's ``label`` or None): :meth:`summary` adds the accuracy on them.
    """

    def __init__(self, items: list[Any], empty_field: str,
                 labels: list[str | None] | None = None) -> None:
        from ..engine.spend import Spend

        self.items = items
        self.empty_field = empty_field
        self.labels = labels or []
        self.statuses: list[str] = []
        self.spend = Spend()
        self.right = 0  # labelled items answered with their label (generate: ``correct``)
        self.labelled = 0
        self._pending: dict[int, dict[str, Any]] = {}
        self._next = 0

    def add(self, index: int, outcome: Any) -> None:
        from ..engine.spend import Spend

        if isinstance(outcome, Exception):
            item = self.items[index]
            item_id = getattr(item, "item_id", None)
            obj = {"schema": 1, "index": index, "id": None, "item_id": item_id,
                   "status": "error", self.empty_field: None, "error": str(outcome)}
        else:
            obj = {"index": index, **outcome.to_dict()}
            self.spend = self.spend + Spend.from_dict(obj)
        label = self.labels[index] if index < len(self.labels) else None
        if label is not None:
            self.labelled += 1
            answer = obj.get("answer")
            self.right += answer is not None and str(answer).strip().casefold() == \
                label.strip().casefold()
        elif obj.get("correct") is not None:  # generate items with a gold answer
            self.labelled += 1
            self.right += bool(obj["correct"])
        self.statuses.append(obj["status"])
        self._pending[index] = obj
        while self._next in self._pending:
            print_json(self._pending.pop(self._next))
            self._next += 1

    def summary(self) -> str:
        """One line for people: items and outcomes, calls (decision + shadow) per item, USD,
        and the accuracy when the items carry a ``label`` (generate: a ``gold`` answer)."""
        n = len(self.statuses)
        per = max(1, n)
        counts: dict[str, int] = {}
        for status in self.statuses:
            counts[status] = counts.get(status, 0) + 1
        parts = ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        s = self.spend
        line = (f"{n} item{'s' if n != 1 else ''} ({parts}); "
                f"{s.decision.calls / per:.2f} calls per item + {s.shadow.calls / per:.2f} "
                f"shadow ({s.decision.calls} + {s.shadow.calls} calls)")
        total = s.cost_usd_total
        if s.decision.cost_usd is not None:
            line += f", ${s.decision.cost_usd / per:.6f} per item"
            if s.shadow.calls and total is not None:
                line += f" (${total / per:.6f} with shadows)"
            line += f", ${total:.4f} in all"
        if self.labelled:
            line += f"; accuracy {self.right / self.labelled:.1%} ({self.right}/{self.labelled} labelled)"
        return line

    @property
    def exit_code(self) -> int:
        codes = {exit_code_for(s) for s in self.statuses}
        return int(codes.pop() if len(codes) == 1 else ExitCode.NO_DECISION)
