"""``fscale local``: the embedded local model servers (status, start, stop, path).

Each local model runs in a small background llama.cpp server started on first use and reused
by later calls; it stops by itself after an idle timeout. stdout is data; people read stderr.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from ..engine.errors import UsageError
from .common import guarded, load_settings_for_cli, print_json, stderr_console

local_app = typer.Typer(
    help=("Embedded local models: llama.cpp servers for small GGUF models (the \\[local] extra).\n\n"
          "Example: fscale local status"),
    no_args_is_help=True,
)


def _local_models(settings: Any) -> list[Any]:
    return [m for m in settings.models.values()
            if (p := settings.providers.get(m.provider)) is not None and p.type == "local"]


def _targets(settings: Any, names: list[str] | None) -> dict[str, list[Any]]:
    """Server name (model id) -> the aliases it serves, for the given aliases/ids (or all)."""
    models = _local_models(settings)
    if names:
        chosen = []
        for name in names:
            hits = [m for m in models if name in (m.alias, m.id)]
            if not hits:
                known = ", ".join(m.alias for m in models) or "none"
                raise UsageError(f"{name!r} is not a local model (local models: {known})")
            chosen += hits
        models = chosen
    servers: dict[str, list[Any]] = {}
    for m in models:
        servers.setdefault(m.id, []).append(m)
    return servers


def _status_rows(settings: Any) -> list[dict[str, Any]]:
    from ..engine.local import provider as lp
    from ..engine.local import servers, weights

    rows = []
    for name, members in _targets(settings, None).items():
        first = members[0]
        info = servers.status(settings.paths, name)
        w = weights.BUILTIN_WEIGHTS.get(str(first.options.get("weights", "")))
        joined = (weights.builtin_path(w, settings.paths.cache_dir).exists() if w is not None
                  else None)
        row = {
            "server": name,
            "aliases": [m.alias for m in members],
            "provider": first.provider,
            "installed": lp.model_installed(first),
            "weights": weights.describe_source(first.options),
            "joined": joined,
            "status": info["status"],
            "pid": info.get("pid"),
            "url": info.get("base_url"),
            "rss_mb": round(info["rss_bytes"] / 2**20) if info.get("rss_bytes") else None,
            "idle_s": info.get("idle_s"),
            "stops_in_s": info.get("stops_in_s"),
            "log": str(servers.log_path(settings.paths, name)),
        }
        rows.append(row)
    return rows


@local_app.command("status")
@guarded
def status(as_json: bool = typer.Option(False, "--json", help="Print a JSON list on stdout.")) -> None:
    """Show each local model: installed, weights joined, server running (pid, URL, RAM, idle).

    Examples:

      fscale local status

      fscale local status --json | jq '.[] | select(.status == "running") | .url'
    """
    from ..engine.local import provider as lp

    settings = load_settings_for_cli()
    rows = _status_rows(settings)
    if as_json:
        print_json(rows)
        return
    if not lp.runtime_installed():
        sys.stderr.write(f"fscale: {lp.LOCAL_HELP}\n")
    for r in rows:
        state = r["status"]
        if state == "running":
            state = f"running pid {r['pid']} {r['url']} {r['rss_mb']} MB, stops in {r['stops_in_s']:g}s"
        inst = "installed" if r["installed"] else "not installed"
        sys.stdout.write(f"{r['server']:<38} {inst:<14} {state}  ({', '.join(r['aliases'])})\n")


@local_app.command("start")
@guarded
def start(models: list[str] = typer.Argument(None, help="Local model aliases or ids (default: the local panel).")) -> None:
    """Start (or find running) the servers of local models, so the next call is warm.

    Prints one line per server on stdout: its model id and URL.

    Examples:

      fscale local start

      fscale local start local-qwen-0.5b
    """
    from ..engine.errors import NoProviderError
    from ..engine.local import provider as lp

    settings = load_settings_for_cli()
    if not models:
        models = list(settings.panels.get("local") or [])
    targets = _targets(settings, models)
    if not lp.runtime_installed():
        raise NoProviderError(lp.LOCAL_HELP)
    from .render import StatusPrinter

    err = stderr_console()
    # Joining the weights (byte bar on a terminal) and starting each server, on stderr; the
    # URLs go to stdout as they come.
    status = StatusPrinter(err, True)
    try:
        for name, members in targets.items():
            model = members[0]
            provider = settings.providers[model.provider]
            state = lp.start_server(model, provider, settings, status)
            verb = "started" if state.get("started") else "already running"
            err.print(f"{name}: {verb} (pid {state['pid']})")
            sys.stdout.write(f"{name}\t{state['base_url']}\n")
            sys.stdout.flush()
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
    from ..engine.local import servers

    settings = load_settings_for_cli()
    names = list(_targets(settings, models)) if models else servers.known_servers(settings.paths)
    stopped = 0
    for name in names:
        if servers.stop_server(settings.paths, name):
            stopped += 1
            sys.stdout.write(f"{name}\n")
    sys.stderr.write(f"fscale: stopped {stopped} local server{'s' if stopped != 1 else ''}\n")


@local_app.command("path")
@guarded
def path() -> None:
    """Print the directory holding the servers' state files and logs.

    Example:

      tail -f "$(fscale local path)"/*.log
    """
    from ..engine.local import servers
    from ..engine.paths import Paths

    sys.stdout.write(f"{servers.local_dir(Paths.resolve())}\n")


def register(app: typer.Typer) -> None:
    app.add_typer(local_app, name="local")
