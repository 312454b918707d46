"""The ``fscale`` command: a thin Typer view over the engine.

stdout is data; humans read stderr. Each command module registers its own commands
(``register(app)``; :func:`commands` finds them in the modules' sources), so the features stay
in separate files and adding a command is one module. Command modules are imported lazily: ``fscale --help``,
``--version``, ``config path`` and usage errors load only the module of the command they run
(or none), never the HTTP stack nor the engine's call machinery; one-shot commands never
import textual (``fscale tui`` does).

Usage errors (a missing or bad option, an unknown command) are one line on stderr,
``fscale: error: ...``, with exit code 2, like every other error (see ``common.fail``).
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from .. import __version__

#: A command module's place in ``fscale --help`` (``HELP_ORDER = N`` at its top level; lower
#: first, then by name): its commands are listed together, in the order its register() adds them.
_ORDER = re.compile(r"^HELP_ORDER = (\d+)", re.MULTILINE)
#: What register() adds: ``app.command("name")(function)`` or ``app.add_typer(group, name="name")``.
_REGISTERED = re.compile(r'\bapp\.(?:command\(\s*"([\w-]+)"|add_typer\(\s*\w+\s*,\s*name\s*=\s*"([\w-]+)")')


def _register_body(text: str) -> str | None:
    start = text.find("\ndef register(")
    if start < 0:
        return None
    end = text.find("\ndef ", start + 1)
    return text[start:] if end < 0 else text[start:end]


@functools.cache
def commands(path: tuple[str, ...] | None = None) -> dict[str, str]:
    """Every command -> the module of this package whose ``register(app)`` adds it, in the
    order ``fscale --help`` lists them. Read from the modules' sources (a few milliseconds),
    not by importing them: a command's module is imported only when it runs or shows its own
    help, so adding a command is one module with a register() (plus its test)."""
    found: list[tuple[int, str, list[str]]] = []
    for folder in path if path is not None else tuple(__path__):
        for file in Path(folder).glob("*.py"):
            text = file.read_text(encoding="utf-8")
            body = _register_body(text)
            if body is None:
                continue
            order = _ORDER.search(text)
            names = [m.group(1) or m.group(2) for m in _REGISTERED.finditer(body)]
            found.append((int(order.group(1)) if order else 1000, file.stem, names))
    return {name: module for _, module, names in sorted(found) for name in names}


def summary(name: str) -> str:
    """The first paragraph of ``name``'s help (its docstring or its group's help), read from
    its module's source: what ``fscale --help`` and shell completion show without importing
    the module."""
    return _summaries(commands()[name])[name]


@functools.cache
def _summaries(module_name: str) -> dict[str, str]:
    import ast
    import inspect

    file = next(p for folder in __path__ if (p := Path(folder, f"{module_name}.py")).exists())
    tree = ast.parse(file.read_text(encoding="utf-8"))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    groups: dict[str, str] = {}  # a typer group's variable -> its help
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.targets[0], ast.Name)):
            for kw in node.value.keywords:
                if kw.arg == "help" and isinstance(kw.value, ast.Constant):
                    groups[node.targets[0].id] = str(kw.value.value)
    for fn in functions.values():  # a group's callback: its docstring is the group's help
        for deco in fn.decorator_list:
            if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                    and deco.func.attr == "callback" and isinstance(deco.func.value, ast.Name)):
                groups[deco.func.value.id] = ast.get_docstring(fn) or ""
    out: dict[str, str] = {}
    for node in ast.walk(functions["register"]):
        if not isinstance(node, ast.Call):
            continue
        call = node.func
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr == "command" and node.args
                and isinstance(node.args[0], ast.Name)):
            text = ast.get_docstring(functions[node.args[0].id]) or ""
            out[str(call.args[0].value)] = text  # type: ignore[attr-defined]
        elif isinstance(call, ast.Attribute) and call.attr == "add_typer" and node.args:
            name = next(str(kw.value.value) for kw in node.keywords  # type: ignore[attr-defined]
                        if kw.arg == "name")
            out[name] = groups.get(node.args[0].id, "")  # type: ignore[attr-defined]
    return {name: " ".join(inspect.cleandoc(text).split("\n\n")[0].split())
            for name, text in out.items()}


#: module name -> the click group its ``register()`` filled (each module loads once).
_loaded: dict[str, Any] = {}


def load_command(name: str) -> Any:
    """The real click command of ``name``, importing its module on first use."""
    module_name = commands()[name]
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
        return list(commands())

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in commands():
            return None
        if self._listing:
            text = summary(cmd_name)
            return TyperCommand(cmd_name, help=text, short_help=text, rich_markup_mode="rich")
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
            if args and args[0] not in commands():
                from difflib import get_close_matches

                matches = get_close_matches(args[0], list(commands()))
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
