"""The Textual app behind ``fscale tui``: one engine, several screens (Textual modes).

Screens are imported only when first shown, so reaching the Ask screen stays fast. The engine
is created on first use through an injectable factory (tests point it at the loopback server
or feed it fixed events); it is the only place decisions are made.
"""

from __future__ import annotations

import contextlib

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.theme import Theme

from .engine.base import storage
from .engine.base.paths import Paths
from .screens import SCREENS

if TYPE_CHECKING:
    from .engine.base.settings import Settings
    from .engine.session import Engine

#: High-contrast themes: text is never told apart by colour alone (every status also has a label).
THEMES = [
    Theme(name="fscale-dark", primary="#4EA1FF", secondary="#9B8CFF", accent="#FFB454",
          warning="#F2C94C", error="#FF6B6B", success="#5BD17F", foreground="#E6E6E6",
          background="#15171C", surface="#1D2027", panel="#262A33", dark=True),
    Theme(name="fscale-light", primary="#0B5CAD", secondary="#5B3CC4", accent="#A65A00",
          warning="#8A6100", error="#B3261E", success="#1E7B34", foreground="#1B1B1B",
          background="#FAFAF7", surface="#F0F0EB", panel="#E3E3DC", dark=False),
]
DEFAULT_THEME = "fscale-dark"


class TuiState:
    """What survives a restart (last question, panel, pane sizes, theme): ``state/tui.json``.

    Written atomically through ``engine.storage``; a corrupt file is moved aside by it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, Any] = storage.read_json(path)
        except OSError as exc:  # unreadable, or a symbolic link: start afresh, say it once
            storage.warn_state_unwritten(exc, path)
            self.data = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def update(self, **values: Any) -> None:
        self.data.update(values)
        try:
            storage.write_json(self.path, self.data)
        except OSError as exc:  # a read-only state dir must not break the UI
            storage.warn_state_unwritten(exc, self.path)


def _default_engine_factory() -> Engine:
    from .engine.session import Engine

    return Engine()


class FscaleApp(App[int]):
    """fscale's terminal UI."""

    CSS_PATH = "app.tcss"
    TITLE = "fscale"
    SUB_TITLE = "test-time scaling with model ensembles"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("f1", "help", "Help", priority=True),
        # Each screen's F-key, as the screen declares it (screens/__init__.py: SCREENS).
        *(Binding(s.key, f"switch_mode('{s.mode}')", s.label, priority=True, show=s.footer)
          for s in SCREENS.values()),
        Binding("ctrl+t", "toggle_theme", "Light/dark theme", show=False),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, *, engine_factory: Callable[[], Engine] | None = None,
                 paths: Paths | None = None, start: str = "ask",
                 exit_when_ready: bool = False) -> None:
        self.started_at = time.perf_counter()
        self._engine_factory = engine_factory or _default_engine_factory
        self._engine: Engine | None = None
        self._settings: Settings | None = None
        self._engine_lock = threading.Lock()
        self._retired: list[Engine] = []
        self.paths = paths or Paths.resolve()
        self.state = TuiState(self.paths.state_dir / "tui.json")
        self.exit_when_ready = exit_when_ready
        self.ready_after: float | None = None
        self.ready_epoch = 0.0
        self.MODES = {name: self._screen_factory(name) for name in SCREENS}
        self._start = start if start in SCREENS else "ask"
        super().__init__()
        for theme in THEMES:
            self.register_theme(theme)
        theme = self.state.get("theme", DEFAULT_THEME)
        self.theme = theme if theme in self.available_themes else DEFAULT_THEME

    # -- screens -----------------------------------------------------------------------------
    @staticmethod
    def _screen_factory(name: str) -> Callable[[], Screen]:
        def make() -> Screen:
            import importlib

            entry = SCREENS[name]
            module = importlib.import_module(f"fscale_tui.screens.{entry.module}")
            screen: Screen = getattr(module, entry.cls)()
            return screen

        return make

    def on_mount(self) -> None:
        self.switch_mode(self._start)
        # SIGTERM quits like ctrl+q (the terminal restored, the engine's writer drained), with
        # the documented code 143; not a Python exception raised somewhere in the UI loop.
        import asyncio
        import signal

        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, lambda: self.exit(return_code=143))

    def screen_ready(self, name: str) -> None:
        """Called by a screen once it is mounted; records the start-up figure."""
        if self.ready_after is None:
            self.ready_after = time.perf_counter() - self.started_at
            self.ready_epoch = time.time()
            if self.exit_when_ready:
                self.exit(0)
                return
            # Building the engine (httpx, TLS context) takes a noticeable moment: do it now,
            # off the UI thread, so that the first question does not wait for it.
            self.run_worker(self._warm_engine, thread=True, group="warm", exit_on_error=False)

    def _warm_engine(self) -> None:
        warm = getattr(self.engine, "warm", None)  # building it (and its TLS context) is the point
        if warm is not None:
            warm()

    # -- engine ------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The engine for this session, created on first use."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = self._engine_factory()
            return self._engine

    @property
    def settings(self) -> Settings:
        """The resolved configuration (without building the engine: start-up stays fast)."""
        engine = self._engine
        if engine is not None:
            return engine.settings
        if self._settings is None:
            from .engine.catalog.config import load_settings

            self._settings = load_settings()
        return self._settings

    def reload_engine(self) -> None:
        """config.toml changed: later runs use a fresh engine (running ones keep theirs)."""
        with self._engine_lock:
            if self._engine is not None:
                self._retired.append(self._engine)
            self._engine = None
            self._settings = None
        from .messages import SettingsChanged

        for screen in self._installed_mode_screens():
            screen.post_message(SettingsChanged())

    def _installed_mode_screens(self) -> list[Screen]:
        screens = []
        for stack in self._screen_stacks.values():
            screens.extend(s for s in stack if isinstance(s, Screen))
        return screens

    async def on_unmount(self) -> None:
        for engine in [*self._retired, self._engine]:
            if engine is not None and hasattr(engine, "aclose"):
                try:
                    await engine.aclose()
                except Exception:  # closing must never mask the real exit
                    pass

    # -- actions -----------------------------------------------------------------------------
    def action_help(self) -> None:
        """Show the key bindings of every screen."""
        from .screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_toggle_theme(self) -> None:
        """Switch between the light and the dark theme (remembered)."""
        self.theme = "fscale-light" if self.current_theme.dark else "fscale-dark"

    def watch_theme(self, theme: str) -> None:
        if getattr(self, "state", None) is not None and self.state.get("theme") != theme:
            self.state.update(theme=theme)

    def on_resize(self, event: Any) -> None:
        self.state.data["size"] = [event.size.width, event.size.height]

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every action of the app and of the current screen, for the command palette."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "Key bindings of every screen", self.action_help)
        yield SystemCommand("Light / dark theme", "Toggle the fscale light and dark themes",
                            self.action_toggle_theme)
        for name, entry in SCREENS.items():
            yield SystemCommand(f"Go to {name}", entry.title, lambda n=name: self.switch_mode(n))
        for title, help_text, callback in getattr(screen, "palette_commands", lambda: [])():
            yield SystemCommand(title, help_text, callback)

