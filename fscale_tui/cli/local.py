"""``fscale local``: the embedded local model servers (status, start, stop, path).

Each local model runs in a small background llama.cpp server started on first use and reused
by later calls; it stops by itself after an idle timeout. stdout is data; people read stderr.
"""

from __future__ import annotations

import typer

from ..engine.base import output
from .common import engine_facade, guarded, print_json, stderr_console

#: Where this module's commands come in ``fscale --help`` (cli/__init__.py: commands).
HELP_ORDER = 70

local_app = typer.Typer(
    help=("Embedded local models: llama.cpp servers for small GGUF models (the \\[local] extra).\n\n"
          "Example: fscale local status"),
    no_args_is_help=True,
)


@local_app.command("status")
@guarded
def status(as_json: bool = typer.Option(False, "--json", help="Print a JSON list on stdout.")) -> None:
    """Show each local model: installed, weights joined, server running (pid, URL, RAM, idle).

    Examples:

      fscale local status

      fscale local status --json | jq '.[] | select(.status == "running") | .url'
    """
    with engine_facade() as engine:
        rows = engine.local.status()
        installed = engine.local.installed
    if as_json:
        print_json([{"schema": 1, **r} for r in rows])
        return
    if not installed:
        output.err.write(f"fscale: {engine.local.help}\n")
    for r in rows:
        state = r["status"]
        if state == "running":
            state = f"running pid {r['pid']} {r['url']} {r['rss_mb']} MB, stops in {r['stops_in_s']:g}s"
        inst = "installed" if r["installed"] else "not installed"
        output.out.write(f"{r['server']:<38} {inst:<14} {state}  ({', '.join(r['aliases'])})\n")


@local_app.command("start")
@guarded
def start(models: list[str] = typer.Argument(None, help="Local model aliases or ids (default: the local panel).")) -> None:
    """Start (or find running) the servers of local models, so the next call is warm.

    Prints one line per server on stdout: its model id and URL.

    Examples:

      fscale local start

      fscale local start local-qwen-0.5b
    """
    from .render import StatusPrinter

    err = stderr_console()
    # Joining the weights (byte bar on a terminal) and starting each server, on stderr; the
    # URLs go to stdout as they come.
    status = StatusPrinter(err, True)
    try:
        with engine_facade() as engine:
            targets = engine.local.targets(models or engine.local.default_models())
            for name in targets:
                state = engine.local.start(name, status)
                verb = "started" if state.get("started") else "already running"
                err.print(f"{name}: {verb} (pid {state['pid']})")
                output.out.write(f"{name}\t{state['base_url']}\n")
                output.out.flush()
    finally:
        status.close()


@local_app.command("stop")
@guarded
def stop(models: list[str] = typer.Argument(None, help="Local model aliases or ids (default: every running server).")) -> None:
    """Stop local model servers now (they also stop by themselves when idle).

    Examples:

      fscale local stop

      fscale local stop local-qwen-1.5b
    """
    from ..engine.catalog.config import load_settings
    from ..engine.base.errors import ConfigError

    try:
        settings = load_settings()
    except ConfigError as exc:
        # Stopping needs no configuration: the servers are found by their state files.
        output.err.write(f"fscale: warning: {exc}; stopping the local servers "
                         "without it\n")
        settings = load_settings(user_config=False)
    with engine_facade(settings) as engine:
        stopped_names = engine.local.stop(list(models) if models else None)
    for name in stopped_names:
        output.out.write(f"{name}\n")
    stopped = len(stopped_names)
    output.err.write(f"fscale: stopped {stopped} local server{'s' if stopped != 1 else ''}\n")


@local_app.command("path")
@guarded
def path() -> None:
    """Print the directory holding the servers' state files and logs.

    Example:

      tail -f "$(fscale local path)"/*.log
    """
    with engine_facade() as engine:
        output.out.write(f"{engine.local.directory}\n")


def register(app: typer.Typer) -> None:
    app.add_typer(local_app, name="local")
