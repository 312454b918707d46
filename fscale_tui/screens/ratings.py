"""Ratings: every rated model's accuracy estimate ± sd, Elo, calls, agreement, feedback, trend.

Read through the engine's call log (``engine.calls``): the label-free accuracy estimate is what
decisions follow (evolve, the shadow challengers, ``--tie-break rating``), so it comes first and
is the default order, as in ``fscale ratings``; the Elo rating is shown beside it for reference.
Panel members and challengers (rated models outside the panel, whose evidence comes from shadow
calls) are marked. Click a column header, or press s, to sort.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from ..engine.base.errors import FscaleError
from ..messages import SettingsChanged
from ..widgets.evidence import accuracy_text
from ..widgets.table import FillTable
from .base import FscaleScreen

#: This screen in the app: its mode, class, F-key, footer label and title (the app, the help
#: screen, the palette and ``fscale tui --screen`` read it without importing this module).
SCREEN = {"mode": "ratings", "class": "RatingsScreen", "key": "f5", "label": "Ratings",
          "title": "Ratings: model ratings and challengers"}

SPARK = "▁▂▃▄▅▆▇█"
#: As ``fscale ratings``: the Elo σ is left out so that the table fits 80 columns.
COLUMNS = (("seat", "seat"), ("model", "model"), ("accuracy", "accuracy ± sd"),
           ("rating", "Elo"), ("calls", "calls"), ("agreement", "agreement"),
           ("feedback", "feedback"), ("trend", "trend"))
SORTS = ("accuracy", "rating", "calls", "agreement", "feedback", "model")


def sparkline(values: list[float], width: int = 16) -> str:
    """A text sparkline of the last ``width`` values (rendering only)."""
    values = values[-width:]
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        return SPARK[3] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / (hi - lo) * (len(SPARK) - 1) + 0.5))]
                   for v in values)


class RatingsScreen(FscaleScreen):
    """Model ratings from consensus and feedback."""

    NAME = "ratings"
    BINDINGS = [
        Binding("s", "cycle_sort", "Sort"),
        Binding("ctrl+r", "reload", "Reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_by = "accuracy"

    def body(self) -> ComposeResult:
        yield Static("", id="ratings-note")
        yield FillTable(id="ratings-table", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#ratings-table", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.action_reload()
        table.focus()
        super().on_mount()

    def on_screen_resume(self) -> None:
        self.action_reload()

    @on(SettingsChanged)
    def action_reload(self) -> None:
        """Re-read the ratings (in a thread)."""
        self.load()

    @work(thread=True, exclusive=True, group="ratings-load", exit_on_error=False)
    def load(self) -> None:
        """Ratings, their history and the default panel from the engine."""
        engine = self.app.engine
        try:
            ratings = list(engine.calls.ratings().values())
            estimates = engine.calls.reliability()
            history = engine.calls.rating_history()
        except Exception as exc:  # an unreadable store is reported, not fatal
            self.app.call_from_thread(self.query_one("#ratings-note", Static).update,
                                      f"cannot read ratings: {exc}")
            return
        try:
            panel = [m.alias for m in engine.catalog.panel(engine.catalog.default_panel_name())]
        except FscaleError:
            panel = []
        self.app.call_from_thread(self.show, ratings, history, set(panel),
                                  engine.catalog.default_panel_name(), estimates)

    def show(self, ratings: list[Any], history: dict[str, Any], panel: set[str],
             panel_name: str, estimates: dict[str, Any] | None = None) -> None:
        """Fill the table, sorted."""
        estimates = estimates or {}

        def accuracy(model: str) -> float:
            e = estimates.get(model)
            return e.accuracy if e is not None else -1.0

        keyed = {
            "accuracy": lambda r: (-accuracy(r.model), -r.rating),
            "rating": lambda r: -r.rating,
            "calls": lambda r: -r.calls,
            "agreement": lambda r: -(r.agreement if r.agreement is not None else -1),
            "feedback": lambda r: -r.feedback,
            "model": lambda r: r.model,
        }[self.sort_by]
        ratings.sort(key=lambda r: (keyed(r), r.model))
        table = self.query_one("#ratings-table", DataTable)
        with self.app.batch_update():
            table.clear()
            for r in ratings:
                seat = (Text("★ panel", style="bold") if r.model in panel
                        else Text("◇ challenger", style="italic"))
                agreement = f"{r.agreement:.0%}" if r.agreement is not None else "-"
                trend = sparkline([v for _t, v in history.get(r.model, [])])
                table.add_row(seat, Text(r.model, style="bold" if r.model in panel else ""),
                              accuracy_text(estimates.get(r.model)),
                              f"{r.rating:6.1f}", str(r.calls), agreement,
                              str(r.feedback), Text(trend, style="cyan"), key=r.model)
        note = (f"{len(ratings)} rated · sorted by {self.sort_by} (s) · accuracy: label-free "
                f"estimate, what decisions follow; Elo for reference · ★ panel {panel_name!r} · "
                "◇ challenger (outside the panel)")
        if not ratings:
            note = "No ratings yet: every scale call is logged and rated; ask something first (F2)."
        self.query_one("#ratings-note", Static).update(note)

    def action_cycle_sort(self) -> None:
        """Sort by the next column (accuracy, rating, calls, agreement, feedback, model)."""
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]
        self.action_reload()

    @on(DataTable.HeaderSelected)
    def header_clicked(self, event: DataTable.HeaderSelected) -> None:
        """Sort by the clicked column."""
        key = event.column_key.value
        if key in SORTS:
            self.sort_by = key
            self.action_reload()
