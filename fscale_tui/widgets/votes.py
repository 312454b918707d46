"""The live vote table and the decision banner: pure renderings of engine events.

Nothing here decides anything: the answer of each member comes from ``VoteReceived`` (the
engine's parser) and the decision from ``Decided`` (the engine's vote). These widgets only
remember what they were told so that they can show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual.widgets import Static

from ..engine.base.events import (
    Cancelled,
    Event,
    MemberSubstituted,
    StageStarted,
    VoteDelta,
    VoteFailed,
    VoteReceived,
    VoteStarted,
)
from .table import FillTable

COLUMNS = (("n", "#"), ("model", "model"), ("status", "status"), ("answer", "answer"),
           ("latency", "latency"), ("tokens", "tokens"), ("note", "reasoning / error"))

#: status -> (label, style); the label carries the meaning, the colour only helps.
STATUS_LOOK = {
    "pending": ("… pending", "dim"),
    "streaming": ("▸ streaming", "cyan"),
    "answered": ("✓ answered", "green"),
    "no_answer": ("∅ no answer", "yellow"),
    "failed": ("✗ failed", "red"),
    "replaced": ("⇄ replaced", "magenta"),
    "cancelled": ("⊘ cancelled", "dim"),
}


def first_lines(text: str | None, n: int = 1, width: int = 200) -> str:
    """The first ``n`` non-empty lines of ``text``, joined with ' / ' and cut at ``width``;
    secrets are masked first (server text reaches the TUI's cells and cards through here, and a
    key cut at ``width`` would no longer be recognised)."""
    from ..engine.base.redact import redact

    text = redact(text)
    if not text:
        return ""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()][:n]
    out = " / ".join(lines)
    return out if len(out) <= width else out[: width - 1] + "…"


@dataclass
class MemberView:
    """What the table knows about one member of the run."""

    model: str
    substitute_for: str | None = None
    status: str = "pending"
    answer: str | None = None
    latency_s: float | None = None
    tokens: int | None = None
    arrival: int | None = None
    content: str = ""
    reasoning: str = ""
    error: str = ""
    note: str = ""
    #: what happened to this seat: "replaced by fast-c (auth)", "substitute for fast-b"
    substitutions: list[str] = field(default_factory=list)
    #: ``-k auto``: the stage that first asked this member
    stage: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class VoteTable(FillTable):
    """One keyed row per member; rows fill in as that member's events arrive."""

    #: at 80 columns the note column is narrow: its header shortens instead of being cut
    LAST_LABELS = ("reasoning / error", "note")

    DEFAULT_CSS = """
    VoteTable { height: 1fr; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self.members: dict[str, MemberView] = {}
        self.arrivals = 0
        self.stage: str | None = None  # -k auto: the stage now asking

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def reset(self) -> None:
        self.clear()
        self.members.clear()
        self.arrivals = 0
        self.stage = None

    # -- events ----------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Render one engine event (others are ignored)."""
        if isinstance(event, StageStarted):
            self.stage = f"stage {event.index + 1} ({event.stage})"
            return
        if isinstance(event, VoteStarted):
            view = self._ensure(event.model)
            view.substitute_for = event.substitute_for
            view.status = "pending"
            if view.stage is None:
                view.stage = self.stage
            if event.substitute_for:
                view.substitutions.append(f"substitute for {event.substitute_for}")
            if event.variant:
                view.note = event.variant
        elif isinstance(event, VoteDelta):
            view = self._ensure(event.model)
            view.content += event.content or ""
            view.reasoning += event.reasoning or ""
            if view.status == "pending":
                view.status = "streaming"
            view.note = self._thinking_note(view.reasoning) or first_lines(view.content)
        elif isinstance(event, VoteReceived):
            view = self._ensure(event.model)
            self.arrivals += 1
            view.arrival = self.arrivals
            view.answer = event.answer
            view.latency_s = event.latency_s
            view.tokens = event.tokens
            view.content = event.raw or ""
            view.reasoning = event.thinking or view.reasoning
            view.status = "answered" if event.answer is not None else "no_answer"
            view.note = (self._thinking_note(view.reasoning)
                         or ("" if event.answer is not None else first_lines(event.raw)))
        elif isinstance(event, VoteFailed):
            view = self._ensure(event.model)
            self.arrivals += 1
            view.arrival = self.arrivals
            view.status = "failed"
            view.latency_s = event.latency_s
            view.error = event.error
            error = first_lines(event.error)
            view.note = error if error.startswith(event.kind) else f"{event.kind}: {error}"
        elif isinstance(event, MemberSubstituted):
            view = self._ensure(event.model)
            prefix = f"{view.note}; " if view.status == "failed" and view.note else ""
            view.status = "replaced"
            view.note = f"{prefix}→ {event.substitute} ({event.reason})"
            view.substitutions.append(f"replaced by {event.substitute} ({event.reason})")
        elif isinstance(event, Cancelled):
            view = self._ensure(event.model)
            view.status = "cancelled"
            view.note = event.reason
        else:
            return
        self._render_row(view)

    def show_challenger(self, vote: Any) -> None:
        """The shadow challenger's vote, attached to the result (never part of the decision)."""
        key = f"{vote.model} (challenger)"
        view = self._ensure(key)
        view.status = vote.status if vote.status in STATUS_LOOK else "answered"
        view.answer = vote.answer
        view.latency_s = vote.latency_s
        view.tokens = getattr(vote, "tokens", None)
        view.content = getattr(vote, "raw", None) or ""
        view.reasoning = getattr(vote, "thinking", "") or ""
        view.error = vote.error or ""
        view.note = "shadow challenger: not part of the decision" + (
            f"; {first_lines(vote.error)}" if vote.error else "")
        self._render_row(view)

    def cancel_pending(self, reason: str) -> list[str]:
        """Mark every member still waiting as cancelled (the user pressed Esc)."""
        names = []
        for view in self.members.values():
            if view.status in ("pending", "streaming"):
                view.status = "cancelled"
                view.note = reason
                names.append(view.model)
                self._render_row(view)
        return names

    # -- rendering -------------------------------------------------------------------------
    @staticmethod
    def _thinking_note(reasoning: str) -> str:
        line = first_lines(reasoning, 2)
        return f"thinking: {line}" if line else ""

    def _ensure(self, model: str) -> MemberView:
        view = self.members.get(model)
        if view is None:
            view = self.members[model] = MemberView(model)
            self.add_row(*self._cells(view), key=model)
        return view

    def _cells(self, view: MemberView) -> list[Any]:
        label, style = STATUS_LOOK.get(view.status, (view.status, ""))
        dim = "dim" if view.status in ("cancelled", "replaced") else ""
        model = view.model + (f" (for {view.substitute_for})" if view.substitute_for else "")
        answer = (Text(view.answer, style="bold") if view.answer is not None
                  else Text("—" if view.status == "no_answer" else "", style="dim"))
        return [
            Text(str(view.arrival) if view.arrival else "", style="dim"),
            Text(model, style=dim),
            Text(label, style=style),
            answer,
            Text(f"{view.latency_s:.2f}s" if view.latency_s is not None else "", style=dim),
            Text(str(view.tokens) if view.tokens is not None else "", style=dim),
            # Cut with an ellipsis where the column ends (the card below has the whole text).
            Text(view.note, style="red" if view.status == "failed" else (dim or "italic"),
                 no_wrap=True, overflow="ellipsis"),
        ]

    def _render_row(self, view: MemberView) -> None:
        for (key, _label), cell in zip(COLUMNS, self._cells(view)):
            self.update_cell(view.model, key, cell, update_width=True)

    def detail(self, model: str) -> str:
        """The card of one member (markup): see :func:`member_card`."""
        view = self.members.get(model)
        return member_card(view) if view is not None else ""


def member_card(view: MemberView) -> str:
    """One member's card: parsed vote, status, latency, tokens, substitutions, reasoning, reply.

    Everything here was reported by the engine (``VoteReceived`` carries the parsed answer,
    ``MemberSubstituted`` the replacement); the card only lays it out.
    """
    label, style = STATUS_LOOK.get(view.status, (view.status, ""))
    if view.answer is not None:
        vote = f"vote [b]{_escape(view.answer)}[/b]"
    elif view.status in ("no_answer", "answered"):
        vote = "vote [yellow]none[/yellow] (no label found in the reply)"
    else:
        vote = "vote [dim]-[/dim]"
    facts = [vote, f"[{style}]{_escape(label)}[/{style}]" if style else _escape(label),
             f"latency {view.latency_s:.2f}s" if view.latency_s is not None else "latency -",
             f"{view.tokens} tokens" if view.tokens is not None else "tokens -"]
    if view.arrival:
        facts.append(f"arrived #{view.arrival}")
    if view.stage:
        facts.append(_escape(view.stage))
    lines = [" · ".join(facts)]
    if view.substitutions:
        lines.append("[dim]substitution:[/dim] " + _escape("; ".join(view.substitutions)))
    if view.error:
        lines.append(f"[red]error:[/red] {_escape(first_lines(view.error, 2, 300))}")
    if view.reasoning:
        lines.append("[dim]reasoning:[/dim] [i]" + _escape(first_lines(view.reasoning, 3, 300))
                     + "[/i]")
    if view.content:
        lines.append("[dim]raw reply:[/dim] " + _escape(first_lines(view.content, 4, 400)))
    elif view.status in ("pending", "streaming"):
        lines.append("[dim]raw reply: (waiting)[/dim]")
    return "\n".join(lines)


class MemberCard(Static):
    """The card of the highlighted member, under the vote table (titled with its name)."""

    def show(self, view: MemberView | None) -> None:
        if view is None:
            self.border_title = "member"
            self.update("[dim]highlight a row to see that member's card[/dim]")
            return
        sub = f" (for {view.substitute_for})" if view.substitute_for else ""
        self.border_title = f"{view.model}{sub}"
        self.update(member_card(view))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def describe_result(result: Any) -> tuple[str, str]:
    """(markup, css class) for the banner: answer, confidence with counts, early / cancelled."""
    counts = "  ".join(f"{label}={n}" for label, n in
                       sorted(result.counts.items(), key=lambda kv: (-kv[1], kv[0])))
    cancelled = [v.model for v in result.votes if v.status == "cancelled"]
    notes = []
    if getattr(result, "auto", False):
        answered = next((i for i, s in enumerate(result.stages) if s.accepted), None)
        if answered is None:
            notes.append("-k auto: no stage was confident")
        else:
            spec = _escape(result.stages[answered].spec)
            notes.append(f"-k auto: stage {answered + 1} ({spec}) answered")
    # The engine sets it only when requests were really cancelled because of the decision;
    # the CLI summary reads the same flag, so the two always agree.
    if result.decided_early:
        notes.append("decided early")
    if cancelled:
        notes.append("cancelled: " + ", ".join(cancelled))
    spend = result.spend  # decision + shadow calls and USD (engine/spend.py)
    notes.append(f"{spend.calls_text()}, {result.elapsed_s:.2f}s{spend.cost_text()}")
    tail = " · ".join(notes)
    valid = f"valid {result.valid_votes}/{len(result.members)}"
    if result.status == "decided":
        conf = f"{result.confidence:.0%}" if result.confidence is not None else "-"
        tb = f", tie broken by {result.tie_broken_by}" if result.tie_broken_by else ""
        return (f"[b]→ {_escape(result.answer)}[/b]   confidence {conf} ({valid}: "
                f"{_escape(counts)}{tb})\n{tail} · call {result.id}", "-decided")
    if result.status == "tie":
        return (f"[b]→ no decision: tie between {_escape(', '.join(result.tied))}[/b] "
                f"({valid}: {_escape(counts)})\n{tail} · call {result.id}", "-undecided")
    if result.status == "all_failed":
        return f"[b]→ no decision: every member failed[/b]\n{tail} · call {result.id}", "-failed"
    if result.status == "abstained":
        return (f"[b]→ abstained: no stage reached its threshold[/b] ({valid}: {_escape(counts)})"
                f"\n{tail} · call {result.id}", "-undecided")
    return (f"[b]→ no decision: no valid vote[/b] ({valid})\n{tail} · call {result.id}",
            "-undecided")


class DecisionBanner(Static):
    """The run's headline: asking…, the decision the moment it is known, or why there is none."""

    STATES = ("-idle", "-running", "-decided", "-undecided", "-failed", "-cancelled")

    def show(self, markup: str, state: str) -> None:
        self.remove_class(*self.STATES)
        self.add_class(state)
        self.update(markup)

    _result: Any = None

    def show_result(self, result: Any) -> None:
        self._result = result
        markup, state = describe_result(result)
        self.show(markup, state)

    def refresh_spend(self) -> None:
        """The shadows were collected after the decision: show the call's final spend."""
        if self._result is not None:
            self.show_result(self._result)
