"""Health: every usable model with its status, latency and when it was last checked.

Verdicts come from the engine's health store (shared by every process through the state
directory); re-probing uses ``engine.health_events``. Dead and rate-limited models are dimmed.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from ..engine.base.errors import FscaleError
from ..messages import EngineEvent, SettingsChanged
from ..widgets.table import FillTable
from .base import FscaleScreen

#: This screen in the app: its mode, class, F-key, footer label and title (the app, the help
#: screen, the palette and ``fscale tui --screen`` read it without importing this module).
SCREEN = {"mode": "health", "class": "HealthScreen", "key": "f4", "label": "Health",
          "title": "Health: probe every model"}

STATUS_STYLE = {"ok": "green", "slow": "yellow", "rate_limited": "yellow", "dead": "red",
                "unavailable": "red", "error": "red", "probing…": "cyan", "never": "dim"}
DIMMED = {"dead", "unavailable", "rate_limited"}
COLUMNS = (("model", "model"), ("provider", "provider"), ("tier", "tier"), ("status", "status"),
           ("latency", "latency"), ("checked", "checked"), ("detail", "detail"))
AUTO_REFRESH_S = 60.0


def format_checked(ts: float | None) -> str:
    """Local wall-clock time of a check (absolute, so it reads the same on every redraw;
    month-day hour:minute, so that the table fits 80 columns)."""
    if not ts:
        return "never"
    return time.strftime("%m-%d %H:%M", time.localtime(ts))


class HealthScreen(FscaleScreen):
    """Probe models and watch their status."""

    NAME = "health"
    BINDINGS = [
        Binding("r", "probe_all", "Probe all"),
        Binding("p,enter", "probe_one", "Probe one"),
        Binding("a", "toggle_auto", "Auto-refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.models: list[Any] = []
        self.auto_timer: Any = None
        self.run_no = 0

    def body(self) -> ComposeResult:
        yield Static("", id="health-summary")
        yield FillTable(id="health-table", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.reload()
        table.focus()
        super().on_mount()

    @on(SettingsChanged)
    def reload(self) -> None:
        """(Re)build the table from the catalogue and the stored verdicts."""
        table = self.query_one(DataTable)
        table.clear()
        try:
            engine = self.app.engine
        except FscaleError as exc:
            self._summary(f"[b]configuration error:[/b] {exc}")
            return
        self.models = engine.catalog.probe_targets()
        entries = engine.catalog.health_entries(refresh=True)
        for model in self.models:
            table.add_row(*self._cells(model, entries.get(model.alias)), key=model.alias)
        self._summary()

    def _summary(self, extra: str = "") -> None:
        auto = "on" if self.auto_timer is not None else "off"
        text = (f"{len(self.models)} usable models · auto-refresh {auto} · "
                "r re-probes all, p the selected one")
        self.query_one("#health-summary", Static).update(extra or text)

    def _cells(self, model: Any, entry: dict[str, Any] | None, status: str | None = None) -> list[Text]:
        entry = entry or {}
        status = status or entry.get("status") or "never"
        expired = (entry.get("expires_at") is not None and status in DIMMED
                   and entry["expires_at"] <= time.time())
        dim = "dim" if status in DIMMED and not expired else ""
        latency = entry.get("latency_s") if status not in ("probing…",) else None
        label = status + (" (expired)" if expired else "")
        return [
            Text(model.alias, style=dim or "bold"),
            Text(model.provider, style=dim),
            Text(model.tier, style=dim),
            Text(label, style=f"{STATUS_STYLE.get(status, '')} {dim}".strip()),
            Text(f"{latency:.2f}s" if latency is not None else "", style=dim),
            Text(format_checked(entry.get("checked_at")) if status != "probing…" else "", style=dim),
            Text((entry.get("detail") or "")[:120] if status != "probing…" else "", style=dim),
        ]

    def _set_row(self, alias: str, status: str | None = None) -> None:
        table = self.query_one(DataTable)
        model = next((m for m in self.models if m.alias == alias), None)
        if model is None:
            return
        entry = self.app.engine.catalog.health_entries().get(alias)
        # update_width: a column grows to its longest value ("probing…" is never cut).
        for (key, _label), cell in zip(COLUMNS, self._cells(model, entry, status)):
            table.update_cell(alias, key, cell, update_width=True)

    # -- probing ---------------------------------------------------------------------------
    def action_probe_all(self) -> None:
        """Probe every listed model."""
        self._probe(self.models)

    def action_probe_one(self) -> None:
        """Probe the highlighted model."""
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return
        alias = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        self._probe([m for m in self.models if m.alias == alias])

    def _probe(self, models: list[Any]) -> None:
        if not models:
            return
        with self.app.batch_update():
            for m in models:
                self._set_row(m.alias, "probing…")
        self.run_no += 1
        self.probe(models, self.run_no)

    @work(group="health", exit_on_error=False)
    async def probe(self, models: list[Any], run: int) -> None:
        """Probe concurrently; each result is shown as it arrives."""
        async for result in self.app.engine.health_events(models):
            self.post_message(EngineEvent(result, run))

    @on(EngineEvent)
    def probed(self, message: EngineEvent) -> None:
        """One probe finished: show the stored verdict."""
        self._set_row(message.event.model)

    @on(Worker.StateChanged)
    def worker_changed(self, event: Worker.StateChanged) -> None:
        """A failing probe run is reported, not fatal."""
        if event.state == WorkerState.ERROR and event.worker.group == "health":
            self.notify(str(event.worker.error), title="probe failed", severity="error")

    def action_toggle_auto(self) -> None:
        """Re-probe every minute while this is on."""
        if self.auto_timer is None:
            self.auto_timer = self.set_interval(AUTO_REFRESH_S, self.action_probe_all)
        else:
            self.auto_timer.stop()
            self.auto_timer = None
        self._summary()
        self.notify(f"auto-refresh {'on' if self.auto_timer else 'off'}")
