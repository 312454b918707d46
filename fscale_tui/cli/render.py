"""Human rendering of engine events on stderr (the TUI renders the same events as widgets)."""

from __future__ import annotations

import re
from typing import Any

from ..engine.events import (Cancelled, ChallengerAnswered, Decided, Event, MemberSubstituted,
                             ProbeResult, StageFinished, StageStarted, VoteFailed, VoteReceived,
                             VoteStarted)

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

    from ..engine.redact import redact

    return escape(redact(str(value)) or "")


class _RedactingConsole:
    """A console whose every printed line passes the redactor (stderr lines quote servers)."""

    def __init__(self, console: Any) -> None:
        self._console = console

    def print(self, text: Any = "", *args: Any, **kwargs: Any) -> None:
        from ..engine.redact import MASK, redact

        if isinstance(text, str):
            # A mask inserted here must not be read as the markup tag [redacted].
            text = re.sub(r"(?<!\\)" + re.escape(MASK), lambda m: "\\" + MASK, redact(text) or "")
        self._console.print(text, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._console, name)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def dollars(result: Any) -> str:
    """", $0.000123" when the providers reported usage (and the models have a price)."""
    usage = getattr(result, "usage", None) or {}
    cost = usage.get("cost_usd")
    return f", ${cost:.6f}" if cost else ""


def print_notes(console: Any, result: Any) -> None:
    """Notes the engine attached for people (e.g. -k capped), on stderr."""
    for note in getattr(result, "notes", None) or []:
        console.print(f"[yellow]note:[/yellow] {note}", markup=True, highlight=False)


class BatchProgress:
    """A progress bar on stderr for batches: only when stderr is a terminal, and never
    capturing stdout (the results stream there as data)."""

    def __init__(self, console: Any, total: int, label: str, enabled: bool = True) -> None:
        self.console = console
        self.total = total
        self.label = label
        self.enabled = enabled and console.is_terminal
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> "BatchProgress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.bar = Progress("[progress.description]{task.description}", BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                                transient=True, redirect_stdout=False, redirect_stderr=False)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def update(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def summary(result: Any) -> str:
    """One line saying what was decided and how sure the panel was."""
    counts = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items(), key=lambda kv: -kv[1]))
    stats = f"{plural(result.calls_made, 'call')}, {result.elapsed_s:.2f}s" + dollars(result)
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
