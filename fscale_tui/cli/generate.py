"""``fscale generate``: best-of-k with cross-evaluation, and test-time search strategies.

stdout is data (the selected output, or one JSON object per result with ``--json``); the
candidates, judge votes and search steps are shown on stderr as they happen.
"""

from __future__ import annotations

from typing import Any

import typer

from ..engine.base import output
from ..engine.base.errors import UsageError
from ..engine.strategies import names as strategy_names
from .common import (guarded, print_json, resolve_context, run,
                     show_progress, split_list, stderr_console)

#: Where this module's commands come in ``fscale --help`` (cli/__init__.py: commands).
HELP_ORDER = 20

#: The engine's strategy registry (this module is imported only when 'generate' runs).
STRATEGY_HELP = " | ".join(strategy_names()) + "."
SELECT = "Choosing models"
STRATEGY = "Strategy"
OUTPUT = "Output"


def _short(text: str | None, width: int = 60) -> str:
    from ..engine.base.redact import redact

    # Redacted before it is cut: a cut key is a prefix the redactor may no longer recognise.
    flat = " ".join((redact(text) or "").split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


class GeneratePrinter:
    """One line per candidate, judge vote and search step on stderr; silent when ``quiet``."""

    def __init__(self, console: Any, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet

    def __call__(self, event: Any) -> None:
        from rich.markup import escape

        from ..engine.base.events import (CandidateFailed, CandidateGenerated, GenerateStarted,
                                     Generated, JudgeVoted, StepScored)

        if self.quiet:
            return
        c = self.console
        if isinstance(event, GenerateStarted):
            judges = f"; judges {', '.join(event.judges)}" if event.judges else ""
            c.print(f"[dim]generate ({event.strategy}, k={event.k}): "
                    f"{', '.join(event.generators)}{judges}[/dim]")
            if event.judges_independent is False:
                c.print(judges_note(event.generators, event.same_family_judges), highlight=False)
        elif isinstance(event, CandidateGenerated):
            ans = f" answer={escape(event.answer)}" if event.answer else ""
            c.print(f"  [green]✎[/green] #{event.index} {event.model:<20} {event.latency_s:6.2f}s"
                    f"{ans}  [dim]{escape(_short(event.text))}[/dim]")
        elif isinstance(event, CandidateFailed):
            c.print(f"  [red]✗[/red] #{event.index} {event.model:<20} [red]{escape(event.error)}[/red]")
        elif isinstance(event, JudgeVoted):
            where = f"[{escape(event.match)}] " if event.match else ""
            if event.error:
                c.print(f"  [red]✗[/red] judge {event.judge:<16} {where}[red]{escape(event.error)}[/red]")
            elif event.score is not None or (event.choice_index is not None and len(event.order) == 1):
                score = "-" if event.score is None else f"{event.score:.2f}"
                c.print(f"  [cyan]⚖[/cyan] {event.judge:<16} scores #{event.choice_index} "
                        f"({event.choice_model}) {score}")
            elif event.choice_index is None:
                c.print(f"  [yellow]⚖[/yellow] {event.judge:<16} {where}[yellow]no valid choice[/yellow]"
                        f"  [dim]{escape(_short(event.raw))}[/dim]")
            else:
                order = ",".join(f"#{i}" for i in event.order)
                c.print(f"  [cyan]⚖[/cyan] {event.judge:<16} {where}→ #{event.choice_index} "
                        f"({event.choice_model})  [dim]saw {order}[/dim]")
        elif isinstance(event, StepScored):
            score = "-" if event.score is None else f"{event.score:.2f}"
            mark = "✓" if event.completed else ("•" if event.kept else "·")
            c.print(f"  [dim]{mark} step {event.iteration + 1} beam {event.beam} {event.model:<16} "
                    f"score {score}  {escape(_short(event.step, 50))}[/dim]")
        elif isinstance(event, Generated):
            c.print(summary(event.result))


def judges_note(generators: Any, same_family: Any) -> str:
    """The one line saying the judges are not independent of the generators."""
    gens = set(generators or ())
    who = ", ".join(f"{j} (a generator itself)" if j in gens else j for j in same_family)
    verb = "shares" if len(tuple(same_family)) == 1 else "share"
    return (f"[yellow]note:[/yellow] no judge of another family is available: {who} {verb} "
            "a family with a generator, so the judges are not independent "
            "(judges_independent: false)")


def summary(result: Any) -> str:
    """One line: who won, by which rule, at what cost (and gold checks when given)."""
    from .render import spent

    stats = spent(result)
    gold = ""
    if result.gold is not None:
        gold = f"; gold {result.gold}: selected {'✓' if result.correct else '✗'}, " \
               f"coverage {'✓' if result.coverage else '✗'}"
    if result.status == "all_failed":
        return f"[red]→ no output: every generator failed[/red]; {stats}"
    ans = f" answer={result.answer}" if result.answer else ""
    head = (f"[bold]→ #{result.winner_index} {result.winner_model}[/bold]{ans} "
            f"({result.selected_by})")
    if result.status != "decided":
        head = f"[yellow]→ no decision[/yellow], fallback #{result.winner_index} " \
               f"{result.winner_model} ({result.selected_by})"
    return f"{head}; {stats}{gold}"


def _request(question: str, opts: dict[str, Any]) -> Any:
    from ..engine.requests import generate_request

    return generate_request(question, **opts)


def _run_one(request: Any, *, as_json: bool, quiet: bool) -> int:
    from ..engine.base.events import Generated
    from ..engine.session import Engine
    from .render import StatusPrinter

    console = stderr_console()
    # Candidates, judges and first-run progress: on a terminal even with --json.
    show = show_progress(quiet, as_json)
    printer = GeneratePrinter(console, quiet=not show)
    status = StatusPrinter(console, show)

    async def go() -> Any:
        async with Engine(on_status=status) as engine:
            result = None
            async for event in engine.generate_events(request):
                printer(event)
                if isinstance(event, Generated):
                    result = event.result
            return result

    try:
        result = run(go())
    finally:
        status.close()
    # With --json and no terminal on stderr nothing is printed there but errors (README): the
    # JSON carries "judges_independent": false; on a terminal the event lines said it already.
    if as_json:
        print_json(result.to_dict())
    elif result.output is not None and result.status == "decided":
        output.out.write(result.output.rstrip("\n") + "\n")
    return int(result.exit_code)


def _batch_requests(path: str, defaults: dict[str, Any]) -> Any:
    """The batch's items, decoded line by line by the one input schema (engine/items.py)."""
    from ..engine.items import generate_items

    return generate_items(path, defaults)


def _run_batch(path: str, defaults: dict[str, Any], *, concurrency: int | None, quiet: bool,
               ray: str | None = None, actors: int | None = None,
               resume: str | None = None) -> int:
    from ..engine.session import Engine
    from .common import batch_output
    from .render import StatusPrinter

    items = _batch_requests(path, defaults)
    console = stderr_console()

    with batch_output(items, "output", resume, quiet=quiet) as (out, todo):
        if ray is not None:
            from .common import run_on_ray

            todo = list(todo)
            out.items = todo
            run_on_ray("generate", todo, out, address=ray, actors=actors,
                       concurrency=concurrency)
            return out.exit_code
        status = StatusPrinter(console, not quiet)
        noted = False

        async def go() -> None:
            nonlocal noted
            async with Engine(on_status=status) as engine:
                async for index, outcome in engine.generate_batch(todo, concurrency=concurrency):
                    out.add(index, outcome)
                    if not quiet and not isinstance(outcome, Exception):
                        console.print(f"[dim]item {out.batch_index(index)}:[/dim] "
                                      + summary(outcome))
                        if outcome.judges_independent is False and not noted:
                            noted = True  # once per batch: the same catalogue picked every judge
                            console.print(judges_note(outcome.generators,
                                                      outcome.same_family_judges),
                                          highlight=False)

        try:
            run(go())
        finally:
            status.close()
    if not quiet:
        console.print(f"[dim]{out.summary()}[/dim]")
    return out.exit_code


@guarded
def generate(
    question: str = typer.Argument(None, help="The task every generator answers.", show_default=False),
    k: int = typer.Option(None, "-k", help="Candidates (beam/dvts: N beams). Default: the panel size / 3 (4 for beam, dvts).", rich_help_panel=SELECT),
    strategy: str = typer.Option("judge", "--strategy", "-s", help=STRATEGY_HELP, rich_help_panel=STRATEGY),
    judges: int = typer.Option(None, "--judges", "-j", help="judge: number of judges (default k); weighted: verifier calls per candidate (1); tournament: judgments per match (2).", rich_help_panel=STRATEGY),
    models: str = typer.Option(None, "--models", "-m", help="Generator models, comma-separated (cycled when k is larger).", rich_help_panel=SELECT),
    panel: str = typer.Option(None, "--panel", "-p", help="Named panel of generators (see 'fscale panels').", rich_help_panel=SELECT),
    judge_models: str = typer.Option(None, "--judge-models", help="Judge / verifier models, comma-separated (default: chosen outside the generators' families).", rich_help_panel=SELECT),
    context: str = typer.Option(None, "--context", "-c", help="Context text (goes in the system message). Without it, piped stdin is the context (empty input is an error); --context '' asks without context."),
    context_file: str = typer.Option(None, "--context-file", "-f", help="Read the context from a file ('-' = stdin)."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Reply length limit per call.", envvar="FSCALE_MAX_TOKENS"),
    temperature: float = typer.Option(None, "--temperature", "-t", help="Sampling temperature (default: 0 for distinct judge-strategy models, 0.7 for samples).", rich_help_panel=STRATEGY),
    max_steps: int = typer.Option(None, "--max-steps", help="beam/dvts: search iterations (default 8).", rich_help_panel=STRATEGY),
    width: int = typer.Option(None, "--width", help="beam/dvts: M, expansions per kept beam (default 2).", rich_help_panel=STRATEGY),
    verifier: str = typer.Option(None, "--verifier", help="weighted: score (1-10, default) | yes (P(yes) from logprobs).", rich_help_panel=STRATEGY),
    seed: int = typer.Option(None, "--seed", help="Make the judges' shuffles reproducible.", rich_help_panel=STRATEGY),
    gold: str = typer.Option(None, "--gold", help="Expected answer: also report coverage and whether the selection is correct.", rich_help_panel=OUTPUT),
    batch: str = typer.Option(None, "--batch", help="JSONL file of items ('-' = stdin): one JSON result per line.", rich_help_panel=OUTPUT),
    resume: str = typer.Option(None, "--resume", metavar="OUT", help="--batch: skip the items that already have a result line in OUT (the output of a stopped run) and append the others' results to OUT.", rich_help_panel=OUTPUT),
    concurrency: int = typer.Option(None, "--concurrency", min=1, help="Batch items in flight at once (per Ray actor with --ray).", rich_help_panel=OUTPUT),
    ray: str = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Run the --batch on Ray Data: alone, a local cluster; or a cluster ADDRESS. Needs the [ray] extra.", rich_help_panel=OUTPUT),
    actors: int = typer.Option(None, "--actors", min=1, help="--ray: actors in the pool (default 2).", rich_help_panel=OUTPUT),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", rich_help_panel=OUTPUT),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Nothing on stderr but errors.", rich_help_panel=OUTPUT),
) -> None:
    """Generate k answers and select the best: judges from other families, or another strategy.

    [b]judge[/b] (default): k candidates from different families; judges from other families see them shuffled, under neutral labels; majority wins.
    [b]vote[/b]: self-consistency over final answers. [b]weighted[/b]: verifier scores summed per answer.
    [b]usc[/b]: one call picks the most consistent. [b]tournament[/b]: pairwise knockout, sides swapped.
    [b]beam[/b] / [b]dvts[/b]: step-wise search scored by an LLM judge.
    stdout gets the selected output (JSON with --json); candidates and votes go to stderr.

    Examples:

      fscale generate "Write a regex for ISO dates" -k 3 --json | jq .output

      fscale generate "What is 17*23?" -s vote -k 5 --gold 391

      cat notes.md | fscale generate "Summarise in one sentence" -s tournament -k 4

      fscale generate --batch items.jsonl -s beam -k 4 --width 2 --max-steps 6 > results.jsonl

      fscale generate --batch items.jsonl -s beam -k 4 --resume results.jsonl   # after a stop

    Exit codes: 0 selected, 2 usage error, 3 no decision (no valid judge vote or final answer;
    the fallback is in the JSON), 4 every generator failed / no provider, 130 interrupted,
    143 terminated (SIGTERM). --batch: 3 when some line was bad (one error line each) or
    undecided, 2 when every line was.
    """
    opts: dict[str, Any] = {
        "k": k, "strategy": strategy, "judges": judges, "models": split_list(models),
        "panel": panel, "judge_models": split_list(judge_models), "max_tokens": max_tokens,
        "temperature": temperature, "max_steps": max_steps, "width": width, "gold": gold,
        "seed": seed, "verifier": verifier,
    }
    if batch is not None:
        if question is not None:
            raise UsageError("give a question or --batch, not both")
        if context is not None or context_file is not None:
            raise UsageError("with --batch, give each item its own \"context\"")
        raise typer.Exit(_run_batch(batch, opts, concurrency=concurrency, quiet=quiet, ray=ray,
                                    actors=actors, resume=resume))
    if ray is not None:
        raise UsageError("--ray runs a --batch; give --batch FILE")
    if resume is not None:
        raise UsageError("--resume finishes a --batch; give --batch FILE")
    if question is None:
        raise UsageError("missing QUESTION (or --batch FILE)")
    request = _request(question, {**opts, "context": resolve_context(context, context_file)})
    raise typer.Exit(_run_one(request, as_json=as_json, quiet=quiet))


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
