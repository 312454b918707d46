"""``fscale scale`` (one question or a JSONL batch) and ``fscale verify``."""

from __future__ import annotations

from typing import Any

import typer

from ..engine.base import output
from ..engine.base.errors import UsageError
from ..engine.requests import is_auto, parse_k, scale_request, verify_request
from .common import (event_loop, guarded, print_json, read_stdin, read_text_file,
                     resolve_context, run, show_progress, split_list, stderr_console,
                     stdin_has_data)

#: Where this module's commands come in ``fscale --help`` (cli/__init__.py: commands).
HELP_ORDER = 10

SELECT = "Choosing models"
OUTPUT = "Output"
LEARNING = "Learning"

def _engine_settings(learning: dict[str, bool] | None) -> Any:
    """Settings with --no-challenger / --no-log applied (None = nothing to override)."""
    if not learning:
        return None
    from .common import load_settings_for_cli

    return load_settings_for_cli().with_overrides(**learning)


def _learning_flags(no_challenger: bool, no_log: bool) -> dict[str, bool]:
    flags: dict[str, bool] = {}
    if no_challenger:
        flags["challenger"] = False
    if no_log:
        flags["log_text"] = False
    return flags


def _run_one(request: Any, *, as_json: bool, quiet: bool,
             learning: dict[str, bool] | None = None) -> int:
    from ..engine.base.events import Decided
    from ..engine.session import Engine
    from .render import EventPrinter, StatusPrinter, print_notes

    console = stderr_console()
    # Votes and first-run progress: on a terminal even with --json (stdout has the JSON).
    show = show_progress(quiet, as_json)
    printer = EventPrinter(console, quiet=not show)
    status = StatusPrinter(console, show)

    def emit(result: Any) -> None:
        # The decision goes to stdout the moment it is known; the call then finishes its
        # bookkeeping (the shadow challenger's grace period, the call log) before exiting.
        # Notes are for people: with --json into a pipe they are in the JSON only.
        if show:
            print_notes(console, result)
        if as_json:
            print_json(result.to_dict())
        elif result.answer is not None:
            output.out.write(result.answer + "\n")
            output.out.flush()

    async def go() -> Any:
        async with Engine(_engine_settings(learning), on_status=status) as engine:
            result = None
            async for event in engine.scale_events(request):
                printer(event)
                if isinstance(event, Decided):
                    result = event.result
                    emit(result)
            return result

    try:
        with event_loop(go()) as start:  # go() runs from here: the walk stays in this module
            result = start()
    finally:
        status.close()
    return int(result.exit_code)


def _batch_requests(path: str, defaults: dict[str, Any]) -> Any:
    """The batch's items, decoded line by line by the one input schema (engine/items.py);
    their ``labels`` fill as they are read."""
    from ..engine.items import scale_items

    return scale_items(path, defaults)


def _remaining(items: Any, out: Any) -> int | None:
    """Items the bar counts: the batch file's (None for stdin) less those ``--resume`` skips."""
    total = getattr(items, "total", None)
    return None if total is None else max(0, total - out.previous)


def _run_batch(path: str, defaults: dict[str, Any], *, concurrency: int | None, quiet: bool,
               learning: dict[str, bool] | None = None, ray: str | None = None,
               actors: int | None = None, resume: str | None = None) -> int:
    from ..engine.session import Engine
    from .common import batch_output
    from .render import BatchProgress, StatusPrinter, print_notes

    items = _batch_requests(path, defaults)
    console = stderr_console()
    with batch_output(items, "answer", resume, quiet=quiet) as (out, todo):
        if ray is not None:
            from .common import run_on_ray

            todo = list(todo)
            out.items = todo
            run_on_ray("scale", todo, out, address=ray, actors=actors, concurrency=concurrency,
                       overrides=learning)
        else:
            async def go() -> None:
                with BatchProgress(console, _remaining(items, out), "scale",
                                   enabled=not quiet) as progress:
                    status = StatusPrinter(console, not quiet, display=progress.display)
                    async with Engine(_engine_settings(learning), on_status=status) as engine:
                        async for index, outcome in engine.scale_batch(todo,
                                                                       concurrency=concurrency):
                            out.add(index, outcome)
                            if not quiet and not isinstance(outcome, Exception) and index == 0:
                                print_notes(console, outcome)
                            progress.advance()

            run(go())
    if not quiet:
        console.print(f"[dim]{out.summary()}[/dim]")
    return out.exit_code


@guarded
def scale(
    question: str = typer.Argument(None, help="The question every model answers.", show_default=False),
    answers: str = typer.Option(None, "--answers", "-a", help="Allowed labels, comma-separated, e.g. YES,NO."),
    k: str = typer.Option(None, "-k", help="Number of models from the default panel, or 'auto' (the routed best models, one more only while the evidence is not enough; see 'fscale calibrate').", rich_help_panel=SELECT),
    panel: str = typer.Option(None, "--panel", "-p", help="Named panel (see 'fscale panels').", rich_help_panel=SELECT),
    models: str = typer.Option(None, "--models", "-m", help="Explicit models, comma-separated aliases.", rich_help_panel=SELECT),
    context: str = typer.Option(None, "--context", "-c", help="Context text (goes in the system message). Without it, piped stdin is the context (empty input is an error); --context '' asks without context."),
    context_file: str = typer.Option(None, "--context-file", "-f", help="Read the context from a file ('-' = stdin)."),
    tie_break: str = typer.Option(None, "--tie-break", help="none (default: a tie is no decision, exit 3) | rating | order.", envvar="FSCALE_TIE_BREAK"),
    alpha: float = typer.Option(None, "--alpha", help="-k auto: abstain (exit 3) unless the answer passes the threshold calibrated for this risk, e.g. 0.1 (needs 'fscale calibrate'). Without it -k auto always answers.", rich_help_panel=SELECT),
    budget: str = typer.Option(None, "--budget", help="-k auto: the most an item may cost on average: 0.7x (of the best single model's price) or 0.002 (USD). The plan is chosen on the profile so the expected spend fits; the JSON has budget, expected_cost_usd and cost_usd. Default: FSCALE_BUDGET or [routing] budget, else the plan as accurate as the best affordable one within noise.", rich_help_panel=SELECT),
    batch: str = typer.Option(None, "--batch", help="JSONL file of items ('-' = stdin): one JSON result per line.", rich_help_panel=OUTPUT),
    resume: str = typer.Option(None, "--resume", metavar="OUT", help="--batch: skip the items that already have a result line in OUT (the output of a stopped run) and append the others' results to OUT.", rich_help_panel=OUTPUT),
    concurrency: int = typer.Option(None, "--concurrency", min=1, help="Batch items in flight at once (per Ray actor with --ray).", rich_help_panel=OUTPUT),
    ray: str = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Run the --batch on Ray Data: alone, a local cluster; or a cluster ADDRESS (e.g. auto, ray://head:10001). Needs the [ray] extra.", rich_help_panel=OUTPUT),
    actors: int = typer.Option(None, "--actors", min=1, help="--ray: actors in the pool (default 2).", rich_help_panel=OUTPUT),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", rich_help_panel=OUTPUT),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Nothing on stderr but errors.", rich_help_panel=OUTPUT),
    no_challenger: bool = typer.Option(False, "--no-challenger", help="Ask no shadow challenger outside the panel. Without it, shadows cost at most [learning] shadow_budget (0.1 = 10% extra calls over the decision calls of the last 200 calls; FSCALE_SHADOW_BUDGET), and only while an outsider's place is uncertain.", rich_help_panel=LEARNING),
    no_log: bool = typer.Option(False, "--no-log", help="Keep no text of this call in the call log (hashes, votes and the decision only).", rich_help_panel=LEARNING),
) -> None:
    """Ask several models the same question; the majority label wins.

    Stops as soon as the leader cannot be caught and cancels the remaining requests.
    stdout gets the answer (or JSON with --json); votes and progress go to stderr.

    Examples:

      fscale scale "Is this safe? Answer SAFE or VULNERABLE" -a SAFE,VULNERABLE --context-file x.py --json

      cat review.txt | fscale scale "Is this review positive?" -a POSITIVE,NEGATIVE -k 5

      fscale scale --batch items.jsonl -a YES,NO > results.jsonl

      fscale scale --batch items.jsonl -a YES,NO --resume results.jsonl   # after a stop: the rest

      fscale scale --batch items.jsonl -a YES,NO --ray --actors 4 > results.jsonl

      fscale scale "Is 91 prime?" -a YES,NO -k auto --json   # routed models, as few as needed

      fscale scale "Is 91 prime?" -a YES,NO -k auto --alpha 0.1   # exit 3 = abstained

      fscale scale --batch items.jsonl -k auto --budget 0.5x   # at most half the best model's price

      FSCALE_SHADOW_BUDGET=0.05 fscale scale --batch items.jsonl -a YES,NO   # or [learning] shadow_budget in config.toml

    --json gives each call's spend: "spend": {"decision": {calls, tokens, cost_usd},
    "shadow": {...}, "cost_usd_total"}; a batch ends with one stderr line (calls, USD,
    accuracy when the items carry a "label").

    Exit codes: 0 decided, 2 usage error (e.g. --alpha outside (0, 1), --alpha without
    a calibration, --budget without a profile), 3 no decision (tie, no valid vote, or -k auto
    --alpha abstained), 4 every member failed / no provider usable, 130 interrupted,
    143 terminated (SIGTERM). --batch: 0 every item decided, 3 some line was bad (one error
    line each) or undecided, 4 every item failed, 2 every line was bad.
    """
    labels = split_list(answers)
    kk: Any = "auto" if is_auto(k) else parse_k(k)
    if batch is not None:
        if question is not None:
            raise UsageError("give a question or --batch, not both")
        defaults = {"answers": labels, "models": split_list(models), "panel": panel, "k": kk,
                    "tie_break": tie_break, "alpha": alpha, "budget": budget}
        raise typer.Exit(_run_batch(batch, defaults, concurrency=concurrency, quiet=quiet,
                                    learning=_learning_flags(no_challenger, no_log), ray=ray,
                                    actors=actors, resume=resume))
    if ray is not None:
        raise UsageError("--ray runs a --batch; give --batch FILE")
    if resume is not None:
        raise UsageError("--resume finishes a --batch; give --batch FILE")
    if question is None:
        raise UsageError("missing QUESTION (or --batch FILE)")
    if not labels:
        raise UsageError("missing --answers, e.g. --answers YES,NO")
    request = scale_request(question, labels, context=resolve_context(context, context_file),
                            models=split_list(models), panel=panel, k=kk, tie_break=tie_break,
                            alpha=alpha, budget=budget)
    raise typer.Exit(_run_one(request, as_json=as_json, quiet=quiet,
                              learning=_learning_flags(no_challenger, no_log)))


@guarded
def verify(
    source: str = typer.Option(..., "--source", "-s", help="The source text the draft must be faithful to."),
    draft_file: str = typer.Option(None, "--draft", "-d", help="The draft to check (default: stdin)."),
    question: str = typer.Option(None, "--question", help="Ask something else about Source and Output (answers YES/NO)."),
    k: str = typer.Option(None, "-k", help="Number of models, or 'auto' (route + calibrated cascade).", rich_help_panel=SELECT),
    panel: str = typer.Option(None, "--panel", "-p", help="Named panel.", rich_help_panel=SELECT),
    models: str = typer.Option(None, "--models", "-m", help="Explicit models, comma-separated.", rich_help_panel=SELECT),
    tie_break: str = typer.Option(None, "--tie-break", help="none | rating | order.", envvar="FSCALE_TIE_BREAK"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", rich_help_panel=OUTPUT),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Nothing on stderr but errors.", rich_help_panel=OUTPUT),
    no_challenger: bool = typer.Option(False, "--no-challenger", help="Do not ask a shadow challenger outside the panel.", rich_help_panel=LEARNING),
    no_log: bool = typer.Option(False, "--no-log", help="Keep no text of this call in the call log (hashes, votes and the decision only).", rich_help_panel=LEARNING),
) -> None:
    """Check a draft against its source: does it make unsupported claims? (YES/NO)

    The draft is read from stdin (or --draft FILE); the source and the draft go to the models
    as context ("Source:" and "Output:"). stdout gets YES (unsupported claims found) or NO.

    Example:

      cat draft.md | fscale verify --source paper.txt --json
    """
    src = read_text_file(source, "source file")
    if draft_file is not None:
        draft = read_text_file(draft_file, "draft file")
    elif stdin_has_data():
        draft = read_stdin("draft")
    else:
        raise UsageError("no draft: pipe it on stdin or give --draft FILE")
    request = verify_request(src, draft, question=question, models=split_list(models),
                             panel=panel, k=k, tie_break=tie_break)
    raise typer.Exit(_run_one(request, as_json=as_json, quiet=quiet,
                              learning=_learning_flags(no_challenger, no_log)))


def register(app: typer.Typer) -> None:
    app.command("scale")(scale)
    app.command("verify")(verify)
