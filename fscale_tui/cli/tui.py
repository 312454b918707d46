"""``fscale tui``: the Textual app. Textual is imported only inside the command, lazily,
so one-shot commands never pay for it."""

from __future__ import annotations

import typer

from ..screens import SCREENS
from .common import guarded

#: Where this module's commands come in ``fscale --help`` (cli/__init__.py: commands).
HELP_ORDER = 60

SCREEN_NAMES = tuple(SCREENS)


@guarded
def tui(
    screen: str = typer.Option("ask", "--screen", "-s",
                               help=f"Screen to open first: {', '.join(SCREEN_NAMES)}."),
    exit_when_ready: bool = typer.Option(False, "--exit-when-ready", hidden=True,
                                         help="Start headless, exit once the first screen is "
                                              "mounted and print the start-up time (benchmarks)."),
) -> None:
    """Interactive terminal UI: live votes, health, panels, history (F1 for keys).

    State (last question, panel, pane sizes, theme) is kept in the state directory
    ('fscale config path --all').

    Example:

      fscale tui --screen health
    """
    import time

    from ..engine.base.errors import UsageError

    if screen not in SCREEN_NAMES:
        raise UsageError(f"--screen must be one of {', '.join(SCREEN_NAMES)}")
    t0 = time.perf_counter()
    from ..app import FscaleApp

    app = FscaleApp(start=screen, exit_when_ready=exit_when_ready)
    app.run(headless=exit_when_ready)
    app.state.update()
    from ..engine.base import output

    if exit_when_ready:
        ready = app.ready_after if app.ready_after is not None else float("nan")
        output.out.write(f"import_s={app.started_at - t0:.4f} ready_s={ready:.4f} "
                         f"ready_epoch={app.ready_epoch:.6f}\n")
    # ``run()`` returns the value given to ``exit()`` (None after a crash); the return code is
    # what says whether a screen raised (Textual sets 1), so a crash never exits 0.
    if app.return_code == 143:
        output.err.write("fscale: terminated\n")
    raise typer.Exit(int(app.return_code or 0))


def register(app: typer.Typer) -> None:
    app.command("tui")(tui)
