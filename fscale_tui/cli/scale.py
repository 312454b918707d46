"""``fscale scale`` (one question or a JSONL batch) and ``fscale verify``."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from ..engine.errors import ExitCode, UsageError
from .common import (guarded, print_json, read_text_file, resolve_context, run, split_list,
                     stderr_console, stdin_has_data)

SELECT = "Choosing models"
OUTPUT = "Output"

DEFAULT_VERIFY_QUESTION = (
    "Does the Output contain any claim that is not supported by the Source? "
    "Answer YES if at least one claim is unsupported or contradicted, NO if every claim is supported."
)


def _parse_k(k: str | None) -> int | None:
    if k is None:
        return None
    if k == "auto":
        raise UsageError("-k auto (routing + calibrated cascade) is not yet available")
    try:
        value = int(k)
    except ValueError:
        raise UsageError(f"-k must be a number or 'auto', not {k!r}") from None
    if value < 1:
        raise UsageError("-k must be at least 1")
    return value


def _run_one(request: Any, *, as_json: bool, quiet: bool) -> int:
    from ..engine.events import Decided
    from ..engine.session import Engine
    from .render import EventPrinter

    printer = EventPrinter(stderr_console(), quiet=quiet or as_json)

    async def go() -> Any:
        async with Engine() as engine:
            result = None
            async for event in engine.scale_events(request):
                printer(event)
                if isinstance(event, Decided):
                    result = event.result
            return result

    result = run(go())
    if as_json:
        print_json(result.to_dict())
    elif result.answer is not None:
        sys.stdout.write(result.answer + "\n")
    return int(result.exit_code)


def _batch_requests(path: str, defaults: dict[str, Any]) -> list[Any]:
    from ..engine.vote import ScaleRequest

    text = read_text_file(path, "batch file")
    items: list[Any] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            answers = obj.get("answers", defaults["answers"])
            if isinstance(answers, str):
                answers = split_list(answers)
            if not answers:
                raise ValueError("no answers (give them in the item or with --answers)")
            if not isinstance(obj.get("question"), str):
                raise ValueError("no question")
            models = obj.get("models", defaults["models"])
            req = ScaleRequest(
                question=obj["question"], answers=tuple(str(a) for a in answers),
                context=obj.get("context"), id=str(obj["id"]) if obj.get("id") is not None else None,
                models=tuple(models) if models else None,
                panel=obj.get("panel", defaults["panel"]),
                k=obj.get("k", defaults["k"]), tie_break=defaults["tie_break"])
            req.validate()
            items.append(req)
        except (ValueError, TypeError, UsageError) as exc:
            items.append(UsageError(f"line {lineno}: {exc}"))
    if not items:
        raise UsageError(f"batch file {path!r} has no items")
    return items


def _run_batch(path: str, defaults: dict[str, Any], *, concurrency: int | None, quiet: bool) -> int:
    from ..engine.session import Engine

    items = _batch_requests(path, defaults)
    console = stderr_console()
    show_progress = not quiet and console.is_terminal

    async def go() -> list[str]:
        statuses: list[str] = []
        pending: dict[int, dict[str, Any]] = {}
        next_out = 0
        progress = None
        if show_progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            progress = Progress("[progress.description]{task.description}", BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                transient=True)
            progress.start()
            task = progress.add_task("scale", total=len(items))
        try:
            async with Engine() as engine:
                async for index, outcome in engine.scale_batch(items, concurrency=concurrency):
                    if isinstance(outcome, Exception):
                        item = items[index]
                        obj = {"index": index, "id": getattr(item, "id", None), "status": "error",
                               "answer": None, "error": str(outcome)}
                        statuses.append("error")
                    else:
                        obj = {"index": index, **outcome.to_dict()}
                        statuses.append(outcome.status)
                    pending[index] = obj
                    # Results go out in input order, as soon as the next one is ready.
                    while next_out in pending:
                        print_json(pending.pop(next_out))
                        next_out += 1
                    if progress is not None:
                        progress.advance(task)
        finally:
            if progress is not None:
                progress.stop()
        return statuses

    statuses = run(go())
    if all(s == "decided" for s in statuses):
        return int(ExitCode.DECIDED)
    if all(s in ("all_failed", "error") for s in statuses):
        return int(ExitCode.ALL_FAILED)
    return int(ExitCode.NO_DECISION)


@guarded
def scale(
    question: str = typer.Argument(None, help="The question every model answers.", show_default=False),
    answers: str = typer.Option(None, "--answers", "-a", help="Allowed labels, comma-separated, e.g. YES,NO."),
    k: str = typer.Option(None, "-k", help="Number of models from the default panel.", rich_help_panel=SELECT),
    panel: str = typer.Option(None, "--panel", "-p", help="Named panel (see 'fscale panels').", rich_help_panel=SELECT),
    models: str = typer.Option(None, "--models", "-m", help="Explicit models, comma-separated aliases.", rich_help_panel=SELECT),
    context: str = typer.Option(None, "--context", "-c", help="Context text (goes in the system message)."),
    context_file: str = typer.Option(None, "--context-file", "-f", help="Read the context from a file ('-' = stdin)."),
    tie_break: str = typer.Option(None, "--tie-break", help="none (default: a tie is no decision, exit 3) | rating | order.", envvar="FSCALE_TIE_BREAK"),
    batch: str = typer.Option(None, "--batch", help="JSONL file of items ('-' = stdin): one JSON result per line.", rich_help_panel=OUTPUT),
    concurrency: int = typer.Option(None, "--concurrency", help="Batch items in flight at once.", rich_help_panel=OUTPUT),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", rich_help_panel=OUTPUT),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Nothing on stderr but errors.", rich_help_panel=OUTPUT),
) -> None:
    """Ask several models the same question; the majority label wins.

    Stops as soon as the leader cannot be caught and cancels the remaining requests.
    stdout gets the answer (or JSON with --json); votes and progress go to stderr.

    Examples:

      fscale scale "Is this safe? Answer SAFE or VULNERABLE" -a SAFE,VULNERABLE --context-file x.py --json

      cat review.txt | fscale scale "Is this review positive?" -a POSITIVE,NEGATIVE -k 5

      fscale scale --batch items.jsonl -a YES,NO > results.jsonl

    Exit codes: 0 decided, 2 usage error, 3 no decision (tie or no valid vote),
    4 every member failed / no provider usable, 130 interrupted.
    """
    from ..engine.vote import ScaleRequest

    labels = split_list(answers)
    kk = _parse_k(k)
    if batch is not None:
        if question is not None:
            raise UsageError("give a question or --batch, not both")
        defaults = {"answers": labels, "models": split_list(models), "panel": panel, "k": kk,
                    "tie_break": tie_break}
        raise typer.Exit(_run_batch(batch, defaults, concurrency=concurrency, quiet=quiet))
    if question is None:
        raise UsageError("missing QUESTION (or --batch FILE); see 'fscale scale --help'")
    if not labels:
        raise UsageError("missing --answers, e.g. --answers YES,NO")
    request = ScaleRequest(question=question, answers=labels,
                           context=resolve_context(context, context_file),
                           models=split_list(models), panel=panel, k=kk, tie_break=tie_break)
    raise typer.Exit(_run_one(request, as_json=as_json, quiet=quiet))


@guarded
def verify(
    source: str = typer.Option(..., "--source", "-s", help="The source text the draft must be faithful to."),
    draft_file: str = typer.Option(None, "--draft", "-d", help="The draft to check (default: stdin)."),
    question: str = typer.Option(None, "--question", help="Ask something else about Source and Output (answers YES/NO)."),
    k: str = typer.Option(None, "-k", help="Number of models.", rich_help_panel=SELECT),
    panel: str = typer.Option(None, "--panel", "-p", help="Named panel.", rich_help_panel=SELECT),
    models: str = typer.Option(None, "--models", "-m", help="Explicit models, comma-separated.", rich_help_panel=SELECT),
    tie_break: str = typer.Option(None, "--tie-break", help="none | rating | order.", envvar="FSCALE_TIE_BREAK"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", rich_help_panel=OUTPUT),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Nothing on stderr but errors.", rich_help_panel=OUTPUT),
) -> None:
    """Check a draft against its source: does it make unsupported claims? (YES/NO)

    The draft is read from stdin (or --draft FILE); the source and the draft go to the models
    as context ("Source:" and "Output:"). stdout gets YES (unsupported claims found) or NO.

    Example:

      cat draft.md | fscale verify --source paper.txt --json
    """
    from ..engine.vote import ScaleRequest

    src = read_text_file(source, "source file")
    if draft_file is not None:
        draft = read_text_file(draft_file, "draft file")
    elif stdin_has_data():
        draft = sys.stdin.read()
    else:
        raise UsageError("no draft: pipe it on stdin or give --draft FILE")
    if not draft.strip():
        raise UsageError("the draft is empty")
    request = ScaleRequest(question=question or DEFAULT_VERIFY_QUESTION, answers=("YES", "NO"),
                           context=f"Source:\n{src}\n\nOutput:\n{draft}",
                           models=split_list(models), panel=panel, k=_parse_k(k),
                           tie_break=tie_break)
    raise typer.Exit(_run_one(request, as_json=as_json, quiet=quiet))


def register(app: typer.Typer) -> None:
    app.command("scale")(scale)
    app.command("verify")(verify)
