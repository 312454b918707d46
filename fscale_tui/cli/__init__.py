"""The ``fscale`` command: a thin Typer view over the engine.

stdout is data; humans read stderr. Each command module registers its own commands, so the
features stay in separate files. One-shot commands never import textual (``fscale tui`` does).
"""

from __future__ import annotations

import os
import sys

import typer

from .. import __version__
from . import catalog, common, generate, learning, local, routing, scale, tui

app = typer.Typer(
    name="fscale",
    help=("Test-time scaling with model ensembles: ask several LLMs, let them vote, judge, "
          "verify, route and escalate.\n\n"
          "Example: fscale scale \"Is this safe?\" -a SAFE,VULNERABLE --context-file x.py --json"),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fscale {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", envvar="FSCALE_DEBUG",
                               help="Show tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    common.DEBUG["on"] = debug


for module in (scale, generate, catalog, learning, routing, local, tui):
    module.register(app)


def main() -> None:
    # Rich decides colours from the environment; make NO_COLOR explicit for click's output too.
    if os.environ.get("NO_COLOR"):
        os.environ.setdefault("TERM", "dumb")
    sys.argv = common.optional_value(sys.argv, "--ray", "local")
    try:
        common.check_argv(sys.argv)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    app()
