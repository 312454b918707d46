"""What every fscale screen shares: header, footer, palette entries for its bindings."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.widgets._footer import FooterKey

from . import SCREENS

#: the screens with a key in the footer (F2 Ask … F7 History), as they declare themselves
FOOTER_SCREENS = [s for s in SCREENS.values() if s.footer]
SCREEN_KEYS = tuple(s.key for s in FOOTER_SCREENS)


def key_width(key: FooterKey) -> int:
    """Columns one compact footer key takes: " key description " (as Textual draws it)."""
    return len(key.key_display) + (len(key.description) + 1 if key.description else 0) + 1


class FscaleFooter(Footer):
    """The key footer. When every key would not fit, the screens' keys (F2–F7) collapse into one
    "f2‥f7 screens" key, so the screen's own keys fit and no description is cut mid-word (F1
    lists them all)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._need = 0
        self._narrow: bool | None = None

    def compose(self) -> ComposeResult:
        keys = list(super().compose())
        # Every key, plus the palette's left edge and a column of slack.
        self._need = sum(key_width(k) for k in keys if isinstance(k, FooterKey)) + 2
        self._narrow = self._need > self.app.size.width
        grouped = False
        for widget in keys:
            if self._narrow and isinstance(widget, FooterKey) and widget.key in SCREEN_KEYS:
                if not grouped:
                    grouped = True
                    first, last = FOOTER_SCREENS[0], FOOTER_SCREENS[-1]
                    tooltip = " · ".join(f"{s.key.upper()} {s.label}" for s in FOOTER_SCREENS)
                    yield FooterKey(first.key, f"{first.key}‥{last.key}", "screens",
                                    f"app.switch_mode('{first.mode}')",
                                    tooltip=tooltip).data_bind(compact=Footer.compact)
                continue
            yield widget

    def on_resize(self) -> None:
        if self._narrow is not None and (self._need > self.app.size.width) != self._narrow:
            self.call_after_refresh(self.recompose)


class FscaleScreen(Screen):
    """A full screen with the app header and the key-binding footer around ``body()``."""

    #: the mode name (its module's ``SCREEN["mode"]``)
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
