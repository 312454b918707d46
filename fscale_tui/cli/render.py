"""Human rendering of engine events on stderr (the TUI renders the same events as widgets)."""

from __future__ import annotations

import re
from typing import Any

from ..engine.base.events import (Cancelled, ChallengerAnswered, Decided, Event, MemberSubstituted,
                             Preparing, ProbeResult, ServerReady, ServerStarting, StageFinished,
                             StageStarted, VoteFailed, VoteReceived, VoteStarted)

STATUS_STYLE = {"ok": "green", "slow": "yellow", "rate_limited": "yellow", "dead": "red",
                "unavailable": "red", "error": "red", "no_key": "dim"}


class EventPrinter:
    """Prints one line per meaningful event; silent when ``quiet``."""

    def __init__(self, console: Any, quiet: bool = False) -> None:
        self.console = _RedactingConsole(console)
        self.quiet = quiet

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        c = self.console
        if isinstance(event, VoteStarted):
            note = f" (for {event.substitute_for})" if event.substitute_for else ""
            c.print(f"  [dim]… {event.model}{note} asked[/dim]")
        elif isinstance(event, VoteReceived):
            answer = event.answer if event.answer is not None else "[yellow]no answer[/yellow]"
            c.print(f"  [green]✓[/green] {event.model:<22} {answer:<12} {event.latency_s:6.2f}s")
        elif isinstance(event, VoteFailed):
            c.print(f"  [red]✗[/red] {event.model:<22} [red]{_text(event.error)}[/red]", markup=True)
        elif isinstance(event, MemberSubstituted):
            c.print(f"  [cyan]⇄[/cyan] {event.model} → {event.substitute} ({event.reason})")
        elif isinstance(event, Cancelled):
            c.print(f"  [dim]⊘ {event.model} cancelled ({event.reason})[/dim]")
        elif isinstance(event, StageStarted):
            thr = "-" if event.threshold is None else f"{event.threshold:.3f}"
            c.print(f"[dim]stage {event.index + 1} {event.stage}: {', '.join(event.models)} "
                    f"(threshold {thr})[/dim]")
        elif isinstance(event, StageFinished):
            thr = "-" if event.threshold is None else f"{event.threshold:.3f}"
            verdict = "answers" if event.accepted else "escalates"
            c.print(f"  stage {event.stage}: {event.answer or 'no answer'} confidence "
                    f"{event.confidence:.3f} vs threshold {thr} → {verdict}")
        elif isinstance(event, Decided):
            c.print(summary(event.result))
        elif isinstance(event, ChallengerAnswered):
            v = event.vote
            what = _text(v.answer or v.error or v.status)
            c.print(f"  [dim]◇ challenger {v.model}: {what} (not part of the decision)[/dim]")
        elif isinstance(event, ProbeResult):
            style = STATUS_STYLE.get(event.status, "")
            lat = f"{event.latency_s:6.2f}s" if event.latency_s is not None else "      -"
            c.print(f"  {event.model:<22} [{style}]{event.status:<13}[/{style}] {lat}  {_text(event.detail)}")


def _text(value: Any) -> str:
    """Server-provided text: secrets masked, and printed literally (not as rich markup)."""
    from rich.markup import escape

    from ..engine.base.redact import redact

    return escape(redact(str(value)) or "")


class _RedactingConsole:
    """A console whose every printed line passes the redactor (stderr lines quote servers)."""

    def __init__(self, console: Any) -> None:
        self._console = console

    def print(self, text: Any = "", *args: Any, **kwargs: Any) -> None:
        from ..engine.base.redact import MASK, redact

        if isinstance(text, str):
            # A mask inserted here must not be read as the markup tag [redacted].
            text = re.sub(r"(?<!\\)" + re.escape(MASK), lambda m: "\\" + MASK, redact(text) or "")
        self._console.print(text, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._console, name)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def spent(result: Any) -> str:
    """``3 calls + 1 shadow, 0.52s, $0.000123 ($0.000150 with shadows)`` from the result's
    spend (engine/spend.py): the one way every command and batch says what a call cost."""
    spend = result.spend
    return f"{spend.calls_text()}, {result.elapsed_s:.2f}s{spend.cost_text()}"


def print_notes(console: Any, result: Any) -> None:
    """Notes the engine attached for people (e.g. -k capped), on stderr."""
    for note in getattr(result, "notes", None) or []:
        console.print(f"[yellow]note:[/yellow] {note}", markup=True, highlight=False)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class LiveProgress:
    """The one progress display of a command: rich bars on stderr, only when stderr is a
    terminal, started at the first task, never capturing stdout (results stream there as
    data) nor stderr (the vote lines print above the bars).

    Tasks count items (``unit="items"``: 3/12) or bytes (``unit="bytes"``: 512 MB/1.1 GB).
    """

    def __init__(self, console: Any, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled and console.is_terminal
        self.bar: Any = None
        self._units: dict[Any, str] = {}

    def add(self, label: str, total: int | None, unit: str = "items") -> Any:
        if not self.enabled:
            return None
        if self.bar is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.fields[amount]}"), TimeElapsedColumn(),
                                console=self.console, transient=True,
                                redirect_stdout=False, redirect_stderr=False)
            self.bar.start()
        task = self.bar.add_task(label, total=total, amount=self._amount(unit, 0, total))
        self._units[task] = unit
        return task

    @staticmethod
    def _amount(unit: str, done: float, total: float | None) -> str:
        if unit == "bytes":
            return f"{human_bytes(done)}/{human_bytes(total or 0)}"
        return f"{done:g}/{total:g}" if total is not None else f"{done:g}"

    def update(self, task: Any, done: float, total: float | None = None) -> None:
        if self.bar is None or task is None:
            return
        total = self.bar.tasks[self._index(task)].total if total is None else total
        self.bar.update(task, completed=done, total=total,
                        amount=self._amount(self._units[task], done, total))

    def advance(self, task: Any, n: int = 1) -> None:
        if self.bar is None or task is None:
            return
        t = self.bar.tasks[self._index(task)]
        self.update(task, t.completed + n)

    def _index(self, task: Any) -> int:
        return next(i for i, t in enumerate(self.bar.tasks) if t.id == task)

    def remove(self, task: Any) -> None:
        if self.bar is not None and task is not None:
            self.bar.remove_task(task)
            self._units.pop(task, None)
            if not self.bar.tasks:  # nothing left to draw: give the terminal back
                self.stop()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class BatchProgress:
    """A batch's progress bar (items done / total) on the command's :class:`LiveProgress`."""

    def __init__(self, console: Any, total: int, label: str, enabled: bool = True) -> None:
        self.display = LiveProgress(console, enabled)
        self.total = total
        self.label = label
        self.task: Any = None

    def __enter__(self) -> "BatchProgress":
        self.task = self.display.add(self.label, self.total)
        return self

    def advance(self, n: int = 1) -> None:
        self.display.advance(self.task, n)

    def update(self, done: int, total: int) -> None:
        self.display.update(self.task, done, total)

    def __exit__(self, *exc: object) -> None:
        self.display.stop()


class StatusPrinter:
    """Renders the engine's ``on_status`` events (a local model's first use) on stderr:
    a byte progress bar while its weights are joined (one line each way without a terminal),
    then one line when its server starts and one when it answers. Silent when disabled."""

    def __init__(self, console: Any, enabled: bool, display: LiveProgress | None = None) -> None:
        self.console = console
        self.enabled = enabled
        self.display = display if display is not None else LiveProgress(console, enabled)
        self._joining: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._finished: set[str] = set()

    def __call__(self, event: Event) -> None:
        if not self.enabled:
            return
        import time

        c = self.console
        if isinstance(event, Preparing):
            key = event.what
            if key in self._finished:
                return
            if key not in self._joining:
                self._started[key] = time.monotonic()
                self._joining[key] = self.display.add(f"joining {event.what}",
                                                      event.total_bytes, unit="bytes")
                if self._joining[key] is None:
                    c.print(f"[dim]… joining the weights of {event.what} "
                            f"({human_bytes(event.total_bytes)}, once per machine)[/dim]")
            self.display.update(self._joining[key], event.done_bytes, event.total_bytes)
            if event.done_bytes >= event.total_bytes and event.total_bytes:
                self.display.remove(self._joining.pop(key))
                self._finished.add(key)
                took = time.monotonic() - self._started[key]
                c.print(f"  [green]✓[/green] joined {event.what} "
                        f"({human_bytes(event.total_bytes)}) in {took:.1f}s")
        elif isinstance(event, ServerStarting):
            c.print(f"[dim]… starting the local server for {event.server} (loading the model)[/dim]")
        elif isinstance(event, ServerReady):
            c.print(f"  [green]✓[/green] local server for {event.server} ready in "
                    f"{event.elapsed_s:.1f}s")

    def close(self) -> None:
        self.display.stop()


def summary(result: Any) -> str:
    """One line saying what was decided and how sure the panel was."""
    counts = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items(), key=lambda kv: -kv[1]))
    stats = spent(result)
    if result.decided_early:
        stats += ", decided early"
    if result.status == "decided":
        conf = f"{result.confidence:.0%}" if result.confidence is not None else "-"
        tb = f", tie broken by {result.tie_broken_by}" if result.tie_broken_by else ""
        return (f"[bold]→ {result.answer}[/bold]  confidence {conf} "
                f"(valid={result.valid_votes}/{len(result.members)}: {counts}{tb}); {stats}")
    if result.status == "abstained":
        return f"[yellow]→ abstained: no stage was confident[/yellow] ({counts}); {stats}"
    if result.status == "tie":
        return f"[yellow]→ no decision: tie between {', '.join(result.tied)}[/yellow] ({counts}); {stats}"
    if result.status == "all_failed":
        return f"[red]→ no decision: every member failed[/red]; {stats}"
    return f"[yellow]→ no decision: no valid vote[/yellow] (valid=0/{len(result.members)}); {stats}"
