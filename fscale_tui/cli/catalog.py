"""``fscale models``, ``fscale panels``, ``fscale health`` and ``fscale config``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from ..engine.base import output
from ..engine.base.errors import ExitCode
from .common import (engine_facade, guarded, load_settings_for_cli, print_json, run, split_list,
                     stderr_console, stdout_console)

if TYPE_CHECKING:
    from ..engine.session import Engine

#: Where this module's commands come in ``fscale --help`` (cli/__init__.py: commands).
HELP_ORDER = 30

# Group help comes from the callbacks' docstrings (they carry the examples).
models_app = typer.Typer(invoke_without_command=True)
panels_app = typer.Typer(invoke_without_command=True)
config_app = typer.Typer(no_args_is_help=True, help=(
    "Where the configuration lives and what it says.\n\n"
    "Examples:\n\n  fscale config path\n\n  fscale config show --json"))


def model_rows(engine: Engine, usable_only: bool = False) -> list[dict[str, Any]]:
    """The catalogue as ``fscale models --json`` prints it (and the MCP ``models`` tool returns it)."""
    return [{"schema": 1, **r} for r in engine.catalog.models() if r["usable"] or not usable_only]


def health_ok(rows: list[dict[str, Any]]) -> bool:
    """``fscale health`` exits 0 when at least one model is ok (or slow), else 4."""
    return any(r["status"] in ("ok", "slow") for r in rows)


def health_json(probes: list[Any], targets: list[Any]) -> list[dict[str, Any]]:
    """Probe results in the order of their targets, as ``fscale health --json`` prints them
    (and the MCP ``health`` tool returns them)."""
    order = {m.alias: i for i, m in enumerate(targets)}
    return [p.to_dict() for p in sorted(probes, key=lambda p: order[p.model])]


@models_app.callback()
@guarded
def models(ctx: typer.Context,
           as_json: bool = typer.Option(False, "--json", help="Print a JSON list on stdout."),
           usable_only: bool = typer.Option(False, "--usable", help="Only models whose provider has a key.")) -> None:
    """List the catalogue: alias, provider, id, tier, family, cost, usable, health.

    Examples:

      fscale models

      fscale models --json | jq -r '.[] | select(.usable) | .alias'

      fscale models refresh
    """
    if ctx.invoked_subcommand is not None:
        return
    with engine_facade() as engine:
        rows = model_rows(engine, usable_only)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("alias", "provider", "tier", "family", "cost", "usable", "health", "id"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["alias"], r["provider"], r["tier"], r["family"], f"{r['cost']:g}",
                      "yes" if r["usable"] else f"[dim]no: {r['why_not']}[/dim]", r["health"] or "-", r["id"])
    stdout_console(fixed_width_when_piped=True).print(table)


@models_app.command("refresh")
@guarded
def models_refresh(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Ask each usable provider's /models which catalogue entries are gone.

    Example:

      fscale models refresh --json
    """
    from ..engine.session import Engine

    async def go() -> dict[str, Any]:
        async with Engine() as engine:
            return await engine.refresh_catalogue()

    report = run(go())
    if as_json:
        print_json({"schema": 1, **report})
        return
    if not report:
        output.err.write("fscale: no usable provider to ask (set a key or declare one in config.toml)\n")
        return
    for name, info in report.items():
        if "error" in info:
            output.out.write(f"{name}: could not list models: {info['error']}\n")
            continue
        gone = ", ".join(info["gone"]) or "none"
        output.out.write(f"{name}: {info['listed']} listed, {info['catalogued']} catalogued, gone: {gone}\n")


@panels_app.callback()
@guarded
def panels(ctx: typer.Context,
           as_json: bool = typer.Option(False, "--json", help="Print the panels as JSON.")) -> None:
    """List named panels. Subcommands show, set and rm edit them in config.toml.

    Examples:

      fscale panels

      fscale panels set fast3 llama-3.1-8b,gemma-2-9b,qwen2.5-7b

      fscale scale "Spam?" -a SPAM,HAM --panel fast3
    """
    if ctx.invoked_subcommand is not None:
        return
    with engine_facade() as engine:
        data = engine.catalog.panels()
        default = engine.catalog.default_panel_name()
        effective = engine.catalog.default_resolves_to()
    if as_json:
        print_json({"schema": 1, **data})
        return
    for name, info in data.items():
        mark = "  ★ default" if name == effective else ""
        output.out.write(f"{name:<16} {', '.join(info['members'])}  [{info['source']}]{mark}\n")
    if effective is not None and effective != default:
        output.err.write(f"fscale: the {default!r} panel is {effective!r}: the first of nim, "
                         "github, local that can run here ([panels] default in config.toml "
                         "chooses another)\n")


@panels_app.command("show")
@guarded
def panels_show(name: str = typer.Argument(..., help="Panel name."),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Show one panel's members with their tier, family and provider.

    Example:

      fscale panels show nim
    """
    with engine_facade() as engine:
        members = engine.catalog.panel(name)
    rows = [{"alias": m.alias, "provider": m.provider, "id": m.id, "tier": m.tier, "family": m.family}
            for m in members]
    if as_json:
        print_json({"schema": 1, "name": name, "members": rows})
        return
    for r in rows:
        output.out.write(f"{r['alias']:<22} {r['tier']:<9} {r['family']:<10} {r['provider']}:{r['id']}\n")


@panels_app.command("set")
@guarded
def panels_set(name: str = typer.Argument(..., help="Panel name."),
               members: str = typer.Argument(..., help="Model aliases, comma-separated.")) -> None:
    """Create or replace a panel in config.toml.

    Example:

      fscale panels set default fast-a,fast-b,slow-c
    """
    aliases = list(split_list(members) or ())
    with engine_facade() as engine:
        path = engine.catalog.set_panel(name, aliases)
    output.err.write(f"fscale: panel {name} = {', '.join(aliases)} (written to {path})\n")


@panels_app.command("rm")
@guarded
def panels_rm(name: str = typer.Argument(..., help="Panel name.")) -> None:
    """Remove a panel from config.toml (a built-in panel of that name comes back).

    Example:

      fscale panels rm fast3
    """
    with engine_facade() as engine:
        path = engine.catalog.remove_panel(name)
    output.err.write(f"fscale: panel {name} removed from {path}\n")


@guarded
def health(
    models: str = typer.Option(None, "--models", "-m", help="Models to probe, comma-separated (default: every usable model)."),
    panel: str = typer.Option(None, "--panel", "-p", help="Probe one panel's members."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list on stdout."),
) -> None:
    """Probe models concurrently: ok / slow / rate_limited / dead / unavailable / error.

    Dead (HTTP 410) and unavailable (404) verdicts are remembered in the state directory and
    later calls substitute those models. Exit code 0 when at least one model is ok, 4 otherwise.

    Examples:

      fscale health

      fscale health --models llama-3.1-8b,gemma-2-9b --json
    """
    from ..engine.session import Engine
    from .common import show_progress
    from .render import EventPrinter, StatusPrinter

    console = stderr_console()
    show = show_progress(False, as_json)
    printer = EventPrinter(console, quiet=not show)
    status = StatusPrinter(console, show)

    targets: list[Any] = []
    fleet: dict[str, Any] = {}

    async def go() -> list[Any]:
        out = []
        async with Engine(on_status=status) as engine:
            nonlocal targets, fleet
            targets = engine.catalog.probe_targets(list(split_list(models) or ()), panel)
            async for probe in engine.health_events(targets):
                printer(probe)
                out.append(probe)
            fleet = engine.coordination_info()
        return out

    try:
        results = run(go())
    finally:
        status.close()
    rows = health_json(results, targets)
    if not as_json:
        output.err.write(f"fscale: health verdicts shared through the {fleet.get('backend')} "
                         f"backend ({fleet.get('where')})\n")
    if as_json:
        print_json(rows)
    else:
        for r in rows:
            output.out.write(f"{r['model']}\t{r['status']}\n")
    ok = health_ok(rows)
    no_key = [r["model"] for r in rows if r["status"] == "no_key"]
    if no_key and not as_json:
        output.err.write(f"fscale: not probed (no key or not installed): {', '.join(no_key)}\n")
    raise typer.Exit(int(ExitCode.DECIDED if ok else ExitCode.ALL_FAILED))


@config_app.command("path")
@guarded
def config_path(all_dirs: bool = typer.Option(False, "--all", help="Also print the data, state and cache directories.")) -> None:
    """Print the path of config.toml (FSCALE_HOME moves everything).

    Example:

      $EDITOR "$(fscale config path)"
    """
    from ..engine.base.paths import Paths

    paths = Paths.resolve()
    output.out.write(f"{paths.config_file}\n")
    if all_dirs:
        for which in ("data", "state", "cache"):
            output.out.write(f"{which}\t{getattr(paths, which + '_dir')}\n")


@config_app.command("show")
@guarded
def config_show(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Show every setting, its value and where it came from (flag > env > config > default).

    Settings live in config.toml under [defaults], except shadow_budget under [learning]
    (the share of decision calls shadow challengers may add over the last 200 calls;
    default 0.1, 0 = none).

    Examples:

      FSCALE_K=5 fscale config show

      FSCALE_SHADOW_BUDGET=0 fscale config show --json
    """
    from ..engine.base.settings import SETTINGS

    settings = load_settings_for_cli()
    values = {name: {"value": settings.get(name), "source": settings.source(name),
                     "env": SETTINGS[name].env, "table": SETTINGS[name].table,
                     "help": SETTINGS[name].help} for name in SETTINGS}
    providers = {
        name: {"type": p.type, "base_url": p.base_url, "api_key_env": p.api_key_env,
               "key_set": bool(p.api_key(settings.env)), "rpm": p.rpm,
               "source": "builtin" if p.builtin else "config"}
        for name, p in settings.providers.items()
    }
    from ..engine.base.errors import ConfigError

    invalid: ConfigError | None = None
    try:
        with engine_facade(settings) as engine:
            fleet = engine.coordination_info()
    except ConfigError as exc:  # an invalid Redis URL: shown (masked), then exit 2
        from ..engine.wire.coordination import describe_settings

        fleet, invalid = describe_settings(settings), exc
    if as_json:
        print_json({"schema": 1, "config_file": str(settings.paths.config_file),
                    "settings": values, "providers": providers, "coordination": fleet})
        if invalid is not None:
            raise invalid
        return
    out = output.out
    out.write(f"config file: {settings.paths.config_file}"
              f"{'' if settings.paths.config_file.exists() else ' (not created yet)'}\n\n")
    for name, info in values.items():
        table = "" if info["table"] == "defaults" else f"; [{info['table']}]"
        out.write(f"{name:<18} = {info['value']!s:<10} ({info['source']}; env {info['env']}"
                  f"{table})\n")
    out.write("\nproviders:\n")
    for name, p in providers.items():
        key = "" if not p["api_key_env"] else f", key {p['api_key_env']} {'set' if p['key_set'] else 'not set'}"
        out.write(f"  {name:<10} {p['type']:<7} {p['base_url'] or '-'} (rpm {p['rpm'] or '-'}{key}; {p['source']})\n")
    out.write(f"\ncoordination: {fleet['backend']} ({fleet['where']}; shared by "
              f"{fleet['shared_by']})\n")
    if fleet.get("note"):
        out.write(f"  note: {fleet['note']}\n")
    if invalid is not None:
        out.flush()
        raise invalid


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.add_typer(panels_app, name="panels")
    app.command("health")(health)
    app.add_typer(config_app, name="config")
