"""What every fscale screen shares: header, footer, palette entries for its bindings."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.widgets._footer import FooterKey

#: the app's screen keys (F2 Ask … F7 History)
SCREEN_KEYS = ("f2", "f3", "f4", "f5", "f6", "f7")
#: below this many columns the screen keys are shown as one "f2‥f7 screens" key
WIDE_FOOTER = 112


class FscaleFooter(Footer):
    """The key footer. On narrow terminals F2–F7 collapse into one "f2‥f7 screens" key, so the
    screen's own keys fit and no description is cut mid-word (F1 lists every key)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._narrow: bool | None = None

    def compose(self) -> ComposeResult:
        self._narrow = self.app.size.width < WIDE_FOOTER
        grouped = False
        for widget in super().compose():
            if self._narrow and isinstance(widget, FooterKey) and widget.key in SCREEN_KEYS:
                if not grouped:
                    grouped = True
                    yield FooterKey("f2", "f2‥f7", "screens", "app.switch_mode('ask')",
                                    tooltip="F2 Ask · F3 Generate · F4 Health · F5 Ratings · "
                                            "F6 Panels · F7 History").data_bind(
                                                compact=Footer.compact)
                continue
            yield widget

    def on_resize(self) -> None:
        if self._narrow is not None and (self.app.size.width < WIDE_FOOTER) != self._narrow:
            self.call_after_refresh(self.recompose)


class FscaleScreen(Screen):
    """A full screen with the app header and the key-binding footer around ``body()``."""

    #: the mode name (``fscale_tui.app.SCREENS``)
    NAME = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield from self.body()
        yield FscaleFooter(compact=True)

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
