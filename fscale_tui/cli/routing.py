"""``fscale profile``, ``fscale route`` and ``fscale calibrate`` (design §8).

stdout is data (tables, or one JSON object with ``--json``); progress bars and explanations go
to stderr. State lives in ``<data>/routing/`` (``fscale profile --path`` prints it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from ..engine.base import output
from ..engine.base.errors import ExitCode, UsageError
from .common import (engine_facade, guarded, load_settings_for_cli, print_json, run, show_progress,
                     split_list, stderr_console, stdout_console)

if TYPE_CHECKING:
    from ..engine.base.settings import Settings

#: Where this module's commands come in ``fscale --help`` (cli/__init__.py: commands).
HELP_ORDER = 50

SELECT = "Choosing models"
CLUSTERS = "Clusters"
OUTPUT = "Output"
ADAPTIVE = "Adaptive -k auto"


class _Progress:
    """Items done on a rich progress bar on stderr: only on a terminal (with --json too),
    never with --quiet, and never capturing stdout (the table or the JSON goes there).
    ``status`` renders a local model's first use (weights, server) on the same display."""

    def __init__(self, label: str, enabled: bool) -> None:
        from .render import LiveProgress, StatusPrinter

        console = stderr_console()
        self.display = LiveProgress(console, enabled)
        self.status = StatusPrinter(console, enabled, display=self.display)
        self.label = label
        self.task: Any = None

    def __enter__(self) -> "_Progress":
        self.task = self.display.add(self.label, None)
        return self

    def __call__(self, done: int, total: int) -> None:
        self.display.update(self.task, done, total)

    def __exit__(self, *exc: object) -> None:
        self.display.stop()


def _select_models(settings: Settings, models: str | None, panel: str | None) -> list[Any]:
    names = split_list(models)
    if names and panel:
        raise UsageError("give --models or --panel, not both")
    if not names and not panel:
        raise UsageError("which models? give --models a,b,c or --panel NAME")
    with engine_facade(settings) as engine:
        return engine.catalog.select(models=list(names or ()) or None, panel=panel)


def _print_profile(report: dict[str, Any]) -> None:
    from rich.table import Table

    console = stdout_console(fixed_width_when_piped=True)
    table = Table(box=None, pad_edge=False)
    # Stability needs two trials of a prompt (--trials 2 or more): no column when unmeasured.
    stable = any(r["stability"] is not None for r in report["models"].values())
    columns = ("model", "items", "accuracy") + (("stability",) if stable else ()) + \
        ("no answer", "latency p50", "cost", "$ / item", "accuracy / $")
    for col in columns:
        table.add_column(col)
    for m, r in sorted(report["models"].items(), key=lambda kv: -kv[1]["accuracy"]):
        stab = "-" if r["stability"] is None else f"{r['stability']:.1%}"
        lat = "-" if r["latency_median_s"] is None else f"{r['latency_median_s']:.3f}s"
        cost = "-" if r["cost"] is None else f"{r['cost']:g}"
        per_item = r.get("cost_usd_per_item")
        per_usd = r.get("accuracy_per_usd")
        cells = [m, str(r["items"]), f"{r['accuracy']:.1%}"] + ([stab] if stable else []) + \
            [f"{r['no_answer_rate']:.1%}", lat, cost,
             "-" if per_item is None else f"{per_item:.2e}",
             "-" if per_usd is None else f"{per_usd:,.0f}"]
        table.add_row(*cells)
    console.print(table)
    pairs = [p for p in report["error_correlation"].values() if p["phi"] is not None]
    if pairs:
        pairs.sort(key=lambda p: p["phi"])
        console.print("\nerror correlation (lowest first: the most complementary pairs)")
        for p in pairs[:8]:
            console.print(f"  {p['models'][0]} × {p['models'][1]}: {p['phi']:+.3f} (n={p['items']})")
    if report.get("clusters"):
        c = report["clusters"]
        console.print(f"\nper-cluster error profile Ψ over {c['k']} clusters: see --json (clusters.psi)")


@guarded
def profile(
    tasks: str = typer.Argument(None, help="Labelled task file (JSONL: id, question, answers, label, context?, category?).",
                                show_default=False),
    models: str = typer.Option(None, "--models", "-m", help="Models to profile, comma-separated aliases.", rich_help_panel=SELECT),
    panel: str = typer.Option(None, "--panel", "-p", help="Profile every member of a panel.", rich_help_panel=SELECT),
    trials: int = typer.Option(1, "--trials", "-n", help="Times each model answers each task (stability needs ≥ 2)."),
    resume: bool = typer.Option(False, "--resume", help="Skip the trials already stored (adding a model profiles only it)."),
    fit_clusters: str = typer.Option(None, "--fit-clusters", help="Fit the prompt clusters on this training task file first.", rich_help_panel=CLUSTERS),
    clusters: int = typer.Option(20, "--clusters", "-K", help="Number of K-means clusters for --fit-clusters.", rich_help_panel=CLUSTERS),
    embedding: str = typer.Option("hashed-tfidf", "--embedding", help="hashed-tfidf (no download), local:<alias> (a local model's llama.cpp embeddings, cached; 'local' = local-qwen-0.5b) or sentence-transformers:<model> (if installed).", rich_help_panel=CLUSTERS),
    concurrency: int = typer.Option(None, "--concurrency", help="Requests in flight at once."),
    path: bool = typer.Option(False, "--path", help="Print the routing state directory and exit.", rich_help_panel=OUTPUT),
    frontier: bool = typer.Option(False, "--frontier", help="Print the frontier: accuracy vs price of every single model, top-k majorities, the router along its budget, the -k auto plans (default marked *) and the calibrated cascade.", rich_help_panel=OUTPUT),
    png: str = typer.Option(None, "--png", metavar="FILE", help="Plot the frontier into a PNG file (needs the [plot] extra: matplotlib).", rich_help_panel=OUTPUT),
    as_json: bool = typer.Option(False, "--json", help="Print the profile report as one JSON object.", rich_help_panel=OUTPUT),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.", rich_help_panel=OUTPUT),
) -> None:
    """Profile models on a labelled task file: accuracy, stability, latency, cost,
    no-answer rate, pairwise error correlation and the per-cluster error profile Ψ.

    Results are stored in the data directory and feed 'fscale route' and '-k auto'.
    With no TASKS it prints what is stored.

    Examples:

      fscale profile --fit-clusters train.jsonl --clusters 20

      fscale profile val.jsonl --models fast-a,fast-b,slow-c --trials 3

      fscale profile val.jsonl --models new-model --resume --json

      fscale profile --frontier --png frontier.png
    """
    settings = load_settings_for_cli()
    with engine_facade(settings) as facade:
        routing = facade.routing
    if path:
        output.out.write(f"{routing.directory}\n")
        return
    console = stderr_console()
    if fit_clusters is not None:
        with _Progress("embed", show_progress(quiet, as_json)) as progress:
            fitted = routing.fit_clusters(fit_clusters, clusters, embedding,
                                          on_progress=progress, emit=progress.status)
        if not quiet and not as_json:
            console.print(f"fitted {fitted['clusters']} clusters ({embedding}) on "
                          f"{fitted['prompts']} prompts of {fit_clusters}")
            if fitted.get("embedded"):
                e = fitted["embedded"]
                console.print(f"embedded {e['new']} prompts ({e['tokens']} tokens in {e['seconds']:g}s), "
                              f"{e['cached']} from the cache")
            if fitted.get("categories"):
                c = fitted["categories"]
                console.print(f"category classifier: {c['known']} categories, "
                              f"{100 * c['cross_fitted_accuracy']:.0f}% right (cross-fitted): "
                              "prompts without a category are routed by the predicted one")
        if tasks is None:
            if as_json:
                print_json({"schema": 1, **fitted})
            return
    keys = None
    names: list[str] | None
    counts: dict[str, int] = {}
    if tasks is not None:
        from ..engine.session import Engine

        items = Engine.tasks(tasks)
        chosen = _select_models(settings, models, panel)
        names = [m.alias for m in chosen]
        keys = [t.key for t in items]

        async def go() -> dict[str, int]:
            with _Progress("profile", show_progress(quiet, as_json)) as progress:
                async with Engine(settings, on_status=progress.status) as engine:
                    return await engine.profile(items, chosen, trials=trials, resume=resume,
                                                on_progress=progress, concurrency=concurrency)

        counts = run(go())
        if not quiet and not as_json:
            console.print(f"asked {counts['asked']} ({counts['failed']} failed), "
                          f"skipped {counts['skipped']} already profiled")
        # Ψ's shrinkage is re-chosen on everything profiled so far (cross-fitted; cheap).
        knobs = routing.tune()
        if not quiet and not as_json:
            console.print(f"Ψ shrinkage: {knobs['smoothing']:g} pseudo-observations (cross-fitted on "
                          f"{knobs['smoothing_observations']} observations)")
        # -k auto's plans and the router's budgets, chosen on the profile (cross-fitted).
        try:
            planned = routing.replan()
        except UsageError as exc:
            planned = {"error": str(exc)}
        if not quiet and not as_json and planned:
            if "error" in planned:
                console.print(f"[yellow]-k auto not planned: {planned['error']}[/yellow]")
            else:
                d = planned["default"]
                rel = "" if d["relative_cost"] is None else f" ({d['relative_cost']:.2f}x the best single model)"
                console.print(f"-k auto planned on {planned['items']} items: default {d['plan']}, "
                              f"{d['accuracy']:.1%} at {d['calls']:.2f} calls per item{rel}")
    else:
        names = list(split_list(models) or ()) or None
    if frontier or png:
        from .frontier import print_frontier, write_png

        data = routing.frontier()
        if data is None:
            raise UsageError("nothing profiled yet: fscale profile TASKS.jsonl --models a,b")
        if png:
            write_png(data, png)
            if not quiet:
                console.print(f"frontier plotted in {png}")
        if as_json:
            print_json({"schema": 1, "frontier": data})
        elif frontier:
            print_frontier(data, stdout_console(fixed_width_when_piped=True))
        return
    report = routing.report(names, keys)
    report["calls"] = counts
    report["knobs"] = routing.knobs()
    if as_json:
        print_json({"schema": 1, **report})
    elif report["models"]:
        _print_profile(report)
    else:
        console.print("nothing profiled yet: fscale profile TASKS.jsonl --models a,b")
    if counts and counts["asked"] and counts["failed"] == counts["asked"]:
        raise typer.Exit(int(ExitCode.ALL_FAILED))


ROUTE_SCHEMA = 1


def route_json(routing: Any, question: str, context: str | None, lam: float,
               names: tuple[str, ...] | None, budget: Any = None,
               category: str | None = None) -> tuple[dict[str, Any], str]:
    """One question's routing as ``fscale route --json`` prints it (the MCP ``route`` tool
    returns the same), and why in words. With a ``budget`` λ comes from the profile."""
    text = question if not context else f"{question}\n\n{context}"
    choice, why, fitted = routing.route(text, lam, names, budget, category)
    return {"schema": ROUTE_SCHEMA, **choice, "clusters_fitted": fitted}, why


def _route_batch(routing: Any, path: str, lam: float, names: tuple[str, ...] | None,
                 budget: Any = None) -> int:
    """One JSON line per item, in input order; a bad line is an error line, not a stop."""
    from .common import read_batch_items

    def build(obj: dict[str, Any]) -> dict[str, Any]:
        context = obj.get("context")
        if context is not None and not isinstance(context, str):
            raise ValueError("'context' must be a string")
        category = obj.get("category")
        if category is not None and not isinstance(category, str):
            raise ValueError("'category' must be a string")
        question = obj["question"]
        return {"id": None if obj.get("id") is None else str(obj["id"]),
                "text": question if not context else f"{question}\n\n{context}",
                "category": category or None}

    items = read_batch_items(path, build)
    good = [i for i, item in enumerate(items) if not isinstance(item, Exception)]
    routed, fitted = routing.route_many([items[i]["text"] for i in good], lam, names, budget,
                                        [items[i]["category"] for i in good])
    choices = dict(zip(good, routed))
    lines = []
    for index, item in enumerate(items):
        if isinstance(item, Exception):
            lines.append({"schema": ROUTE_SCHEMA, "index": index, "id": None, "status": "error",
                          "model": None, "error": str(item)})
            continue
        lines.append({"schema": ROUTE_SCHEMA, "index": index, "id": item["id"], "status": "routed",
                      **choices[index], "clusters_fitted": fitted})
    import json

    output.out.write("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    output.out.flush()
    errors = len(items) - len(good)
    return int(ExitCode.DECIDED if not errors else ExitCode.ALL_FAILED if not good else ExitCode.NO_DECISION)


@guarded
def route(
    question: str = typer.Argument(None, help="The question to route.", show_default=False),
    context: str = typer.Option(None, "--context", "-c", help="Context text (part of what is embedded)."),
    lam: float = typer.Option(None, "--lambda", "-l", help="Cost weight λ: score = expected error + λ·cost (default 0, or what --budget implies)."),
    budget: str = typer.Option(None, "--budget", help="Spend at most this per item on average instead of giving λ: 0.7x (of the best single model's price) or 0.002 (USD); λ is chosen on the profile. Default: FSCALE_BUDGET or [routing] budget when --lambda is not given."),
    models: str = typer.Option(None, "--models", "-m", help="Only consider these models.", rich_help_panel=SELECT),
    category: str = typer.Option(None, "--category", help="The question's task category (e.g. law): a profiled category routes by category; without one it is predicted from the text when the training file had categories."),
    batch: str = typer.Option(None, "--batch", help="JSONL file of items ('-' = stdin; question, context?, id?, category?): one JSON line per item, in input order; an item whose category was profiled is routed by category, another by its predicted category (JSON routed_by).", rich_help_panel=OUTPUT),
    as_json: bool = typer.Option(False, "--json", help="Print the choice and the ranking as JSON.", rich_help_panel=OUTPUT),
) -> None:
    """Say which model a question would be routed to, and why.

    The question's cluster is found from the fitted clusters; each profiled model's error rate
    on that cluster (Ψ) plus λ·cost ranks the models. stdout gets the model alias (or JSON).
    With --batch the router is loaded once for every item; each output line is what --json
    prints for that item alone, plus index, id and status (routed, or error for a bad line).

    Examples:

      fscale route "What is the derivative of x^3?" --lambda 0.05

      fscale route "Is this clause enforceable?" --json | jq .ranking

      fscale route "Is this clause enforceable?" --category law --budget 0.7x

      fscale route --batch test.jsonl --lambda 0.05 > routes.jsonl

      fscale route --batch test.jsonl --budget 0.7x > routes.jsonl   # λ chosen on the profile
    """
    if batch is not None and (question is not None or context is not None or category is not None):
        raise UsageError("give a question or --batch FILE, not both (items carry their context "
                         "and category)")
    if batch is None and question is None:
        raise UsageError("missing QUESTION (or --batch FILE)")
    from ..engine.base.budget import configured_budget, parse_budget

    if budget is not None and lam is not None:
        raise UsageError("give --lambda or --budget, not both")
    names = split_list(models)
    with engine_facade() as engine:
        routing = engine.routing
        spend = (parse_budget(budget) if budget is not None
                 else configured_budget(engine.settings) if lam is None and not names else None)
    lam = 0.0 if lam is None else lam
    if batch is not None:
        raise typer.Exit(_route_batch(routing, batch, lam, names, spend))
    obj, why = route_json(routing, question, context, lam, names, spend, category or None)
    if as_json:
        print_json(obj)
        return
    if not obj["clusters_fitted"]:
        stderr_console().print("[yellow]no clusters fitted: every question is one cluster "
                               "(fscale profile --fit-clusters TRAIN.jsonl)[/yellow]")
    stderr_console().print(why)
    output.out.write(obj["model"] + "\n")


@guarded
def calibrate(
    tasks: str = typer.Argument(..., help="Labelled calibration task file (JSONL)."),
    alpha: float = typer.Option(None, "--alpha", help="Target risk: at most this share of answered items wrong; stored, '-k auto' then abstains unless confident. Adaptive mode without it: always answer (give --alpha to 'scale' per call). --stages: default 0.1."),
    delta: float = typer.Option(0.1, "--delta", help="The guarantee holds with probability ≥ 1 − δ (δ split over the stages)."),
    stages: str = typer.Option(None, "--stages", help="Calibrate a fixed cascade instead of the adaptive rule: cheapest first, route:N, a panel name, or a+b+c (e.g. route:3,strong)."),
    max_calls: int = typer.Option(4, "--max-calls", help="Adaptive: ask at most this many routed models per item.", rich_help_panel=ADAPTIVE),
    budget: str = typer.Option(None, "--budget", help="Adaptive: the most accurate stopping rule within this many calls per item on average, e.g. 2 (or 2calls); unlike scale/route --budget a bare number counts calls here. 0.7x or $0.002 state it in price instead (default: the most accurate).", rich_help_panel=ADAPTIVE),
    spread: float = typer.Option(10.0, "--spread", help="Adaptive: wrong answers spread over at most this many labels (the posterior's L).", rich_help_panel=ADAPTIVE),
    order: str = typer.Option("routed-then-best", "--order", help="Adaptive: routed-then-best (the best model on the prompt's cluster, then the best overall) | routed (the best on the cluster).", rich_help_panel=ADAPTIVE),
    signal: str = typer.Option("weighted", "--signal", help="--stages only. Confidence: agreement | votes | weighted | posterior."),
    lam: float = typer.Option(0.0, "--lambda", "-l", help="Cost weight λ for route:N stages."),
    concurrency: int = typer.Option(None, "--concurrency", help="Items in flight at once."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report without storing the thresholds."),
    force: bool = typer.Option(False, "--force", help="Store the thresholds even when no stage can answer (every -k auto call would abstain)."),
    as_json: bool = typer.Option(False, "--json", help="Print the calibration report as JSON.", rich_help_panel=OUTPUT),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.", rich_help_panel=OUTPUT),
) -> None:
    """Calibrate '-k auto' on a labelled file: when to stop asking models (adaptive), and
    thresholds with risk ≤ α for abstaining.

    Default (adaptive): asks the --max-calls routed models on every item, chooses the stopping
    threshold τ (stop once P(answer right) ≥ τ) and the number of models that give the best
    accuracy within --budget calls per item, and keeps every item's per-stage confidence so
    that 'scale -k auto --alpha A' abstains with a guarantee for any α. With --alpha the
    thresholds for it are stored and every '-k auto' call abstains unless confident.

    With --stages: a fixed cascade, one confidence threshold per stage such that, with
    probability ≥ 1 − δ, at most α of the answered items are wrong (Trust or Escalate:
    fixed-sequence testing with exact Clopper–Pearson bounds, δ/stages per stage).

    Examples:

      fscale calibrate cal.jsonl --budget 2

      fscale calibrate cal.jsonl --alpha 0.1 --delta 0.1 --stages route:3,strong

      fscale calibrate cal.jsonl --alpha 0.2 --stages cheap,strong --signal agreement --json
    """
    from ..engine.session import Engine

    settings = load_settings_for_cli()
    items = Engine.tasks(tasks)
    if stages is None:
        raise typer.Exit(_calibrate_adaptive(settings, items, alpha=alpha, delta=delta,
                                             max_calls=max_calls, budget=budget, spread=spread,
                                             order=order, lam=lam, concurrency=concurrency,
                                             dry_run=dry_run,
                                             force=force, as_json=as_json, quiet=quiet))
    alpha = 0.1 if alpha is None else alpha
    stage_list = [s for s in (split_list(stages) or ())]

    async def go() -> Any:
        with _Progress("calibrate", show_progress(quiet, as_json)) as progress:
            async with Engine(settings, on_status=progress.status) as engine:
                return await engine.calibrate(items, stage_list, alpha=alpha, delta=delta,
                                              signal=signal, lam=lam, on_progress=progress,
                                              concurrency=concurrency, store=not dry_run,
                                              force=force)

    report = run(go())
    stored = _stored(report, hint="or a larger --alpha / stronger stages")
    out = {"schema": 1, "mode": "cascade"} | report.to_dict() | {"stored": stored}
    if as_json:
        print_json(out)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("stage", "threshold", "reached", "answered", "coverage", "risk", "upper bound"):
        table.add_column(col)
    for r in out["stages"]:
        thr = "never answers" if r["threshold"] is None else f"{r['threshold']:.4f}"
        risk = "-" if r["risk"] is None else f"{r['risk']:.1%}"
        ub = "-" if r["upper_bound"] is None else f"{r['upper_bound']:.1%}"
        table.add_row(r["stage"], thr, str(r["reached"]), str(r["accepted"]), f"{r['coverage']:.1%}", risk, ub)
    console = stdout_console()
    console.print(table)
    risk = "-" if out["risk"] is None else f"{out['risk']:.1%}"
    console.print(f"total: coverage {out['coverage']:.1%}, empirical risk {risk} (α = {alpha:g}, "
                  f"δ = {delta:g}, signal {signal}), {out['calls_per_item']:.2f} calls per item",
                  soft_wrap=True)
    if stored:
        stderr_console().print(f"stored in {stored}")


def _stored(report: Any, *, hint: str) -> str | None:
    """Where the engine stored the calibration (None: a dry run, or it refused, said here)."""
    if report.refused:
        stderr_console().print("[yellow]no stage reached a threshold with risk ≤ α: stored, "
                               "every '-k auto' call would abstain. Not stored (use --force to "
                               f"store it anyway, {hint}).[/yellow]")
    return None if report.stored is None else str(report.stored)


def _calibrate_adaptive(settings: Settings, items: Any, *, alpha: float | None, delta: float,
                        max_calls: int, budget: str | None, spread: float, order: str,
                        lam: float,
                        concurrency: int | None, dry_run: bool, force: bool, as_json: bool,
                        quiet: bool) -> int:
    from ..engine.session import Engine

    async def go() -> Any:
        with _Progress("calibrate", show_progress(quiet, as_json)) as progress:
            async with Engine(settings, on_status=progress.status) as engine:
                return await engine.calibrate_adaptive(
                    items, max_calls=max_calls, budget=budget, alpha=alpha, delta=delta,
                    spread=spread, order=order, lam=lam, on_progress=progress,
                    concurrency=concurrency, store=not dry_run, force=force)

    report = run(go())
    stored = _stored(report, hint="a larger --alpha, or no --alpha")
    out = {"schema": 1} | report.to_dict() | {"stored": stored}
    if as_json:
        print_json(out)
        return 0
    console = stdout_console()
    from .render import plural

    console.print(f"adaptive -k auto on {out['items']} items: stop once P(right) ≥ {out['tau']:g}, "
                  f"at most {plural(out['stop_after'], 'model')} → accuracy {out['accuracy']:.1%} "
                  f"at {out['calls_per_item']:.2f} calls per item"
                  + (f" (budget {budget})" if budget is not None else ""), soft_wrap=True)
    if "stages" in out:
        risk = "-" if out["risk"] is None else f"{out['risk']:.1%}"
        thresholds = ", ".join("never" if r["threshold"] is None else f"{r['threshold']:.4f}"
                               for r in out["stages"])
        console.print(f"with α = {alpha:g} (δ = {delta:g}): thresholds {thresholds}; coverage "
                      f"{out['coverage']:.1%}, empirical risk {risk}; '-k auto' abstains below them",
                      soft_wrap=True)
    if stored:
        stderr_console().print(f"stored in {stored}")
    return 0


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)
    app.command("route")(route)
    app.command("calibrate")(calibrate)
