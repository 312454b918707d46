"""Generate: k candidates side by side as they arrive, each judge's ballot, the winner.

The engine (``engine.generate.generate_events``) picks generators and judges, shuffles what
each judge sees and selects the winner; this screen only shows its events. Esc cancels.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, HorizontalScroll, Vertical
from textual.widgets import Button, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

from ..engine.base.errors import FscaleError
from ..messages import EngineEvent, SettingsChanged
from ..widgets.table import FillTable
from ..widgets.votes import DecisionBanner, first_lines
from .base import FscaleScreen

#: This screen in the app: its mode, class, F-key, footer label and title (the app, the help
#: screen, the palette and ``fscale tui --screen`` read it without importing this module).
SCREEN = {"mode": "generate", "class": "GenerateScreen", "key": "f3", "label": "Generate",
          "title": "Generate: candidates and judges"}

#: A candidate card is never narrower than this; more cards than fit scroll sideways.
CARD_MIN_WIDTH = 24


def strategy_names() -> tuple[str, ...]:
    """The engine's strategy registry (the same list as ``fscale generate --strategy``)."""
    from ..engine.strategies import names

    return names()


def is_search(strategy: str) -> bool:
    from ..engine.strategies import strategies

    entry = strategies().get(strategy)
    return bool(entry and entry.search)


class CandidateCard(Static):
    """One candidate: its model, latency, final answer and text; the winner is highlighted."""

    def __init__(self, index: int, model: str) -> None:
        super().__init__("[dim]… pending[/dim]", classes="candidate -pending")
        self.index = index
        self.model = model
        self.border_title = f"#{index} {model}"

    def filled(self, text: str, latency_s: float | None, answer: str | None) -> None:
        self.remove_class("-pending")
        lat = f"{latency_s:.2f}s" if latency_s else ""
        self._facts = [x for x in (f"answer {answer}" if answer else "", lat) if x]
        self.border_subtitle = " · ".join(self._facts)
        from ..engine.base.redact import redact

        text = redact(text) or ""
        lines = text.strip().splitlines()[:40] if text else []
        self.update(escape("\n".join(lines)) if lines else "[dim](empty)[/dim]")

    def failed(self, error: str) -> None:
        self.remove_class("-pending")
        self.add_class("-failed")
        self.update(f"[red]✗ {escape(first_lines(error, 3, 300))}[/red]")

    def result(self, votes: float, winner: bool) -> None:
        self.set_class(winner, "-winner")
        title = f"#{self.index} {self.model}"
        # Short enough for a narrow card: the votes join the facts under the text.
        self.border_title = f"★ winner {title}" if winner else title
        self.border_subtitle = " · ".join([f"{votes:g} vote{'' if votes == 1 else 's'}",
                                           *getattr(self, "_facts", [])])


class GenerateScreen(FscaleScreen):
    """Generate candidates and let judges from other families pick the best."""

    NAME = "generate"
    BINDINGS = [
        Binding("ctrl+r", "run", "Run"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.run_no = 0
        self.current: Worker | None = None
        self.cards: dict[int, CandidateCard] = {}
        self.generators: tuple[str, ...] = ()
        self.same_family: tuple[str, ...] = ()

    def body(self) -> ComposeResult:
        saved = self.app.state.get("generate", {}) or {}
        with Vertical(id="gen-form"):
            with Horizontal(classes="form-row"):
                yield Input(saved.get("question", ""), placeholder="Prompt (Enter runs it)",
                            compact=True, id="gen-question")
            with Horizontal(classes="form-row"):
                yield Label("strategy", classes="field-label")
                names = strategy_names()
                strategy = saved.get("strategy") if saved.get("strategy") in names else names[0]
                yield Select([(s, s) for s in names], value=strategy, allow_blank=False,
                             compact=True, id="gen-strategy")
                yield Label("panel", classes="field-label")
                yield Select([("default", "default")], value="default", allow_blank=False,
                             compact=True, id="gen-panel")
                yield Label("k", classes="field-label")
                yield Input(str(saved.get("k") or ""), placeholder="3", compact=True, id="gen-k",
                            restrict=r"[0-9]*", max_length=2)
                yield Button("Run", id="gen-run", variant="primary", compact=True)
        yield DecisionBanner("Type a prompt and press Enter: candidates appear side by side, "
                             "then the judges' ballots.", id="gen-banner", classes="-idle")
        yield HorizontalScroll(id="candidates")
        judges = FillTable(id="judges", cursor_type="row")
        judges.border_title = "judges"
        yield judges

    def on_mount(self) -> None:
        if self.query("#judges"):
            table = self.query_one("#judges", FillTable)
            for key in ("judge", "choice", "latency", "detail"):
                table.add_column(key, key=key)
            self._load_panels()
            self.query_one("#gen-question", Input).focus()
        super().on_mount()

    @on(SettingsChanged)
    def _load_panels(self) -> None:
        """Fill the panel selector from the settings."""
        if not self.query("#gen-panel"):
            return
        try:
            settings = self.app.settings
        except FscaleError:
            return
        names = sorted(settings.panels, key=lambda n: (n != "default", n))
        if "default" not in names:
            names.insert(0, "default")
        select = self.query_one("#gen-panel", Select)
        saved = (self.app.state.get("generate", {}) or {}).get("panel")
        select.set_options([(n, n) for n in names])
        select.value = saved if saved in names else "default"

    # -- running ---------------------------------------------------------------------------
    @on(Input.Submitted)
    def submitted(self) -> None:
        """Enter runs the prompt."""
        self.action_run()

    @on(Button.Pressed, "#gen-run")
    def run_pressed(self) -> None:
        """The Run button."""
        self.action_run()

    def build_request(self) -> Any:
        from ..engine.base.calls import GenerateRequest, new_call_id
        from ..engine.requests import parse_k, validated

        return validated(GenerateRequest(
            question=self.query_one("#gen-question", Input).value,
            strategy=str(self.query_one("#gen-strategy", Select).value),
            panel=str(self.query_one("#gen-panel", Select).value),
            k=parse_k(self.query_one("#gen-k", Input).value), id=new_call_id()))

    def action_run(self) -> None:
        """Generate candidates and select one."""
        if not self.query("#judges"):
            return
        try:
            request = self.build_request()
        except FscaleError as exc:
            self.notify(str(exc), title="cannot run", severity="error")
            return
        self.app.state.update(generate={"question": request.question, "strategy": request.strategy,
                                        "panel": request.panel, "k": request.k or ""})
        self.run_no += 1
        self.cards.clear()
        self.query_one("#candidates").remove_children()
        self.query_one("#judges", FillTable).clear()
        self.query_one(DecisionBanner).show("generating…", "-running")
        self.current = self.run_generate(request, self.run_no)

    @work(exclusive=True, group="generate", exit_on_error=False)
    async def run_generate(self, request: Any, run: int) -> None:
        """Stream the engine's generate events to this screen."""
        async for event in self.app.engine.generate_events(request):
            self.post_message(EngineEvent(event, run))

    def _card(self, index: int, model: str) -> CandidateCard:
        card = self.cards.get(index)
        if card is None:
            card = self.cards[index] = CandidateCard(index, model)
            self.query_one("#candidates").mount(card)
            self._fit_cards()
        return card

    def _fit_cards(self) -> None:
        """Share the width between the cards (at least ``CARD_MIN_WIDTH`` each). Left to
        ``1fr`` in a scrolling row, every card took the whole width: at 80 columns only #0
        was on screen."""
        if not self.cards:
            return
        room = self.size.width - 2  # the row's margins; the screen's size is known at once
        width = max(CARD_MIN_WIDTH, room // len(self.cards))
        for card in self.cards.values():
            card.styles.width = width

    def on_resize(self) -> None:
        self._fit_cards()

    @on(EngineEvent)
    def engine_event(self, message: EngineEvent) -> None:
        """Render one event of the current run."""
        if message.run != self.run_no:
            return
        from ..engine.base import events as ev

        event = message.event
        banner = self.query_one(DecisionBanner)
        judges = self.query_one("#judges", FillTable)
        if isinstance(event, ev.GenerateStarted):
            self.generators = event.generators
            self.same_family = event.same_family_judges
            if not is_search(event.strategy) and event.generators:
                for i in range(event.k):
                    self._card(i, event.generators[i % len(event.generators)])
            banner.show(f"{escape(event.strategy)}: {event.k} candidates from "
                        f"{escape(', '.join(event.generators))}; judges: "
                        f"{escape(', '.join(event.judges) or '-')} (Esc cancels)"
                        + self._independence_note(event.judges_independent), "-running")
        elif isinstance(event, ev.CandidateGenerated):
            self._card(event.index, event.model).filled(event.text, event.latency_s, event.answer)
        elif isinstance(event, ev.CandidateFailed):
            self._card(event.index, event.model).failed(event.error)
        elif isinstance(event, ev.JudgeVoted):
            choice = (f"#{event.choice_index} {event.choice_model}" if event.choice_index is not None
                      else "no valid choice")
            detail = event.error or event.match or (
                f"score {event.score:.2f}" if event.score is not None else
                f"saw {', '.join(f'#{i}' for i in event.order)}" if event.order else "")
            judge = event.judge + (" (same family)" if event.judge in self.same_family else "")
            judges.add_row(Text(judge), Text(choice, style="red" if event.error else "bold"),
                           f"{event.latency_s:.2f}s" if event.latency_s else "",
                           Text(first_lines(detail, 1, 200), style="red" if event.error else "dim"))
        elif isinstance(event, ev.StepScored):
            score = f"{event.score:.2f}" if event.score is not None else "-"
            judges.add_row(f"step {event.iteration}.{event.beam}", event.model, score,
                           Text(("kept · " if event.kept else "") + first_lines(event.step, 1, 200),
                                style="dim"))
        elif isinstance(event, ev.Generated):
            self._show_result(event.result)

    def _show_result(self, result: Any) -> None:
        for cand in result.all_outputs:
            card = self._card(cand.index, cand.model)
            if cand.text is not None and card.has_class("-pending"):
                card.filled(cand.text, cand.latency_s, cand.answer)
            card.result(cand.votes, cand.index == result.winner_index)
        banner = self.query_one(DecisionBanner)
        tail = f"{result.calls_made} calls, {result.elapsed_s:.2f}s · call {result.id}"
        self.same_family = tuple(getattr(result, "same_family_judges", ()) or ())
        tail += self._independence_note(getattr(result, "judges_independent", None), inline=True)
        if result.status == "decided":
            answer = f" (answer {escape(result.answer)})" if result.answer else ""
            banner.show(f"[b]→ #{result.winner_index} {escape(result.winner_model or '')}[/b]{answer} "
                        f"selected by {escape(result.selected_by or result.strategy)}\n{tail}",
                        "-decided")
            winner = self.cards.get(result.winner_index)
            if winner is not None:  # once laid out: more cards than fit scroll to the winner
                self.call_after_refresh(self.query_one("#candidates", HorizontalScroll)
                                        .scroll_to_widget, winner, animate=False)
        elif result.status == "all_failed":
            banner.show(f"[b]→ no output: every generator failed[/b]\n{tail}", "-failed")
        else:
            banner.show(f"[b]→ no decision[/b] ({result.status})\n{tail}", "-undecided")

    def _independence_note(self, independent: bool | None, inline: bool = False) -> str:
        """Markup saying the judges share a family with the generators (empty when not)."""
        if independent is not False:
            return ""
        gens = set(self.generators)
        who = ", ".join(f"{j} (a generator)" if j in gens else j for j in self.same_family)
        verb = "shares" if len(self.same_family) == 1 else "share"
        text = (f"[b $warning]⚠ judges not independent[/]: {escape(who or 'some judges')} "
                f"{verb} a family with a generator (no judge of another family)")
        return f" · {text}" if inline else f"\n{text}"

    def action_cancel(self) -> None:
        """Cancel the running generate call (its requests are cancelled too)."""
        if self.current is not None and self.current.is_running:
            self.current.cancel()

    @on(Worker.StateChanged)
    def worker_changed(self, event: Worker.StateChanged) -> None:
        """Cancelled or failed runs are shown in the banner."""
        if event.worker is not self.current:
            return
        banner = self.query_one(DecisionBanner)
        if event.state == WorkerState.CANCELLED:
            for card in self.cards.values():
                if card.has_class("-pending"):
                    card.failed("cancelled by you (Esc)")
            banner.show("[b]cancelled[/b] — no output", "-cancelled")
        elif event.state == WorkerState.ERROR:
            error = event.worker.error
            message = str(error) if isinstance(error, FscaleError) else f"{type(error).__name__}: {error}"
            banner.show(f"[b]error:[/b] {escape(message)}", "-failed")
