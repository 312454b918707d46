"""Panels: the named panels, their members, editing (config.toml) and evolve.

Edits go through the engine's catalogue (read-modify-write of config.toml under the lock,
atomic write); the engine is then rebuilt so the next run uses the new panel. Evolve always
acts on the default panel (the one ``scale`` uses) and says so; its proposal is computed by
the engine in a thread (it reads the call log). Each member shows its label-free accuracy
estimate ± sd (what evolve ranks by) beside its Elo rating, read from the call log in a thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static

from ..engine.base.errors import FscaleError
from ..messages import SettingsChanged
from ..widgets.evidence import accuracy_text, elo_text
from .base import FscaleScreen

if TYPE_CHECKING:
    from ..engine.base.settings import Settings

#: This screen in the app: its mode, class, F-key, footer label and title (the app, the help
#: screen, the palette and ``fscale tui --screen`` read it without importing this module).
SCREEN = {"mode": "panels", "class": "PanelsScreen", "key": "f6", "label": "Panels",
          "title": "Panels: list, edit, evolve"}


class PanelsScreen(FscaleScreen):
    """List and edit panels; propose a new champion panel from ratings (evolve)."""

    NAME = "panels"
    BINDINGS = [
        Binding("e,enter", "edit", "Edit"),
        Binding("n", "new", "New"),
        Binding("d", "delete", "Delete"),
        Binding("v", "evolve", "Evolve"),
        Binding("x", "apply", "Apply"),
    ]

    def __init__(self) -> None:
        super().__init__()
        #: model -> (estimate, rating) from the call log, once read (``load_evidence``)
        self.evidence: dict[str, tuple[Any, Any]] | None = None

    def body(self) -> ComposeResult:
        with Horizontal(id="panels-main"):
            yield DataTable(id="panels-table", cursor_type="row")
            yield Static("", id="panel-members")
        with Vertical(id="evolve"):
            yield Static("", id="evolve-diff")

    def on_mount(self) -> None:
        table = self.query_one("#panels-table", DataTable)
        table.add_column("panel", key="panel")
        table.add_column("members", key="members")
        table.add_column("from", key="from")
        self.reload()
        table.focus()
        super().on_mount()

    def on_screen_resume(self) -> None:
        self.load_evidence()

    @work(thread=True, exclusive=True, group="panels-evidence", exit_on_error=False)
    def load_evidence(self) -> None:
        """Each model's accuracy estimate and Elo rating, from the call log (in a thread)."""
        try:
            estimates = self.app.engine.calls.reliability()
            ratings = self.app.engine.calls.ratings()
        except Exception:  # an unreadable log: the members are listed without evidence
            return
        evidence = {m: (estimates.get(m), ratings.get(m)) for m in {*estimates, *ratings}}
        self.app.call_from_thread(self._evidence_loaded, evidence)

    def _evidence_loaded(self, evidence: dict[str, tuple[Any, Any]]) -> None:
        self.evidence = evidence
        self._show_members(self.selected())

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @property
    def catalog(self) -> Any:
        return self.app.engine.catalog

    @on(SettingsChanged)
    def reload(self) -> None:
        """(Re)list the panels."""
        table = self.query_one("#panels-table", DataTable)
        keep = self.selected()
        table.clear()
        try:
            settings = self.settings
        except FscaleError as exc:
            self.query_one("#panel-members", Static).update(f"configuration error: {exc}")
            return
        default = settings.get("panel")
        # With no [panels] default the default panel is a built-in one (by the keys set): star it.
        effective = self.catalog.default_resolves_to() or default
        if getattr(self, "proposal", None) is None:
            alias = f" (now {effective!r})" if effective != default else ""
            self.query_one("#evolve-diff", Static).update(
                f"v: evolve proposal for the default panel {escape(repr(default))}"
                f"{escape(alias)} (dry run); x applies it")
        names = sorted(settings.panels, key=lambda n: (n != effective, n))
        for name in names:
            label = f"{name} ★" if name == effective else name
            table.add_row(label, str(len(settings.panels[name])), self.catalog.panel_source(name),
                          key=name)
        if keep in names:
            table.move_cursor(row=names.index(keep))
        self._show_members(self.selected())
        self.load_evidence()

    def selected(self) -> str | None:
        table = self.query_one("#panels-table", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    @on(DataTable.RowHighlighted, "#panels-table")
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Show the members of the highlighted panel."""
        self._show_members(event.row_key.value)

    def _show_members(self, name: str | None) -> None:
        pane = self.query_one("#panel-members", Static)
        if name is None:
            pane.update("")
            return
        settings = self.settings
        rows = {r["alias"]: r for r in self.catalog.models()}
        lines = [f"[b]{escape(name)}[/b] ({self.catalog.panel_source(name)})", ""]
        members = settings.panels.get(name, [])
        # Columns as wide as their longest value, so a member's line fits a narrow pane.
        width = max((len(a) for a in members), default=0)
        tiers = max((len(settings.models[a].tier) for a in members if a in settings.models),
                    default=0)
        families = max((len(settings.models[a].family or "-") for a in members
                        if a in settings.models), default=0)
        # A narrow pane (80 columns) drops tier and family rather than wrap every line.
        room = pane.content_size.width or self.app.size.width // 2
        full = 2 + width + 1 + tiers + 1 + families + 1 + 22 + 1 + len("usable")
        for alias in members:
            model = settings.models.get(alias)
            row = rows.get(alias)
            if model is None or row is None:
                lines.append(f"  [red]✗ {escape(alias)}[/red]  unknown model")
                continue
            state = "usable" if row["usable"] else f"no: {row['why_not']}"
            if row["health"] in ("dead", "unavailable", "rate_limited"):
                state = f"[dim]{row['health']}[/dim]"
            kind = (f"{model.tier:<{tiers}} {escape((model.family or '-').ljust(families))} "
                    if full <= room else "")
            lines.append(f"  {escape(alias.ljust(width))} {kind}"
                         f"{self._evidence_text(alias)} {state}")
        if members:
            lines += ["", "[dim]accuracy ± sd: the label-free estimate evolve ranks by; "
                          "Elo for reference[/dim]"]
        pane.update("\n".join(lines))

    def _evidence_text(self, alias: str) -> str:
        """``"78.1% ±4.2% Elo 1532"`` for a member (``…`` while the call log is read)."""
        if self.evidence is None:
            return f"{'…':>13} {'':<8}"
        estimate, rating = self.evidence.get(alias, (None, None))
        return f"{accuracy_text(estimate):>13} {elo_text(rating):<8}"

    # -- editing ---------------------------------------------------------------------------
    def action_edit(self) -> None:
        """Edit the selected panel's members."""
        name = self.selected()
        if name is not None:
            self._edit(name, ",".join(self.settings.panels.get(name, [])))

    def action_new(self) -> None:
        """Create a panel."""
        from .modals import Prompt

        def named(name: str | None) -> None:
            if name and name.strip():
                self._edit(name.strip(), "")

        self.app.push_screen(Prompt("New panel name", placeholder="e.g. fast3"), named)

    def _edit(self, name: str, current: str) -> None:
        from .modals import Prompt

        known = ", ".join(sorted(self.settings.models)[:12])

        def done(value: str | None) -> None:
            if value is None:
                return
            members = [a.strip() for a in value.split(",") if a.strip()]
            unknown = [a for a in members if a not in self.settings.models]
            if not members:
                self.notify("a panel needs at least one model", severity="error")
                return
            if unknown:
                self.notify(f"unknown model(s): {', '.join(unknown)}", severity="error")
                return
            self._write(lambda: self.catalog.set_panel(name, members), f"panel {name} saved")

        self.app.push_screen(Prompt(f"Members of panel {name!r} (comma-separated aliases)",
                                    current, "fast-a,fast-b,slow-c",
                                    f"models: {known}…"), done)

    def action_delete(self) -> None:
        """Delete the selected panel (user panels only)."""
        from .modals import Confirm

        name = self.selected()
        if name is None:
            return
        if self.catalog.panel_source(name) != "config":
            self.notify(f"panel {name} is built in: it can be overridden (e) but not removed",
                        severity="warning")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self._write(lambda: self.catalog.remove_panel(name), f"panel {name} removed")

        self.app.push_screen(Confirm(f"Remove panel {name!r} from config.toml?"), answer)

    @work(thread=True, group="panels-write", exit_on_error=False)
    def _write(self, change: Any, done: str) -> None:
        """Write config.toml in a thread (never on the UI loop), then reload the engine."""
        try:
            change()
        except (OSError, FscaleError) as exc:
            self.app.call_from_thread(self.notify, str(exc), title="could not write config.toml",
                                      severity="error")
            return
        self.app.call_from_thread(self._written, done)

    def _written(self, done: str) -> None:
        self.app.reload_engine()
        self.notify(done)

    # -- evolve ----------------------------------------------------------------------------
    def action_evolve(self) -> None:
        """Show the evolve proposal for the default panel beside it (dry run)."""
        name = self.settings.get("panel")
        self.query_one("#evolve-diff", Static).update(
            f"evolve {escape(name)} (the default panel): reading the ratings…")
        self.propose(name)

    @work(thread=True, exclusive=True, group="evolve", exit_on_error=False)
    def propose(self, name: str) -> None:
        """The engine's proposal (a dry run: nothing is written)."""
        try:
            proposal = self.app.engine.propose_evolve(name)
        except Exception as exc:  # unreadable store, unknown panel: say so
            self.app.call_from_thread(self.notify, str(exc), title=f"evolve {name!r} failed",
                                      severity="error")
            return
        self.app.call_from_thread(self._show_proposal, proposal)

    def _show_proposal(self, proposal: Any) -> None:
        self.proposal = proposal
        self.query_one("#evolve-diff", Static).update(self._diff_markup(proposal))

    def _diff_markup(self, p: Any) -> str:
        """The proposal as ``fscale evolve`` prints it: - leaves, + joins, = stays, each with
        its accuracy estimate ± sd (what it is ranked by), Elo rating and calls."""
        rows = ([("-", m, "red") for m in p.removed] + [("+", m, "green") for m in p.added]
                + [("=", m, "") for m in p.proposed if m in p.current])
        width = max((len(m) for _, m, _ in rows), default=0)
        lines = [f"[b]evolve {escape(p.name)}[/b] (the default panel; dry run; models need "
                 f"≥ {p.min_calls} calls)",
                 f"current  {escape(', '.join(p.current))}",
                 f"proposed {escape(', '.join(p.proposed))}"]
        for mark, model, style in rows:
            rating = p.ratings.get(model)
            text = (f"{mark} {escape(model.ljust(width))} "
                    f"{accuracy_text(p.estimates.get(model)):>13} {elo_text(rating):<8} "
                    f"{rating.calls if rating is not None else 0} calls")
            lines.append(f"[{style}]{text}[/{style}]" if style else text)
        lines.append("x applies this proposal" if p.changed
                     else "no change proposed: the current panel stays")
        return "\n".join(lines)

    def action_apply(self) -> None:
        """Apply the evolve proposal (asks first)."""
        from .modals import Confirm

        proposal = getattr(self, "proposal", None)
        if proposal is None:
            self.notify(f"press v first: it shows the evolve proposal for the default panel "
                        f"{self.settings.get('panel')!r}")
            return
        if not proposal.changed:
            self.notify(f"nothing to apply: the proposal keeps panel {proposal.name!r} as it is")
            return

        def apply() -> None:
            self.app.engine.apply_evolve(proposal)
            self.proposal = None

        def answer(yes: bool | None) -> None:
            if yes:
                self._write(apply, f"panel {proposal.name!r} is now "
                                   f"{', '.join(proposal.proposed)}")
            else:
                self.notify(f"panel {proposal.name!r} unchanged")

        self.app.push_screen(Confirm(f"Write the evolved panel {proposal.name!r} (the default "
                                     "panel) to config.toml?",
                                     f"{', '.join(proposal.current)}  →  "
                                     f"{', '.join(proposal.proposed)}"), answer)
