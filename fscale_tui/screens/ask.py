"""Ask: one question (or a source + draft to verify) to a panel; votes stream in live.

Each member gets a row the moment its request starts (*pending*), which fills in as its reply
streams (reasoning of thinking models first), then shows its answer, latency and tokens, its
error, or its substitute. The banner shows the engine's decision the moment it is made. Esc
cancels the run: cancelling the worker cancels the engine's async generator, whose ``finally``
cancels the HTTP requests still in flight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, Select, TextArea
from textual.worker import Worker, WorkerState

from ..engine.base.errors import FscaleError
from ..engine.base.events import ChallengerAnswered, Decided, VoteStarted
from ..messages import EngineEvent, SettingsChanged
from ..widgets.stages import StagesView
from ..widgets.votes import DecisionBanner, MemberCard, VoteTable
from .base import FscaleScreen

#: This screen in the app: its mode, class, F-key, footer label and title (the app, the help
#: screen, the palette and ``fscale tui --screen`` read it without importing this module).
SCREEN = {"mode": "ask", "class": "AskScreen", "key": "f2", "label": "Ask",
          "title": "Ask / verify: live votes"}

MODES = [("scale", "scale"), ("verify", "verify")]
#: what the k field accepts as it is typed: digits, or (a prefix of) "auto"
K_TYPED = r"[0-9]*|[aA]([uU]([tT][oO]?)?)?"
#: what the α field accepts as it is typed: a number such as 0.1
ALPHA_TYPED = r"[0-9]*\.?[0-9]*"
IDLE_TEXT = "Type a question and press Enter (ctrl+r runs from anywhere on this screen)."
MAX_SAVED_TEXT = 20_000


class AskScreen(FscaleScreen):
    """Ask a panel, or verify a draft against its source, and watch the votes arrive."""

    NAME = "ask"
    BINDINGS = [
        Binding("ctrl+r", "run", "Run"),
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+o", "open_context", "Context file", show=False),
        Binding("ctrl+l", "toggle_context_size", "Context size", show=False),
        Binding("ctrl+n", "toggle_mode", "Scale/verify", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.run_no = 0
        self.current: Worker | None = None
        self._scale_answers = "YES,NO"
        #: each mode keeps its own question: verify must never ask the Ask screen's question
        self._questions = {"scale": "", "verify": ""}
        #: the last decision (its challengers fill in after it: ``ChallengerAnswered``)
        self.last_result: Any = None

    # -- layout ----------------------------------------------------------------------------
    def body(self) -> ComposeResult:
        saved: dict[str, Any] = self.app.state.get("ask", {}) or {}
        mode = saved.get("mode", "scale") if saved.get("mode") in ("scale", "verify") else "scale"
        self._scale_answers = saved.get("answers") or "YES,NO"
        self._questions = {"scale": str(saved.get("question") or ""),
                           "verify": str(saved.get("verify_question") or "")}
        with Vertical(id="ask-form"):
            with Horizontal(classes="form-row"):
                yield Select(MODES, value=mode, allow_blank=False, compact=True, id="mode")
                yield Input(self._questions["scale"], placeholder="Question (Enter runs it)",
                            compact=True, id="question")
            with Horizontal(classes="form-row"):
                yield Label("answers", classes="field-label")
                yield Input(self._scale_answers, placeholder="YES,NO", compact=True, id="answers")
                yield Label("panel", classes="field-label")
                yield Select([("default", "default")], value="default", allow_blank=False,
                             compact=True, id="panel")
                yield Label("k", classes="field-label")
                # a number of models, or "auto" (route + calibrated cascade)
                yield Input(str(saved.get("k") or ""), placeholder="all", compact=True, id="k",
                            restrict=K_TYPED, max_length=4,
                            tooltip="number of models, or auto (route + calibrated cascade)")
                yield Label("α", classes="field-label")
                # -k auto --alpha: abstain unless the answer passes the calibrated threshold
                yield Input(str(saved.get("alpha") or ""), placeholder="-", compact=True,
                            id="alpha", restrict=ALPHA_TYPED, max_length=5,
                            tooltip="k = auto: abstain unless the answer passes the threshold "
                                    "calibrated for this risk, e.g. 0.1 (needs 'fscale "
                                    "calibrate'); empty: always answer")
                yield Button("Run", id="run", variant="primary", compact=True)
                yield Button("File…", id="pick", compact=True)
        with Horizontal(id="texts"):
            context = TextArea(saved.get("context", ""), id="context",
                               placeholder="paste context here, or ctrl+o to load a file")
            context.border_title = "context"
            yield context
            draft = TextArea(saved.get("draft", ""), id="draft",
                             placeholder="the draft to check against the source")
            draft.border_title = "draft"
            yield draft
        yield DecisionBanner(IDLE_TEXT, id="banner", classes="-idle")
        yield StagesView(id="stages")
        yield VoteTable(id="votes")
        yield MemberCard("", id="detail")

    def on_mount(self) -> None:
        if self.app.state.get("context_big"):
            self.add_class("-big-context")
        self._apply_mode(self.query_one("#mode", Select).value)
        self._load_panels()
        self._k_changed()
        self.query_one("#question", Input).focus()
        self._fit(self.app.size.height)
        super().on_mount()

    def on_resize(self, event: Any) -> None:
        self._fit(event.size.height)

    def _fit(self, height: int) -> None:
        """Small terminals: drop the detail pane and shrink the text areas."""
        self.set_class(height < 28, "-short")

    def _load_panels(self) -> None:
        """Fill the panel selector from the engine's settings (config.toml + built-ins)."""
        try:
            settings = self.app.settings
        except FscaleError as exc:
            self.query_one(DecisionBanner).show(f"[b]configuration error:[/b] {exc}", "-failed")
            return
        names = sorted(settings.panels, key=lambda n: (n != "default", n))
        if "default" not in names:
            names.insert(0, "default")
        select = self.query_one("#panel", Select)
        saved = (self.app.state.get("ask", {}) or {}).get("panel")
        wanted = saved if saved in names else settings.get("panel")
        select.set_options([(n, n) for n in names])
        select.value = wanted if wanted in names else "default"

    @on(SettingsChanged)
    def settings_changed(self) -> None:
        """Panels were edited elsewhere: refresh the selector."""
        self._load_panels()

    # -- mode ------------------------------------------------------------------------------
    @on(Select.Changed, "#mode")
    def mode_changed(self, event: Select.Changed) -> None:
        """Switch between scale and verify."""
        self._apply_mode(event.value)

    def action_toggle_mode(self) -> None:
        """Toggle scale / verify."""
        select = self.query_one("#mode", Select)
        select.value = "verify" if select.value == "scale" else "scale"

    def _apply_mode(self, mode: Any) -> None:
        verify = mode == "verify"
        answers = self.query_one("#answers", Input)
        question = self.query_one("#question", Input)
        if verify != self.has_class("-verify"):
            # Each mode has its own question: the one typed for scale is kept for scale.
            self._questions["scale" if verify else "verify"] = question.value
            question.value = self._questions["verify" if verify else "scale"]
        if verify and not self.has_class("-verify"):
            self._scale_answers = answers.value
            answers.value = "YES,NO"
        elif not verify and self.has_class("-verify"):
            answers.value = self._scale_answers
        answers.disabled = verify
        self.set_class(verify, "-verify")
        self._k_changed()
        self.query_one("#context", TextArea).border_title = "source" if verify else "context"
        question.placeholder = (
            "Question (empty: does the draft make claims the source does not support?)"
            if verify else "Question (Enter runs it)")

    # -- running ---------------------------------------------------------------------------
    @on(Input.Submitted)
    def submitted(self) -> None:
        """Enter in any field runs the question."""
        self.action_run()

    @on(Button.Pressed, "#run")
    def run_pressed(self) -> None:
        """The Run button."""
        self.action_run()

    @on(Button.Pressed, "#pick")
    def pick_pressed(self) -> None:
        """The File… button."""
        self.action_open_context()

    def build_request(self) -> Any:
        """The engine request for what is on the form (raises FscaleError when incomplete)."""
        from ..engine.requests import is_auto, parse_k, scale_request, verify_request
        from ..engine.base.calls import new_call_id

        mode = self.query_one("#mode", Select).value
        question = self.query_one("#question", Input).value
        context = self.query_one("#context", TextArea).text
        typed = self.query_one("#k", Input).value
        auto = is_auto(typed)
        # -k auto chooses the models itself (router + cascade): no panel is sent.
        panel = None if auto else str(self.query_one("#panel", Select).value)
        k: Any = "auto" if auto else parse_k(typed)
        common = dict(panel=panel, k=k, id=new_call_id(), stream=True)
        if mode == "verify":
            return verify_request(context, self.query_one("#draft", TextArea).text,
                                  question=question, **common)
        return scale_request(question, self.query_one("#answers", Input).value,
                             context=context, alpha=self._alpha() if auto else None, **common)

    def _alpha(self) -> float | None:
        """The α field (``-k auto --alpha``): empty means always answer."""
        from ..engine.base.errors import UsageError

        text = self.query_one("#alpha", Input).value.strip()
        if not text:
            return None
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"α must be a number between 0 and 1, e.g. 0.1 (not {text!r})") from None

    def action_run(self) -> None:
        """Run the question (or verify) on the chosen panel."""
        try:
            request = self.build_request()
        except FscaleError as exc:
            self.notify(str(exc), title="cannot run", severity="error")
            return
        self._save()
        self.run_no += 1
        self.query_one(VoteTable).reset()
        self.query_one(MemberCard).show(None)
        self.query_one(StagesView).reset(request.auto)
        self.query_one(DecisionBanner).show("asking…", "-running")
        self.current = self.run_vote(request, self.run_no)

    @work(exclusive=True, group="votes", exit_on_error=False)
    async def run_vote(self, request: Any, run: int) -> None:
        """Stream the engine's events for one call to this screen."""
        async for event in self.app.engine.scale_events(request):
            self.post_message(EngineEvent(event, run))

    @on(EngineEvent)
    def engine_event(self, message: EngineEvent) -> None:
        """Render one event of the current run."""
        if message.run != self.run_no:
            return
        event = message.event
        table = self.query_one(VoteTable)
        banner = self.query_one(DecisionBanner)
        stages = self.query_one(StagesView)
        if isinstance(event, Decided):
            self.last_result = event.result
            banner.show_result(event.result)
            stages.show_result(event.result)
            for shadow in getattr(event.result, "challengers", None) or []:
                table.show_challenger(shadow)
        elif isinstance(event, ChallengerAnswered):
            # Every challenger's vote is on the result by now (the event names the first).
            result = self.last_result
            shadows = getattr(result, "challengers", None) or [event.vote]
            for shadow in shadows:
                table.show_challenger(shadow)
            banner.refresh_spend()  # with what the challengers cost
        else:
            with self.app.batch_update():
                stages.apply(event)
                table.apply(event)
            if isinstance(event, VoteStarted) and banner.has_class("-running"):
                banner.show(f"asking {len(table.members)} models… (Esc cancels)", "-running")
        model = getattr(event, "model", None)
        if model is not None and self._highlighted() == model:
            self._show_detail(model)

    def action_cancel(self) -> None:
        """Cancel the running call: its HTTP requests are cancelled too."""
        if self.current is not None and self.current.is_running:
            self.current.cancel()

    @on(Worker.StateChanged)
    def worker_changed(self, event: Worker.StateChanged) -> None:
        """Cancelled or failed runs are shown in the banner (errors of workers land here)."""
        if event.worker is not self.current:
            return
        banner = self.query_one(DecisionBanner)
        if event.state == WorkerState.CANCELLED:
            names = self.query_one(VoteTable).cancel_pending("cancelled by you (Esc)")
            what = ", ".join(names) if names else "nothing was in flight"
            banner.show(f"[b]cancelled[/b] — no decision; requests cancelled: {what}", "-cancelled")
        elif event.state == WorkerState.ERROR:
            error = event.worker.error
            message = str(error) if isinstance(error, FscaleError) else f"{type(error).__name__}: {error}"
            from rich.markup import escape

            banner.show(f"[b]error:[/b] {escape(message)}", "-failed")

    # -- detail ----------------------------------------------------------------------------
    def _highlighted(self) -> str | None:
        table = self.query_one(VoteTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    @on(DataTable.RowHighlighted)
    def row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Show the highlighted member's reply and reasoning below the table."""
        if event.row_key.value is not None:
            self._show_detail(event.row_key.value)

    def _show_detail(self, model: str) -> None:
        self.query_one(MemberCard).show(self.query_one(VoteTable).members.get(model))

    @on(Input.Changed, "#k")
    def _k_changed(self) -> None:
        """k = auto chooses the models itself: the panel selector does not apply, α does."""
        from ..engine.requests import is_auto

        auto = is_auto(self.query_one("#k", Input).value)
        self.query_one("#panel", Select).disabled = auto
        self.query_one("#alpha", Input).disabled = not auto or self.has_class("-verify")

    # -- context ---------------------------------------------------------------------------
    def action_open_context(self) -> None:
        """Load the context (or source) from a file."""
        from .modals import FilePicker

        def picked(path: Path | None) -> None:
            if path is not None:
                self.load_context(path)

        # Start where the last file came from (remembered), else the launch folder.
        last = Path(self.app.state.get("picker_dir") or Path.cwd())
        self.app.push_screen(FilePicker(last if last.is_dir() else Path.cwd()), picked)

    @work(thread=True, exclusive=True, group="context-file", exit_on_error=False)
    def load_context(self, path: Path) -> None:
        """Read the picked file in a thread (a large file must not freeze the screen)."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.app.call_from_thread(self.notify, f"{path}: {exc}", title="cannot read file",
                                      severity="error")
            return
        self.app.call_from_thread(self._context_loaded, path, text)

    def _context_loaded(self, path: Path, text: str) -> None:
        self.query_one("#context", TextArea).text = text
        self.app.state.update(picker_dir=str(path.parent))
        self.notify(f"{path.name}: {len(text)} characters", title="context loaded")

    def action_toggle_context_size(self) -> None:
        """Make the context pane bigger or smaller (remembered)."""
        self.toggle_class("-big-context")
        self.app.state.update(context_big=self.has_class("-big-context"))

    def _save(self) -> None:
        """Remember the form for the next start."""
        verify = self.has_class("-verify")
        typed = self.query_one("#question", Input).value
        self.app.state.update(ask={
            "mode": self.query_one("#mode", Select).value,
            "question": self._questions["scale"] if verify else typed,
            "verify_question": typed if verify else self._questions["verify"],
            "answers": (self._scale_answers if self.has_class("-verify")
                        else self.query_one("#answers", Input).value),
            "panel": self.query_one("#panel", Select).value,
            "k": self.query_one("#k", Input).value,
            "alpha": self.query_one("#alpha", Input).value,
            "context": self.query_one("#context", TextArea).text[:MAX_SAVED_TEXT],
            "draft": self.query_one("#draft", TextArea).text[:MAX_SAVED_TEXT],
        })
