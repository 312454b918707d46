"""Human rendering of engine events on stderr (the TUI renders the same events as widgets)."""

from __future__ import annotations

import re
from typing import Any

from ..engine.events import (Cancelled, ChallengerAnswered, Decided, Event, MemberSubstituted, ProbeResult,
                             VoteFailed, VoteReceived, VoteStarted)

STATUS_STYLE = {"ok": "green", "slow": "yellow", "rate_limited": "yellow", "dead": "red",
                "unavailable": "red", "error": "red", "skipped": "dim"}


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


def summary(result: Any) -> str:
    """One line saying what was decided and how sure the panel was."""
    counts = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items(), key=lambda kv: -kv[1]))
    stats = f"{result.calls_made} calls, {result.elapsed_s:.2f}s"
    if result.decided_early:
        stats += ", decided early"
    if result.status == "decided":
        conf = f"{result.confidence:.0%}" if result.confidence is not None else "-"
        tb = f", tie broken by {result.tie_broken_by}" if result.tie_broken_by else ""
        return (f"[bold]→ {result.answer}[/bold]  confidence {conf} "
                f"(valid={result.valid_votes}/{result.members}: {counts}{tb}); {stats}")
    if result.status == "tie":
        return f"[yellow]→ no decision: tie between {', '.join(result.tied)}[/yellow] ({counts}); {stats}"
    if result.status == "all_failed":
        return f"[red]→ no decision: every member failed[/red]; {stats}"
    return f"[yellow]→ no decision: no valid vote[/yellow] (valid=0/{result.members}); {stats}"
