"""History: past calls with a filter; open one to see every member's reply; feedback keys.

Calls come from the engine's call log (``engine.calls``), read in thread workers (the filter
runs in SQL, one query per change); feedback (confirm, reject, override label, prefer a model)
goes to the same log, which updates the ratings. Rows are keyed by the log's row number, which
is unique whatever the log holds (calls logged twice under one id by older versions included).
Every feedback key asks first, naming the call (id and row) and the verdict it will record.
"""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from ..engine.base.errors import FscaleError
from ..widgets.table import FillTable
from ..widgets.votes import first_lines
from .base import FscaleScreen

#: This screen in the app: its mode, class, F-key, footer label and title (the app, the help
#: screen, the palette and ``fscale tui --screen`` read it without importing this module).
SCREEN = {"mode": "history", "class": "HistoryScreen", "key": "f7", "label": "History",
          "title": "History: past calls and feedback"}

LIMIT = 500

#: what each one-key verdict means, for the confirmation dialog
VERDICTS = {
    "confirm": "the decision {answer} was right",
    "reject": "the decision {answer} was wrong",
}


def short_time(call: dict[str, Any]) -> str:
    """Month-day hour:minute of a call (the table must fit 80 columns; the detail has it all)."""
    ts = call.get("ts")
    if isinstance(ts, (int, float)):
        return time.strftime("%m-%d %H:%M", time.localtime(ts))
    return str(call.get("time") or "")


def call_name(call: dict[str, Any]) -> str:
    """How a call is named to people: its id and its row in the log (ids may repeat)."""
    item = f", item {call['item_id']}" if call.get("item_id") else ""
    return f"{call.get('id')} (#{call.get('seq')}{item})"


def detail_markup(call: dict[str, Any]) -> str:
    """Every member's reply of one call, as markup."""
    labels = ", ".join(call.get("labels") or [])
    conf = call.get("confidence")
    lines = [f"[b]call {escape(str(call.get('id')))}[/b] #{call.get('seq')}  "
             f"{escape(call.get('time') or '')}",
             # A long question is cut: the decision and the replies must stay in view.
             f"[b]{escape(first_lines(call.get('question'), 4, 400) or '(question not stored)')}[/b]",
             f"labels: {escape(labels)}   decision: [b]{escape(str(call.get('answer') or 'none'))}[/b] "
             f"({escape(str(call.get('status')))}"
             + (f", confidence {conf:.0%}" if isinstance(conf, (int, float)) else "") + ")", ""]
    for reply in call.get("replies", []):
        head = f"[b]{escape(reply['model'])}[/b]"
        if reply.get("role") == "challenger":
            head += " [i](challenger, not part of the decision)[/i]"
        if reply.get("substitute_for"):
            head += f" (for {escape(reply['substitute_for'])})"
        lat = f"{reply['latency_s']:.2f}s" if reply.get("latency_s") is not None else "-"
        answer = reply.get("answer")
        said = f"answer [b]{escape(str(answer))}[/b]" if answer is not None else "no answer"
        lines.append(f"{head}  {escape(str(reply.get('status')))}  {said}  {lat}")
        if reply.get("error"):
            lines.append(f"  [red]{escape(reply['error'])}[/red]")
        if reply.get("thinking"):
            lines.append(f"  [dim]reasoning: {escape(first_lines(reply['thinking'], 4, 400))}[/dim]")
        if reply.get("raw"):
            lines.append(f"  {escape(first_lines(reply['raw'], 6, 600))}")
        lines.append("")
    for fb in call.get("feedback", []):
        if isinstance(fb, dict):
            state = fb.get("state") or "current"
            note = "" if state == "current" else f" [dim]({state}, no longer counts)[/dim]"
            lines.append(escape(f"feedback: {fb.get('kind')} {fb.get('label') or ''} "
                                f"{fb.get('prefer') or ''}".rstrip()) + note)
    return "\n".join(lines)


class CallDetail(ModalScreen[None]):
    """One call, every member's reply (Esc closes)."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Close")]

    def __init__(self, call: dict[str, Any]) -> None:
        super().__init__()
        self.call = call

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide", id="call-detail"):
            yield Static(detail_markup(self.call))


class FilterInput(Input):
    """The History filter: Esc clears it and Down keeps it; both go back to the calls."""

    BINDINGS = [Binding("escape", "leave(True)", "Back to the calls", show=False),
                Binding("down", "leave(False)", "Back to the calls", show=False)]

    def action_leave(self, clear: bool) -> None:
        """Leave the filter for the table (Esc also clears it)."""
        if clear:
            self.value = ""
        self.screen.query_one("#history-table").focus()


class HistoryScreen(FscaleScreen):
    """Past calls, filterable; Enter opens one; feedback keys update the ratings."""

    NAME = "history"
    BINDINGS = [
        Binding("enter", "open", "Open", show=False),  # the note line above says it
        Binding("c", "feedback('confirm')", "Confirm"),
        Binding("x", "feedback('reject')", "Reject"),
        Binding("o", "override", "Override"),
        Binding("p", "prefer", "Prefer"),
        Binding("slash", "filter", "Filter", show=False),  # the filter's placeholder says it
    ]

    def __init__(self) -> None:
        super().__init__()
        #: row key (``#<seq>``) -> the call's summary, as last read from the log
        self.calls: dict[str, dict[str, Any]] = {}

    def body(self) -> ComposeResult:
        yield FilterInput(placeholder="filter: question, answer, status or id · / focuses · "
                                      "Esc clears · ↓ back",
                          compact=True, id="history-filter")
        yield Static("", id="history-note")
        yield FillTable(id="history-table", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#history-table", DataTable)
        for key in ("time", "call", "answer", "status", "feedback", "question"):
            table.add_column(key, key=key)
        self.query_one("#history-note", Static).update(
            "Enter opens a call · c confirm · x reject · o override · p prefer · / filter")
        self.refill()
        table.focus()
        super().on_mount()

    def on_screen_resume(self) -> None:
        self.refill()

    def refill(self) -> None:
        """Reload the calls that pass the filter (in a thread: SQLite never runs on the UI)."""
        self.load_calls(self.query_one("#history-filter", Input).value.strip())

    @work(thread=True, exclusive=True, group="history-load", exit_on_error=False)
    def load_calls(self, needle: str) -> None:
        """Newest first, filtered by the engine (in SQL)."""
        try:
            calls = self.app.engine.calls.history(LIMIT, text=needle or None)
        except Exception as exc:  # an unreadable log is reported, not fatal
            self.app.call_from_thread(self.query_one("#history-note", Static).update,
                                      f"cannot read the call log: {escape(str(exc))}")
            return
        self.app.call_from_thread(self.show_calls, calls)

    def show_calls(self, calls: list[dict[str, Any]]) -> None:
        """Rebuild the table (keyed by the log's unique row number)."""
        table = self.query_one("#history-table", DataTable)
        keep = self._selected_id()
        self.calls = {}
        with self.app.batch_update():
            table.clear()
            for c in calls:
                key = f"#{c['seq']}"
                if key in self.calls:  # the log's row numbers are unique; never trust it blindly
                    continue
                self.calls[key] = c
                feedback = ", ".join(f if isinstance(f, str) else str(f.get("kind", ""))
                                     for f in c.get("feedback") or [])
                # Text, never str: a DataTable reads str cells as markup, and a logged
                # question may hold "[/]" (it would raise MarkupError and stop the app).
                table.add_row(Text(short_time(c)), Text(str(c.get("id") or "")),
                              Text(str(c.get("answer") or "—"), style="bold"),
                              Text(str(c.get("status") or "")), Text(feedback),
                              Text(first_lines(str(c.get("question") or ""), 1, 200)), key=key)
        keys = list(self.calls)
        if keep in keys:
            table.move_cursor(row=keys.index(keep))

    @on(Input.Changed, "#history-filter")
    def filtered(self) -> None:
        """The filter changed."""
        self.refill()

    @on(Input.Submitted, "#history-filter")
    def filter_done(self) -> None:
        """Enter in the filter goes back to the table."""
        self.query_one("#history-table", DataTable).focus()

    def action_filter(self) -> None:
        """Focus the filter."""
        self.query_one("#history-filter", Input).focus()

    def _selected_id(self) -> str | None:
        table = self.query_one("#history-table", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def action_open(self) -> None:
        """Show every member's reply of the selected call."""
        ref = self._selected_id()
        if ref is not None:
            self.open_call(ref)

    @work(thread=True, exclusive=True, group="history-open", exit_on_error=False)
    def open_call(self, ref: str) -> None:
        """Read one call (in a thread) and show it."""
        try:
            call = self.app.engine.calls.call(ref)
        except FscaleError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.app.call_from_thread(self.app.push_screen, CallDetail(call))

    @on(DataTable.RowSelected, "#history-table")
    def selected(self) -> None:
        """Enter or click on a row opens it."""
        self.action_open()

    # -- feedback --------------------------------------------------------------------------
    def _selected_call(self) -> tuple[str, str] | None:
        """(row key, name for people) of the highlighted call."""
        ref = self._selected_id()
        if ref is None:
            return None
        return ref, call_name(self.calls.get(ref) or {"id": ref, "seq": ref.lstrip("#")})

    def action_feedback(self, kind: str) -> None:
        """Confirm or reject the selected call's decision (asks first, naming call and verdict)."""
        from .modals import Confirm

        selected = self._selected_call()
        if selected is None:
            return
        ref, name = selected
        call = self.calls.get(ref) or {}
        answer = str(call.get("answer") or "none")
        verdict = VERDICTS[kind].format(answer=answer)
        question = first_lines(str(call.get("question") or "(question not stored)"), 1, 120)

        def answered(yes: bool | None) -> None:
            if yes:
                self.send_feedback(ref, kind, None, None, None)
            else:
                self.notify(f"nothing recorded for call {name}", title="feedback")

        self.app.push_screen(Confirm(f"Record {kind} for call {name}?",
                                     f"{verdict}\n{question}\nThe ratings of every member move."),
                             answered)

    @work(thread=True, group="history-feedback", exit_on_error=False)
    def send_feedback(self, ref: str, kind: str, label: str | None, prefer: str | None,
                      over: str | None) -> None:
        """Record the verdict through the engine (in a thread) and say what it changed."""
        try:
            outcome = self.app.engine.calls.feedback(ref, kind, label=label, prefer=prefer,
                                                     over=over)
        except FscaleError as exc:
            self.app.call_from_thread(self.notify, str(exc), title="feedback not recorded",
                                      severity="error")
            return
        changes = outcome.get("changes") or {}
        moved = ", ".join(f"{m} {d:+.1f}" for m, d in sorted(changes.items())
                          if isinstance(d, (int, float)))
        name = call_name(self.calls.get(ref) or {"id": outcome.get("id"), "seq": ref.lstrip("#")})
        self.app.call_from_thread(
            self.notify, f"{kind} recorded for call {name}"
            + (f"; Elo rating changes: {moved}" if moved else ""), title="feedback")
        self.app.call_from_thread(self.refill)

    def action_override(self) -> None:
        """Say which label was right."""
        from .modals import Prompt

        selected = self._selected_call()
        if selected is None:
            return
        ref, name = selected
        labels = ", ".join((self.calls.get(ref) or {}).get("labels") or [])

        def done(label: str | None) -> None:
            if label and label.strip():
                self.send_feedback(ref, "override", label.strip(), None, None)

        self.app.push_screen(Prompt(f"The right label for call {name}", placeholder="e.g. NO",
                                    help_text=f"labels: {labels}. Enter records it, Esc cancels."
                                    if labels else "Enter records it, Esc cancels."), done)

    def action_prefer(self) -> None:
        """Say which model answered better ("A" or "A over B")."""
        from .modals import Prompt

        selected = self._selected_call()
        if selected is None:
            return
        ref, name = selected
        members = ", ".join((self.calls.get(ref) or {}).get("members") or [])

        def done(text: str | None) -> None:
            if not text or not text.strip():
                return
            prefer, _, over = text.partition(" over ")
            self.send_feedback(ref, "prefer", None, prefer.strip(), over.strip() or None)

        self.app.push_screen(Prompt(f"Prefer which model's answer in call {name}?",
                                    placeholder="A   or   A over B",
                                    help_text=f"members: {members}. Enter records it, Esc cancels."
                                    if members else "Enter records it, Esc cancels."), done)
