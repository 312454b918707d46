"""``-k auto`` on the Ask screen: one line per cascade stage, filled in as the engine runs it.

A rendering of ``StageStarted`` / ``StageFinished`` and, at the end, of the result's
``stages`` (which also lists the stages the engine skipped without asking them). The engine
decides whether a stage answers (its confidence reached its calibrated threshold) or
escalates; this widget only says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from ..engine.base.events import Event, StageFinished, StageStarted

#: state -> (label, style); the label carries the meaning, the colour only helps
STAGE_LOOK = {
    "asking": ("… asking", "cyan"),
    "answered": ("✓ answered", "green"),
    "escalated": ("↑ escalated", "yellow"),
    "abstained": ("∅ abstained", "yellow"),
    "skipped": ("⤼ skipped", "dim"),
    "not_reached": ("· not reached", "dim"),
}


@dataclass
class StageRow:
    """What the widget knows about one stage."""

    index: int
    spec: str
    models: list[str] = field(default_factory=list)
    threshold: float | None = None
    state: str = "asking"
    answer: str | None = None
    confidence: float | None = None
    why: str = ""


def _threshold(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


class StagesView(Static):
    """The cascade of a ``-k auto`` call, one row per stage (hidden for other calls)."""

    DEFAULT_CSS = """
    StagesView { height: auto; max-height: 6; display: none; }
    StagesView.-auto { display: block; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.rows: dict[int, StageRow] = {}
        self.headline = ""

    def reset(self, auto: bool) -> None:
        self.rows.clear()
        self.headline = "-k auto: routing the question…" if auto else ""
        self.set_class(auto, "-auto")
        self._render_rows()

    def apply(self, event: Event) -> bool:
        """Render a stage event; False for any other event."""
        if isinstance(event, StageStarted):
            self.rows[event.index] = StageRow(event.index, event.stage, list(event.models),
                                              event.threshold)
            self.headline = f"-k auto: stage {event.index + 1} is asking"
        elif isinstance(event, StageFinished):
            row = self.rows.setdefault(event.index, StageRow(event.index, event.stage))
            row.answer, row.confidence = event.answer, event.confidence
            row.threshold = event.threshold
            row.state = "answered" if event.accepted else "escalated"
        else:
            return False
        self.set_class(True, "-auto")
        self._render_rows()
        return True

    def show_result(self, result: Any) -> None:
        """The final word: every stage of the plan, skipped ones included."""
        if not getattr(result, "auto", False):
            self.reset(False)
            return
        self.rows.clear()
        answered = False
        for i, stage in enumerate(result.stages):
            row = StageRow(i, stage.spec, list(stage.models), stage.threshold,
                           answer=stage.answer, confidence=stage.confidence)
            if stage.skipped:
                row.state, row.why, row.confidence = "skipped", stage.skipped, None
            elif stage.accepted:
                row.state, answered = "answered", True
            else:
                row.state = "escalated"
            self.rows[i] = row
        asked = [r for r in self.rows.values() if r.state != "skipped"]
        if not answered and asked and result.status in ("abstained", "all_failed"):
            asked[-1].state = "abstained"
        cal = ("calibrated thresholds" if result.calibrated
               else "uncalibrated defaults, no risk guarantee")
        route = result.route or {}
        cluster = route.get("cluster")
        where = f"cluster {cluster} · " if cluster is not None else ""
        signal = f"signal {result.signal} · " if result.signal else ""
        self.headline = f"-k auto: {len(self.rows)} stages · {where}{signal}{cal}"
        self.set_class(True, "-auto")
        self._render_rows()

    def _render_rows(self) -> None:
        if not self.rows and not self.headline:
            self.update("")
            return
        table = Table.grid(padding=(0, 1), expand=True)
        for _ in range(5):
            table.add_column(no_wrap=True)
        table.columns[2].overflow = "ellipsis"
        table.columns[2].ratio = 1
        for row in sorted(self.rows.values(), key=lambda r: r.index):
            label, style = STAGE_LOOK[row.state]
            if row.state == "skipped":
                measure = Text(f"not asked: {row.why}", style="dim")
            elif row.confidence is None:
                measure = Text(f"threshold {_threshold(row.threshold)}", style="dim")
            else:
                reached = row.threshold is not None and row.confidence >= row.threshold - 1e-12
                sign = "≥" if reached else "<"
                answer = row.answer or "no answer"
                measure = Text(f"{answer}  confidence {row.confidence:.2f} {sign} "
                               f"{_threshold(row.threshold)}")
            table.add_row(Text(f"{row.index + 1}", style="bold"), Text(row.spec, style="bold"),
                          Text(", ".join(row.models) or "-", style="dim"), measure,
                          Text(label, style=style))
        out = Table.grid()
        out.add_column()
        out.add_row(Text(self.headline, style="italic"))
        out.add_row(table)
        self.update(out)
