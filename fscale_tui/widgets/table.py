"""A DataTable whose last column takes the width that is left, so nothing scrolls sideways."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable


class FillTable(DataTable):
    """The last column (reasoning, errors, details) is cropped to the space left on screen."""

    #: small enough that the table still fits an 80-column terminal
    MIN_LAST = 8
    #: (full, short) header of the last column: the short one when the full one would be cut
    LAST_LABELS: tuple[str, str] | None = None

    def on_resize(self, event: Any) -> None:
        self.fit_last_column()

    def fit_last_column(self) -> None:
        """Give the last column whatever width the other columns leave."""
        if not self.columns:
            return
        keys = list(self.columns)
        last = self.columns[keys[-1]]
        others = sum(self.columns[k].get_render_width(self) for k in keys[:-1])
        room = self.size.width - others - 2 * self.cell_padding - 2  # a vertical scrollbar
        width = max(self.MIN_LAST, room)
        if last.auto_width or last.width != width:
            last.auto_width = False
            last.width = width
            self._require_update_dimensions = True
        if self.LAST_LABELS is not None:
            full, short = self.LAST_LABELS
            label = full if len(full) <= width else short
            if last.label.plain != label:
                last.label = Text(label)
        # Rendered rows are cached with the old widths: drop them.
        self._clear_caches()
        self.refresh()

    def _update_column_widths(self, updated_cells: Any) -> None:
        super()._update_column_widths(updated_cells)
        self.fit_last_column()

    def _update_dimensions(self, new_rows: Any) -> None:
        super()._update_dimensions(new_rows)
        self.fit_last_column()
