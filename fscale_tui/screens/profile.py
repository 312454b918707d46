"""Profile: the frontier — accuracy against price of every single model, the top-k
majorities, the router along its budget, the ``-k auto`` plans (the default starred) and the
calibrated cascade, on the stored profile.

The engine computes the points (``engine.routing.frontier()``, blocking: read in a thread);
this screen draws them as a terminal plot (plotext, log price axis) beside a table.
"""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from .base import FscaleScreen

#: This screen in the app: its mode, class, F-key, footer label and title (the app, the help
#: screen, the palette and ``fscale tui --screen`` read it without importing this module).
SCREEN = {"mode": "profile", "class": "ProfileScreen", "key": "f8", "label": "Profile",
          "title": "Profile: the cost/accuracy frontier (F8)",
          "footer": False}  # F1 and ctrl+p list it (the footer has no room)

KINDS = {"single": ("single model", "dot", "white"), "majority": ("top-k majority", "sd", "magenta"),
         "router": ("router", "fhd", "cyan"), "auto": ("-k auto", "hd", "red"),
         "calibrated": ("calibrated", "x", "green")}


def cost_text(cost: float, unit: str) -> str:
    return f"${cost:.3g}" if unit == "usd" else f"{cost:.2f} calls"


class ProfileScreen(FscaleScreen):
    """The cost/accuracy frontier of the stored profile."""

    NAME = "profile"
    BINDINGS = [Binding("ctrl+r", "reload", "Reload")]
    DEFAULT_CSS = """
    #profile-note { height: auto; padding: 0 1; }
    #profile-main { height: 1fr; }
    #profile-plot { width: 3fr; }
    #profile-table { width: 2fr; min-width: 34; }
    """

    def body(self) -> ComposeResult:
        yield Static("", id="profile-note")
        with Horizontal(id="profile-main"):
            yield PlotextPlot(id="profile-plot")
            yield DataTable(id="profile-table", cursor_type="row", zebra_stripes=False)

    def on_mount(self) -> None:
        table = self.query_one("#profile-table", DataTable)
        for key, label in (("mark", ""), ("what", "what"), ("cost", "× best"), ("acc", "accuracy")):
            table.add_column(label, key=key)
        self.action_reload()
        super().on_mount()

    def on_screen_resume(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        """Read the frontier again (in a thread)."""
        self.load()

    @work(thread=True, exclusive=True, group="profile-load", exit_on_error=False)
    def load(self) -> None:
        """The frontier from the engine (reads the profile and the stored plans)."""
        try:
            data = self.app.engine.routing.frontier()
        except Exception as exc:  # an unreadable profile is reported, not fatal
            self.app.call_from_thread(self.query_one("#profile-note", Static).update,
                                      f"cannot read the profile: {exc}")
            return
        self.app.call_from_thread(self.show, data)

    def show(self, data: dict[str, Any] | None) -> None:
        """Draw the plot and fill the table."""
        note = self.query_one("#profile-note", Static)
        plot = self.query_one("#profile-plot", PlotextPlot)
        table = self.query_one("#profile-table", DataTable)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        if data is None:
            note.update("Nothing profiled yet: 'fscale profile --fit-clusters TRAIN.jsonl', then "
                        "'fscale profile VAL.jsonl --models a,b,c' draws the frontier here.")
            table.clear()
            plot.refresh()
            return
        unit = data["unit"]
        base = float(data["best_single"]["cost"]) or 1.0
        log = all(p["cost"] > 0 for p in data["points"])
        for kind, (label, marker, colour) in KINDS.items():
            pts = sorted((p for p in data["points"] if p["kind"] == kind), key=lambda p: p["cost"])
            if not pts:
                continue
            xs = [math.log10(p["cost"] / base) if log else p["cost"] / base for p in pts]
            ys = [100 * p["accuracy"] for p in pts]
            if kind in ("router", "auto"):
                plt.plot(xs, ys, marker=marker, color=colour, label=label)
            else:
                plt.scatter(xs, ys, marker=marker, color=colour, label=label)
        default = next((p for p in data["points"] if p.get("default")), None)
        if default is not None:
            x = math.log10(default["cost"] / base) if log else default["cost"] / base
            plt.scatter([x], [100 * default["accuracy"]], marker="★", color="yellow",
                        label="default")
        plt.xlabel("log10 price / best single" if log else "price / best single")
        plt.ylabel("accuracy %")
        plt.title("accuracy vs price")
        plot.refresh()
        best = data["best_single"]
        note.update(f"On {data['items']} profiled items: ★ default -k auto = {data['default']}; "
                    f"= best single {best['model']} ({best['accuracy']:.1%} at "
                    f"{cost_text(best['cost'], unit)} per item). Router and -k auto cross-fitted."
                    + "".join(f" {n}" for n in data.get("notes", [])))
        rows = sorted((p for p in data["points"] if p["kind"] != "single" or p.get("best_single")),
                      key=lambda p: (p["cost"], -p["accuracy"]))
        with self.app.batch_update():
            table.clear()
            for i, p in enumerate(rows):
                mark = "★" if p.get("default") else ("=" if p.get("best_single") else "")
                table.add_row(Text(mark, style="bold yellow"),
                              Text(f"{KINDS[p['kind']][0]}: {p['label']}",
                                   style="bold" if p.get("default") else ""),
                              f"{p['cost'] / base:.2f}x", f"{p['accuracy']:.1%}", key=str(i))
