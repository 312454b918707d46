"""The ``fscale`` command: a thin Typer view over the engine.

stdout is data; humans read stderr. Each command module registers its own commands, so the
features stay in separate files. Command modules are imported lazily: ``fscale --help``,
``--version``, ``config path`` and usage errors load only the module of the command they run
(or none), never the HTTP stack nor the engine's call machinery; one-shot commands never
import textual (``fscale tui`` does).

Usage errors (a missing or bad option, an unknown command) are one line on stderr,
``fscale: error: ...``, with exit code 2, like every other error (see ``common.fail``).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from .. import __version__

#: Every command, in the order ``fscale --help`` lists them: name -> (module in this package,
#: one-line summary). The summary is what ``--help`` and shell completion show without
#: importing the module; a test keeps it equal to the start of the command's own docstring.
COMMANDS: dict[str, tuple[str, str]] = {
    "scale": ("scale", "Ask several models the same question; the majority label wins."),
    "verify": ("scale", "Check a draft against its source: does it make unsupported claims? (YES/NO)"),
    "generate": ("generate", "Generate k answers and select the best: judges from other "
                             "families, or another strategy."),
    "health": ("catalog", "Probe models concurrently: ok / slow / rate_limited / dead / "
                          "unavailable / error."),
    "ratings": ("learning", "Model ratings learnt from logged calls: accuracy estimate ± sd, "
                            "Elo rating, calls, feedback."),
    "feedback": ("learning", "Tell fscale whether a past call was right; every model that "
                             "answered it is re-rated."),
    "evolve": ("learning", "Propose the champion panel from the evidence, show the diff, and "
                           "with --apply write it."),
    "profile": ("routing", "Profile models on a labelled task file: accuracy, stability, "
                           "latency, cost, no-answer rate, pairwise error correlation and the "
                           "per-cluster error profile Ψ."),
    "route": ("routing", "Say which model a question would be routed to, and why."),
    "calibrate": ("routing", "Calibrate '-k auto' on a labelled file: when to stop asking "
                             "models (adaptive), and thresholds with risk ≤ α for abstaining."),
    "tui": ("tui", "Interactive terminal UI: live votes, health, panels, history (F1 for keys)."),
    "models": ("catalog", "List the catalogue: alias, provider, id, tier, family, cost, usable, "
                          "health."),
    "panels": ("catalog", "List named panels. Subcommands show, set and rm edit them in "
                          "config.toml."),
    "config": ("catalog", "Where the configuration lives and what it says."),
    "history": ("learning", "Past calls from the call log, newest first: id, time, decision, "
                            "members, feedback."),
    "local": ("local", "Embedded local models: llama.cpp servers for small GGUF models "
                       "(the \\[local] extra)."),
    "mcp": ("mcp", "Serve fscale's tools to agents over the Model Context Protocol (stdio; "
                   "the \\[mcp] extra)."),
}

#: module name -> the click group its ``register()`` filled (each module loads once).
_loaded: dict[str, Any] = {}


def load_command(name: str) -> Any:
    """The real click command of ``name``, importing its module on first use."""
    module_name = COMMANDS[name][0]
    group = _loaded.get(module_name)
    if group is None:
        module = importlib.import_module(f"{__name__}.{module_name}")
        holder = typer.Typer(rich_markup_mode="rich", add_completion=False)
        module.register(holder)
        group = _loaded[module_name] = typer.main.get_group(holder)
        for command in group.commands.values():
            _reflow(command)
    return group.commands[name]


def reflow_help(text: str) -> str:
    """A docstring as help: each prose paragraph on one line, so the terminal wraps it at its
    own width (Typer's rich mode keeps single line breaks, which broke sentences in the middle
    wherever the docstring did); indented paragraphs (examples) and ``\\b`` ones as written."""
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if p.startswith("\b") or any(line[:1].isspace() for line in p.splitlines())
        else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs)


def _reflow(command: Any) -> None:
    if command.help:
        command.help = reflow_help(command.help)
    for sub in getattr(command, "commands", {}).values():
        _reflow(sub)


def report_click_error(exc: Any) -> NoReturn:
    """A click usage error (missing option, bad value, unknown command) as the one-line
    ``fscale: error: ...`` every other error uses; exit 2 (click's code for usage errors)."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        raise typer.Exit(exc.exit_code)  # the help was shown already
    message = " ".join(exc.format_message().split()).rstrip(".")
    if len(message) > 1 and message[0].isupper() and message[1].islower():
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    from ..engine.base import output

    output.err.write(f"fscale: error: {message}\n")
    raise typer.Exit(exc.exit_code)


class LazyGroup(TyperGroup):
    """The root group: knows every command's name and summary, imports a command's module
    only when the command runs or shows its own help, and reports usage errors in one line."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if self._listing:
            summary = COMMANDS[cmd_name][1]
            return TyperCommand(cmd_name, help=summary, short_help=summary,
                                rich_markup_mode="rich")
        return load_command(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        self._listing = True
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._listing = False

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        from typer._click.exceptions import UsageError

        try:
            return self._click_resolve_command(ctx, args)
        except UsageError as exc:
            if args and args[0] not in COMMANDS:
                from difflib import get_close_matches

                matches = get_close_matches(args[0], list(COMMANDS))
                if matches:
                    exc.message = (f"{exc.message.rstrip('.')}. Did you mean "
                                   f"{', '.join(repr(m) for m in matches)}?")
            raise

    def make_context(self, info_name: Any, args: list[str], parent: Any = None,
                     **extra: Any) -> Any:
        from typer._click.exceptions import ClickException

        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except ClickException as exc:
            report_click_error(exc)

    def invoke(self, ctx: Any) -> Any:
        from typer._click.exceptions import ClickException

        try:
            return super().invoke(ctx)
        except ClickException as exc:
            report_click_error(exc)


app = typer.Typer(
    name="fscale",
    cls=LazyGroup,
    help=("Test-time scaling with model ensembles: ask several LLMs, let them vote, judge, "
          "verify, route and escalate.\n\n"
          "Example: fscale scale \"Is this safe?\" -a SAFE,VULNERABLE --context-file x.py --json"),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from ..engine.base import output

        output.out.write(f"fscale {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", envvar="FSCALE_DEBUG",
                               help="Show tracebacks as well as the one-line errors (exit codes "
                                    "stay the same)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    from . import common

    common.DEBUG["on"] = debug


def main() -> None:
    if os.environ.get("NO_COLOR"):
        # NO_COLOR means no styling at all, in the help too (typer's help console reads this
        # when it is first imported; our own consoles see common.no_color()).
        os.environ.setdefault("_TYPER_FORCE_DISABLE_TERMINAL", "1")
    from .common import handle_sigterm, optional_value

    handle_sigterm()  # SIGTERM stops like Ctrl-C: drained, one line, exit 143
    sys.argv = optional_value(sys.argv, "--ray", "local")
    try:
        from .common import check_argv

        check_argv(sys.argv)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    typer.main.get_command(app).main(prog_name="fscale")
