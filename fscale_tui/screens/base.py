"""What every fscale screen shares: header, footer, palette entries for its bindings."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header


class FscaleScreen(Screen):
    """A full screen with the app header and the key-binding footer around ``body()``."""

    #: the mode name (``fscale_tui.app.SCREENS``)
    NAME = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield from self.body()
        yield Footer(compact=True)

    def body(self) -> ComposeResult:  # pragma: no cover - every screen overrides it
        yield from ()

    def on_mount(self) -> None:
        # After the first refresh: the screen has been laid out and painted.
        self.call_after_refresh(self.app.screen_ready, self.NAME)

    def palette_commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        """One command-palette entry per binding of this screen."""
        out = []
        for binding in self.BINDINGS:
            if not isinstance(binding, Binding) or not binding.description:
                continue
            action = binding.action
            out.append((f"{self.NAME.title()}: {binding.description}",
                        f"key {binding.key_display or binding.key}",
                        lambda a=action: self.run_action(a)))
        return out
