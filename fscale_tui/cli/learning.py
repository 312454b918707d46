"""``fscale history``, ``fscale ratings``, ``fscale feedback`` and ``fscale evolve``.

Learning from deployment (design §7): every scale call is logged in the data directory and
rated; feedback on a call id outweighs consensus; evolve turns ratings into the panel that
``scale`` uses. stdout is data (tables, diffs, or JSON with ``--json``); notes go to stderr.
"""

from __future__ import annotations

import time
from typing import Any

import typer

from ..engine.base import output
from ..engine.base.errors import UsageError
from .common import engine_facade, guarded, print_json, split_list, stdout_console

#: Where this module's commands come in ``fscale --help`` (cli/__init__.py: commands).
HELP_ORDER = 40

history_app = typer.Typer(invoke_without_command=True)


def _ago(ts: float | None) -> str:
    if ts is None:
        return "-"
    dt = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if dt >= size:
            return f"{dt / size:.0f}{unit} ago"
    return f"{dt:.0f}s ago"


# -- history -----------------------------------------------------------------------------------
@history_app.callback()
@guarded
def history(ctx: typer.Context,
            limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many recent calls."),
            grep: str = typer.Option(None, "--grep", "-g", help="Only calls whose id, item id, question, answer or status contains this text."),
            as_json: bool = typer.Option(False, "--json", help="Print a JSON list on stdout.")) -> None:
    """Past calls from the call log, newest first: id, time, decision, members, feedback.

    Every scale call is logged in the data directory (turn it off with log_calls = false;
    keep only hashes with log_text = false or 'scale --no-log').

    Examples:

      fscale history --limit 5

      fscale history show 20250101-120000-1a2b3c4d --json
    """
    if ctx.invoked_subcommand is not None:
        return
    with engine_facade() as engine:
        rows = engine.calls.history(limit, text=grep)
    if as_json:
        print_json(rows)
        return
    if not rows:
        output.err.write("fscale: the call log is empty (run 'fscale scale ...' first)\n")
        return
    for r in rows:
        answer = r["answer"] if r["answer"] is not None else f"({r['status']})"
        fb = f"  feedback: {','.join(r['feedback'])}" if r["feedback"] else ""
        q = (r["question"] or f"#{r['question_hash']}").replace("\n", " ")
        q = q if len(q) <= 48 else q[:47] + "…"
        output.out.write(f"{r['id']}  {r['time']}  {r['kind']:<8} {answer:<14} "
                         f"[{', '.join(r['members'])}]  {q}{fb}\n")


@history_app.command("show")
@guarded
def history_show(call_id: str = typer.Argument(..., metavar="ID", help="A call id (see 'fscale history'), or a batch item's id when only one call has it."),
                 as_json: bool = typer.Option(False, "--json", help="Print the call as JSON.")) -> None:
    """One logged call: question, every reply (members and challenger), decision, feedback.

    Example:

      fscale history show 20250101-120000-1a2b3c4d
    """
    with engine_facade() as engine:
        item = engine.calls.call(call_id)
    if as_json:
        print_json({"schema": 1, **item})
        return
    out = output.out
    out.write(f"id:        {item['id']}  ({item['kind']}, {item['time']})\n")
    out.write(f"question:  {item['question'] if item['question'] is not None else '(not stored) #' + str(item['question_hash'])}\n")
    if item["context_hash"]:
        ctx = item["context"]
        shown = "(not stored)" if ctx is None else (ctx if len(ctx) <= 200 else ctx[:199] + "…")
        out.write(f"context:   {shown}  #{item['context_hash']}\n")
    out.write(f"labels:    {', '.join(item['labels'])}\n")
    conf = f"{item['confidence']:.0%}" if item["confidence"] is not None else "-"
    out.write(f"decision:  {item['answer'] if item['answer'] is not None else '-'}  "
              f"({item['status']}, confidence {conf})\n")
    origin = (item.get("extra") or {}).get("origin")
    if origin:  # who asked, when it was not the CLI (e.g. "mcp": an agent)
        out.write(f"origin:    {origin}\n")
    usage = (item.get("extra") or {}).get("usage") or {}
    if usage:
        cost = usage.get("cost_usd")
        out.write(f"usage:     {usage.get('prompt_tokens', 0)} prompt + "
                  f"{usage.get('completion_tokens', 0)} completion tokens"
                  + (f", ${cost:.6f}" if cost is not None else "") + "\n")
    if item.get("spend"):
        from ..engine.base.spend import Spend

        out.write(f"spend:     {Spend.from_dict(item['spend']).detail()}\n")
    for r in item["replies"]:
        lat = f"{r['latency_s']:.2f}s" if r["latency_s"] is not None else "-"
        what = r["answer"] if r["answer"] is not None else (r["error"] or r["status"])
        raw = (r["raw"] or "").strip().replace("\n", " ")
        raw = raw if len(raw) <= 60 else raw[:59] + "…"
        out.write(f"  {r['role']:<10} {r['model']:<24} {str(what):<14} {r['status']:<10} {lat:>7}  {raw}\n")
    for f in item["feedback"]:
        state = f.get("state") or "current"
        note = "" if state == "current" else f"  ({state}, no longer counts)"
        out.write(f"feedback:  {f['kind']} {f['label'] or ''} {f['prefer'] or ''} "
                  f"{('over ' + f['over']) if f['over'] else ''}{note}\n")


@history_app.command("export")
@guarded
def history_export(
    out: str = typer.Argument(..., metavar="FILE", help="Where to write the replay JSONL."),
    replay: bool = typer.Option(False, "--replay", help="Write replay lines for a 'type = \"replay\"' provider."),
    limit: int = typer.Option(100000, "--limit", "-n", min=1, help="At most this many recent calls."),
) -> None:
    """Export logged calls as a replay file: every member's reply, keyed by prompt hash.

    A provider declared with type = "replay" and path = FILE then answers those prompts
    offline, exactly as the models did (calls logged with --no-log have no text and are skipped).

    Example:

      fscale history export --replay replay.jsonl
    """
    if not replay:
        raise UsageError("say what to export: --replay (the only format so far)")
    with engine_facade() as engine:
        written, read = engine.export_replay(out, limit)
    output.err.write(f"fscale: wrote {written} replay lines from {read} calls to {out}\n")


# -- ratings -----------------------------------------------------------------------------------
def text_plot(series: dict[str, list[float]], *, width: int = 64, height: int = 14) -> list[str]:
    """A small line chart in plain characters: one marker letter per model."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return []
    lo = min(min(v) for v in series.values())
    hi = max(max(v) for v in series.values())
    if hi - lo < 1e-9:
        hi, lo = hi + 1, lo - 1
    grid = [[" "] * width for _ in range(height)]
    markers = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    legend = []
    for n, (model, values) in enumerate(series.items()):
        mark = markers[n % len(markers)]
        legend.append(f"{mark} = {model} ({values[-1]:.0f})")
        for x in range(width):
            # Each model's own history is stretched over the width (x = share of its updates).
            i = min(len(values) - 1, round(x * (len(values) - 1) / max(1, width - 1)))
            y = round((values[i] - lo) / (hi - lo) * (height - 1))
            grid[height - 1 - y][x] = mark
    lines = []
    for row, cells in enumerate(grid):
        label = hi - row * (hi - lo) / (height - 1)
        lines.append(f"{label:7.0f} |" + "".join(cells))
    lines.append(" " * 8 + "+" + "-" * width)
    lines.append(" " * 9 + "oldest → newest update of each model")
    return lines + legend


@guarded
def ratings(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list on stdout."),
    plot: bool = typer.Option(False, "--plot", help="Draw each model's rating history in the terminal."),
    models: str = typer.Option(None, "--models", "-m", help="Only these models (comma-separated)."),
) -> None:
    """Model ratings learnt from logged calls: accuracy estimate ± sd, Elo rating, calls, feedback.

    "accuracy" is the label-free estimate that decisions follow (evolve, the shadow
    challengers, --tie-break rating): the chance that a reply of the model is right, fitted
    jointly over every logged vote (Dawid–Skene EM; calls with feedback count with their known
    label), ± its posterior sd. It does not trust a bad majority: agreeing with models that are
    often wrong earns little. "rating" is Elo against the leave-one-out majority of the other
    replies (zero-sum; feedback 4×), shown for reference. Rows are sorted by accuracy.

    Examples:

      fscale ratings

      fscale ratings --plot --models fast-a,fast-b

      fscale ratings --json | jq '.[0].estimate'
    """
    wanted = split_list(models)
    with engine_facade() as engine:
        table = engine.calls.ratings()
        estimates = engine.calls.reliability()
        hist = engine.calls.rating_history(wanted) if plot else {}

    def accuracy(model: str) -> float:
        e = estimates.get(model)
        return e.accuracy if e is not None else -1.0

    rows = sorted(table.values(), key=lambda r: (-accuracy(r.model), -r.rating, r.model))
    if wanted:
        rows = [r for r in rows if r.model in wanted]
    if as_json:
        print_json([{"schema": 1, **r.to_dict(),
                     "estimate": estimates[r.model].to_dict() if r.model in estimates else None}
                    for r in rows])
        return
    if not rows:
        output.err.write("fscale: no ratings yet: they are learnt from logged 'scale' calls\n")
        return
    if plot:
        series = {m: [rating for _, rating in hist.get(m, [])] for m in [r.model for r in rows]}
        for line in text_plot(series):
            output.out.write(line + "\n")
        return
    from rich.table import Table

    tbl = Table(box=None, pad_edge=False)
    # The estimate's answer rate and the Elo σ are in --json; the table fits 80 columns.
    tbl.add_column("model", overflow="fold")
    for col in ("accuracy ± sd", "rating", "calls", "agreement", "feedback", "last seen"):
        tbl.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        agree = f"{r.agreement:.0%}" if r.agreement is not None else "-"
        e = estimates.get(r.model)
        acc = f"{e.accuracy:.1%} ±{e.sd:.1%}" if e is not None else "-"
        tbl.add_row(r.model, acc, f"{r.rating:.0f}", str(r.calls), agree, str(r.feedback),
                    _ago(r.last_seen))
    stdout_console().print(tbl)


# -- feedback ----------------------------------------------------------------------------------
@guarded
def feedback(
    call_id: str = typer.Argument(..., metavar="ID", help="The call's id (from --json output or 'fscale history')."),
    confirm: bool = typer.Option(False, "--confirm", help="The decision was right."),
    reject: bool = typer.Option(False, "--reject", help="The decision was wrong (with two labels, the other one was right)."),
    override: str = typer.Option(None, "--override", metavar="LABEL", help="The right label was LABEL."),
    prefer: str = typer.Option(None, "--prefer", metavar="MODEL", help="MODEL's answer was the better one."),
    over: str = typer.Option(None, "--over", metavar="MODEL", help="With --prefer: better than MODEL's (default: than everyone who disagreed)."),
    undo: bool = typer.Option(False, "--undo", help="Take back the current feedback on the call (the latest one); ratings are recomputed without it."),
    as_json: bool = typer.Option(False, "--json", help="Print the rating changes as JSON."),
) -> None:
    """Tell fscale whether a past call was right; every model that answered it is re-rated.

    Feedback counts 4× a consensus game and reaches the shadow challenger too. It is recorded
    in the call log ('fscale history show ID'). An unknown id is an error (exit 2).

    The latest verdict on a call replaces the earlier one: --confirm, --reject and --override
    are one verdict (on the label), --prefer another (on the models). A replaced or undone
    feedback stays in the log but no longer counts: ratings are recomputed from the log.

    Examples:

      fscale feedback 20250101-120000-1a2b3c4d --confirm

      fscale feedback 20250101-120000-1a2b3c4d --override VULNERABLE

      fscale feedback 20250101-120000-1a2b3c4d --prefer fast-a --over fast-b

      fscale feedback 20250101-120000-1a2b3c4d --undo
    """
    given = [name for name, on in (("--confirm", confirm), ("--reject", reject),
                                   ("--override", override is not None),
                                   ("--prefer", prefer is not None), ("--undo", undo)) if on]
    if len(given) != 1:
        raise UsageError("give exactly one of --confirm, --reject, --override LABEL, --prefer MODEL, "
                         "--undo" + (f" (got {', '.join(given)})" if given else ""))
    if over is not None and prefer is None:
        raise UsageError("--over only goes with --prefer")
    kind = given[0].lstrip("-")
    with engine_facade() as engine:
        if undo:
            outcome = engine.calls.undo_feedback(call_id)
        else:
            outcome = engine.calls.feedback(call_id, kind, label=override, prefer=prefer, over=over)
        if as_json:
            print_json({"schema": 1, **outcome})
            return
        ratings = engine.calls.ratings() if outcome["changes"] else {}
        estimates = engine.calls.reliability() if outcome["changes"] else {}
    _print_changes(outcome["changes"], ratings, estimates)
    if undo:
        output.err.write(f"fscale: feedback '{outcome['undone']['kind']}' "
                         f"({_feedback_text(outcome['undone'])}) on {outcome['id']} undone; "
                         "ratings recomputed from the log\n")
        return
    what = outcome["truth"] or outcome["wrong"] or ", ".join(">".join(p) for p in outcome["pairs"])
    replaced = outcome.get("replaced")
    note = (f", replacing '{replaced['kind']}' ({_feedback_text(replaced)}); ratings recomputed "
            "from the log") if replaced else ""
    output.err.write(f"fscale: feedback '{kind}' ({what}) recorded for {call_id}{note}\n")


def _print_changes(changes: dict[str, float], ratings: dict[str, Any],
                   estimates: dict[str, Any]) -> None:
    """What the feedback moved, one labelled row per model: the Elo change and the rating it
    moved to, and the accuracy estimate (what decisions follow) as it stands now."""
    if not changes:
        return
    width = max(28, *(len(m) for m in changes))
    output.out.write(f"{'model':<{width}} {'Elo change':>10} {'Elo now':>8}  accuracy ± sd\n")
    for model, delta in sorted(changes.items(), key=lambda kv: -kv[1]):
        r, e = ratings.get(model), estimates.get(model)
        now = f"{r.rating:.1f}" if r is not None else "-"
        acc = f"{e.accuracy:.1%} ±{e.sd:.1%}" if e is not None else "-"
        output.out.write(f"{model:<{width}} {delta:>+10.1f} {now:>8}  {acc}\n")


def _feedback_text(f: dict[str, Any]) -> str:
    if f.get("prefer"):
        return f"{f['prefer']} over {f['over']}" if f.get("over") else f"{f['prefer']} preferred"
    return f.get("label") or f["kind"]


# -- evolve ------------------------------------------------------------------------------------
@guarded
def evolve(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show the proposal (the default)."),
    apply: bool = typer.Option(False, "--apply", help="Write the proposed panel to config.toml."),
    panel: str = typer.Option(None, "--panel", "-p", help="Panel to evolve (default: the default panel setting)."),
    min_calls: int = typer.Option(30, "--min-calls", min=0, help="Logged calls a model needs to earn a seat."),
    size: int = typer.Option(None, "--size", min=1, help="Seats (default: the current panel's size)."),
    as_json: bool = typer.Option(False, "--json", help="Print the proposal as JSON."),
) -> None:
    """Propose the champion panel from the evidence, show the diff, and with --apply write it.

    The usable models with the best label-free accuracy estimate ('fscale ratings'; ranked by
    its lower bound, mean − 1 sd) and at least --min-calls rated replies, one per family
    first; a member keeps its seat unless a candidate is clearly better (1 point). After
    --apply, 'fscale scale' (and --panel NAME) use the new panel.

    Examples:

      fscale evolve

      fscale evolve --apply --min-calls 50

      fscale evolve --panel fast3 --apply --json
    """
    if dry_run and apply:
        raise UsageError("give --dry-run or --apply, not both")
    with engine_facade() as engine:
        settings = engine.settings
        proposal = engine.propose_evolve(panel, min_calls=min_calls, size=size)
        if apply and proposal.changed:
            engine.apply_evolve(proposal)
    name = proposal.name
    if as_json:
        print_json({"schema": 1, **proposal.to_dict()})
    else:
        _print_diff(proposal)
    if not apply:
        output.err.write("fscale: dry run: nothing written (use --apply to write the panel to config.toml)\n")
    elif proposal.applied:
        output.err.write(f"fscale: panel {name!r} written to {settings.paths.config_file}\n")
    else:
        output.err.write(f"fscale: panel {name!r} is already the champion panel: nothing to write\n")


def _print_diff(p: Any) -> None:
    out = output.out
    out.write(f"panel {p.name}: {', '.join(p.current)}  →  {', '.join(p.proposed)}"
              f"   (models need ≥ {p.min_calls} calls)\n")
    rows = [("-", m) for m in p.removed] + [("+", m) for m in p.added] + \
           [("=", m) for m in p.proposed if m in p.current]
    for sign, m in rows:
        e = p.evidence(m)
        est = e.get("estimate")
        acc = (f"accuracy {est['accuracy']:6.1%} ±{est['sd']:<5.1%}" if est is not None
               else f"accuracy {'-':>6}  {'':<5}")
        out.write(f"  {sign} {m:<28} {acc} rating {e['rating']:7.1f} ±{e['sigma']:<4.0f} "
                  f"calls {e['calls']:<6} feedback {e['feedback']}\n")
    if not p.changed:
        out.write("  (no change)\n")


def register(app: typer.Typer) -> None:
    app.add_typer(history_app, name="history")
    app.command("ratings")(ratings)
    app.command("feedback")(feedback)
    app.command("evolve")(evolve)
