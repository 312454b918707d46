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
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from ..engine.base import output
from ..engine.base.errors import ExitCode, FscaleError, UsageError, exit_code_for

if TYPE_CHECKING:
    from ..engine.base.settings import Settings
    from ..engine.session import Engine

F = TypeVar("F", bound=Callable[..., Any])
DEBUG = {"on": False}


def no_color() -> bool:
    """``NO_COLOR`` set and not empty (no-color.org): no styling at all, not only no colours
    (rich alone would still print bold and dim)."""
    return bool(os.environ.get("NO_COLOR"))


@functools.cache
def _console_class() -> type:
    """rich's Console, redacting: every string it renders (markup, table cells, progress
    descriptions) passes the redactor *before* it is laid out, so a key cannot be folded over
    two lines where the stream-level redaction would no longer see it whole."""
    import re

    from rich.console import Console

    from ..engine.base.redact import MASK, redact

    unescaped_mask = re.compile(r"(?<!\\)" + re.escape(MASK))

    class RedactingConsole(Console):
        def render_str(self, text: str, *args: Any, **kwargs: Any) -> Any:
            clean = redact(text) or ""
            markup = kwargs.get("markup")
            if clean != text and (self._markup if markup is None else markup):
                # The mask must stay text, not become the markup tag [redacted].
                clean = unescaped_mask.sub(lambda m: "\\" + MASK, clean)
            return super().render_str(clean, *args, **kwargs)

    return RedactingConsole


def console(*, stderr: bool = False, **kwargs: Any):
    """The one console factory: a rich console with the CLI's rules (no highlighting, no
    styles under ``NO_COLOR``) that writes through the output boundary (``engine.output``):
    every string is redacted before layout and every byte again on its way out."""
    kwargs.setdefault("highlight", False)
    if no_color():
        kwargs["color_system"] = None
    kwargs.setdefault("file", output.err if stderr else output.out)
    return _console_class()(**kwargs)


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that every ``finally`` and ``async
    with`` runs: nothing new is sent, the engine drains its call-log writer, one line is
    printed and the exit code is 143."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def handle_sigterm() -> None:
    """SIGTERM stops fscale the way Ctrl-C does (exit 143); set again after anything that
    replaced it (asyncio restores the default on its way out, ``ray.init`` sets its own)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


#: Set by a batch that is stopped: how far it got (the one line says it).
STOPPED: dict[str, str] = {}


def fail(message: str, code: ExitCode) -> None:
    """Print one clear line on stderr (secrets redacted) and exit with ``code``."""
    output.err.write(f"fscale: error: {message}\n")
    raise typer.Exit(int(code))


def flush_storage_warnings() -> None:
    storage = sys.modules.get("fscale_tui.engine.base.storage")
    if storage is None:  # nothing was stored, so nothing to warn about
        return
    for message in storage.warnings:
        output.err.write(f"fscale: {message}\n")
    storage.warnings.clear()


def _home_problem(exc: Exception) -> str | None:
    """The one line for a file or folder of the home that cannot be used (any command, any
    path that did not turn it into a StateError itself), or None for anything else."""
    from ..engine.base import storage

    why = storage.home_problem(exc)
    if why is None:
        return None
    return f"cannot use fscale's files ({why}); {storage.advice(why)}"


def with_help_pointer(exc: FscaleError) -> str:
    """A usage error's message ends with ``(see 'fscale CMD --help')``, as click's own usage
    errors do, unless it already points somewhere (``(see 'fscale models')``)."""
    message = str(exc)
    if not isinstance(exc, UsageError) or "(see '" in message:
        return message
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    return f"{message} (see '{ctx.command_path} --help')" if ctx is not None else message


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
                output.print_traceback()
            fail(with_help_pointer(exc), exc.exit_code)
        except KeyboardInterrupt as exc:
            # Ctrl-C or SIGTERM: one line (how far a batch got) and 130 / 143.
            term = isinstance(exc, Terminated)
            detail = STOPPED.pop("detail", "")
            output.err.write(f"fscale: {'terminated' if term else 'interrupted'}"
                             f"{': ' + detail if detail else ''}\n")
            raise typer.Exit(int(ExitCode.TERMINATED if term else ExitCode.INTERRUPTED)) \
                from None
        except BrokenPipeError:
            # The reader of our stdout went away (e.g. `| head`): not an error of ours.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:
            if DEBUG["on"]:
                output.print_traceback()
            home = _home_problem(exc)
            if home is not None:  # a read-only, full or denied home: not a bug of ours
                fail(home, ExitCode.USAGE_ERROR)
            fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
                 ExitCode.INTERNAL_ERROR)
        finally:
            flush_storage_warnings()

    return wrapper  # type: ignore[return-value]


def run(coro: Any) -> Any:
    """``asyncio.run`` (asyncio is imported only by commands that run the event loop), with
    SIGTERM handled like Ctrl-C (see :func:`event_loop`)."""
    with event_loop(coro) as start:
        return start()


@contextlib.contextmanager
def event_loop(coro: Any) -> Iterator[Callable[[], Any]]:
    """``with event_loop(go()) as start: result = start()`` runs ``go()`` on a new event loop
    straight from the caller (no frame of this module between the command and its coroutine:
    the walk of a question stays in the command's module).

    SIGTERM is handled like asyncio's Ctrl-C: the main task is cancelled (nothing new is
    sent, every ``async with Engine`` closes and drains its writer), then :class:`Terminated`
    is raised."""
    import asyncio
    import signal

    stopped: list[bool] = []

    def on_sigterm(loop: asyncio.AbstractEventLoop) -> None:
        stopped.append(True)
        for task in asyncio.all_tasks(loop):
            if task.get_coro() is coro:  # the main task
                task.cancel()

    try:
        with asyncio.Runner() as runner:
            try:
                runner.get_loop().add_signal_handler(signal.SIGTERM, on_sigterm,
                                                     runner.get_loop())
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
                pass
            try:
                yield functools.partial(runner.run, coro)
            except asyncio.CancelledError:
                if stopped:
                    raise Terminated() from None
                raise
    finally:
        handle_sigterm()


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
    from ..engine.base.jsonl import read_bytes

    return decode_utf8(read_bytes(path, what), f"{what} {path!r}")


def resolve_context(context: str | None, context_file: str | None, *, use_stdin: bool = True) -> str | None:
    """--context TEXT, --context-file PATH ('-' = stdin), or piped stdin, in that order.

    Piped input that is empty (or blank) is a usage error, not "no context": a script that
    pipes an empty file by mistake must not get a confident answer about nothing. Only an
    explicit ``--context ''`` asks without context.
    """
    if context is not None and context_file is not None:
        raise UsageError("give --context or --context-file, not both")
    if context is not None:
        return context
    if context_file is not None:
        data = read_text_file(context_file, "context file")
        where = "on stdin" if context_file == "-" else f"in {context_file!r}"
    elif use_stdin and stdin_has_data():
        data = read_stdin("context")
        where = "piped on stdin"
    else:
        return None
    if not data.strip():
        raise UsageError(f"the context {where} is empty; to ask without context, "
                         "give --context ''")
    return data


def optional_value(argv: list[str], flag: str, default: str) -> list[str]:
    """``--ray`` may stand alone (``--ray [ADDRESS]``): give it ``default`` when no value follows."""
    out = list(argv)
    for i in range(len(out) - 1, 0, -1):
        if out[i] == flag and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, default)
    return out


def _stdout_for_data_only() -> Any:
    """Ray's driver prints raylet messages ("(raylet) Task … failed … retried") on file
    descriptor 1. From here on fd 1 is stderr for everyone else, and the results go to a
    private duplicate of the real stdout: stdout stays data only."""
    output.out.flush()
    data = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(data, "w", encoding="utf-8")


def _quiet_ray() -> None:
    """No Ray Data progress logs on stderr (the CLI prints its own summary; ``-q`` is quiet)."""
    import logging

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def run_on_ray(kind: str, items: list[Any], out: Any, *, address: str, actors: int | None,
               concurrency: int | None, overrides: dict[str, Any] | None = None,
               settings: Settings | None = None) -> None:
    """``--batch --ray``: the items on a Ray actor pool; results into ``out`` in input order."""
    try:
        from ..integrations.ray import ensure_ray, run_requests
        import ray  # noqa: F401
    except ImportError:
        from ..engine.base.errors import UsageError

        raise UsageError("--ray needs Ray: pip install 'fscale[ray]'") from None
    ensure_ray(address)
    handle_sigterm()  # ray.init set its own SIGTERM handler (sys.exit): ours drains and says so
    _quiet_ray()
    out.write_to(_stdout_for_data_only())
    results = run_requests(kind, items, address=address, actors=actors or 2,
                           item_concurrency=concurrency, overrides=overrides, settings=settings)
    with contextlib.closing(results):  # a stop closes it at once: its writer is drained
        for index, outcome in results:
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


def json_text(obj: Any) -> str:
    """The JSON text ``--json`` prints for ``obj`` (the MCP tools return the same): every
    string passes the redactor (vote errors quote servers), and then the text as a whole."""
    from ..engine.base.redact import redact, redact_tree

    return redact(json.dumps(redact_tree(obj), ensure_ascii=False))


def print_json(obj: Any, file: Any = None) -> None:
    """One JSON document on stdout (or ``file``, e.g. the ``--resume`` output; see
    :func:`json_text`)."""
    stream = output.out if file is None else file
    stream.write(json_text(obj) + "\n")
    stream.flush()


def load_settings_for_cli():
    from ..engine.catalog.config import load_settings

    return load_settings()


@contextlib.contextmanager
def engine_facade(settings: Settings | None = None) -> Iterator[Engine]:
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
    from ..engine.base.jsonl import JSONLError, iter_jsonl, read_bytes

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


@contextlib.contextmanager
def batch_output(items: Any, empty_field: str, resume: str | None, *, quiet: bool = False
                 ) -> Iterator[tuple[Any, Any]]:
    """The output of a batch, and the items to run (a stream, as the input schema decodes
    them): all of them, or with ``--resume OUT`` those without a result in OUT (their results
    are appended to OUT). On Ctrl-C or SIGTERM the finished results are written (none has to
    run again) and the one line says how far the batch got."""
    resumed = None
    total = getattr(items, "total", None)
    if total is None and isinstance(items, (list, tuple)):
        total = len(items)
    if resume is None:
        out = BatchOutput(items, empty_field)
        todo = items
    else:
        from .resume import ResumeFile

        resumed = ResumeFile(resume)
        todo, where = resumed.pending(items)
        if not quiet:
            output.err.write(f"fscale: {resumed.note(total)}\n")
        out = BatchOutput(todo, empty_field, write=resumed.writer(print_json), where=where,
                          previous=resumed.done.values())
    try:
        yield out, todo
    except KeyboardInterrupt:
        out.flush_pending()
        done = out.previous + out.written
        of = f" of {total}" if total is not None else ""
        where_to = f" {resume}" if resume else " OUTPUT (the file the results went to)"
        STOPPED["detail"] = (f"{done}{of} items done; run the same command with "
                             f"--resume{where_to} to finish")
        raise
    finally:
        if resumed is not None:
            resumed.close()


class BatchOutput:
    """Batch results as JSON lines on stdout, in input order, each as soon as it can go out.

    A failed item becomes ``{"schema", "index", "id": null, "item_id", "status": "error",
    <empty_field>: null, "error"}`` (``item_id``: the line's own ``id`` when it could be read).
    The exit code: 0 if every item was decided; 2 if every line was bad input (nothing ran);
    4 if every item failed; else 3 (some item had no decision, failed, or was a bad line).
    ``labels`` (each item's ``label`` by its place in the batch file; a dict the batch reader
    fills as it goes, or a list): :meth:`summary` adds the accuracy on them.
    """

    def __init__(self, items: Any, empty_field: str, *,
                 write: Callable[[dict[str, Any]], None] | None = None,
                 where: list[int] | None = None, previous: Iterable[str] = (),
                 labels: Any = None) -> None:
        from ..engine.base.spend import Spend

        self.items = items  # a list (Ray) or a stream of items (engine.items.BatchItems)
        self.empty_field = empty_field
        #: ``--resume``: the results already in the output file count in the summary and code.
        self.statuses: list[str] = list(previous)
        self.previous = len(self.statuses)
        self.bad_lines = 0
        self.labels = labels if labels is not None else getattr(items, "labels", {})
        self.spend = Spend()
        self.right = 0  # labelled items answered with their label (generate: ``correct``)
        self.labelled = 0
        self._pending: dict[int, dict[str, Any]] = {}
        self._next = 0
        #: Where a line goes (stdout, or the ``--resume`` file) and each item's ``index`` (its
        #: place in the batch file, when only some of its items run).
        self._write = write or print_json
        self._where = where
        #: Items whose line went out (an interruption tells how far the batch got).
        self.written = 0

    def write_to(self, stream: Any) -> None:
        """Lines that would go to stdout go to ``stream`` (``--resume`` lines stay in OUT)."""
        if self._write is print_json:
            self._write = lambda obj: print_json(obj, file=stream)

    def batch_index(self, position: int) -> int:
        """The place in the batch file of the ``position``-th item run."""
        return position if self._where is None else self._where[position]

    def add(self, index: int, outcome: Any) -> None:
        from ..engine.base.spend import Spend

        position = index
        index = self.batch_index(position)
        if isinstance(outcome, Exception):
            item_id = getattr(outcome, "item_id", None)
            if item_id is None and isinstance(self.items, (list, tuple)) \
                    and position < len(self.items):
                item_id = getattr(self.items[position], "item_id", None)
            self.bad_lines += isinstance(outcome, UsageError)
            obj = {"schema": 1, "index": index, "id": None, "item_id": item_id,
                   "status": "error", self.empty_field: None, "error": str(outcome)}
        else:
            obj = {"index": index, **outcome.to_dict()}
            self.spend = self.spend + Spend.from_dict(obj)
        label = self._label(index)
        if label is not None:
            self.labelled += 1
            answer = obj.get("answer")
            self.right += answer is not None and str(answer).strip().casefold() == \
                label.strip().casefold()
        elif obj.get("correct") is not None:  # generate items with a gold answer
            self.labelled += 1
            self.right += bool(obj["correct"])
        self.statuses.append(obj["status"])
        self._pending[position] = obj
        while self._next in self._pending:
            self._write(self._pending.pop(self._next))
            self.written += 1
            self._next += 1

    def _label(self, index: int) -> str | None:
        if isinstance(self.labels, dict):
            return self.labels.get(index)
        return self.labels[index] if index < len(self.labels) else None

    def flush_pending(self) -> None:
        """On an interruption: write the results that finished ahead of an unfinished item
        (their ``index`` says where they belong), so no finished item has to run again."""
        for position in sorted(self._pending):
            self._write(self._pending.pop(position))
            self.written += 1

    def summary(self) -> str:
        """One line for people: items and outcomes, calls (decision + shadow) per item, USD,
        and the accuracy when the items carry a ``label`` (generate: a ``gold`` answer)."""
        n = len(self.statuses)
        counts: dict[str, int] = {}
        for status in self.statuses:
            counts[status] = counts.get(status, 0) + 1
        parts = ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        ran = max(1, n - self.previous)  # --resume: the calls are those of the items run now
        now = f"{n - self.previous} run now, " if self.previous else ""
        s = self.spend
        line = (f"{n} item{'s' if n != 1 else ''} ({parts}); {now}"
                f"{s.decision.calls / ran:.2f} calls per item + {s.shadow.calls / ran:.2f} "
                f"shadow ({s.decision.calls} + {s.shadow.calls} calls)")
        total = s.cost_usd_total
        if s.decision.cost_usd is not None:
            line += f", ${s.decision.cost_usd / ran:.6f} per item"
            if s.shadow.calls and total is not None:
                line += f" (${total / ran:.6f} with shadows)"
            line += f", ${total:.4f} in all"
        if self.labelled:
            line += (f"; accuracy {self.right / self.labelled:.1%} "
                     f"({self.right}/{self.labelled} labelled)")
        return line

    @property
    def exit_code(self) -> int:
        if self.statuses and self.bad_lines == len(self.statuses):
            return int(ExitCode.USAGE_ERROR)  # every line was bad input: nothing was asked
        codes = {exit_code_for(s) for s in self.statuses}
        if self.bad_lines:
            codes.add(ExitCode.NO_DECISION)
        return int(codes.pop() if len(codes) == 1 else ExitCode.NO_DECISION)
