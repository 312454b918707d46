"""``fscale mcp``: fscale's tools for agents, served over the Model Context Protocol on stdio.

An agent (any MCP client: a coding agent, a desktop assistant, an IDE) starts ``fscale mcp`` as
a subprocess and calls its tools: ``scale``, ``verify``, ``generate``, ``route``, ``health`` and
``models``. Each tool builds its request with the function the CLI command of the same name
uses and returns the object that command's ``--json`` prints, built by the same function: as
structured content, and as the very JSON text (``health`` and ``models``, whose ``--json`` is a
list, put it under ``"result"`` in the structured content, the SDK's rule for a non-object
output). ``_meta.fscale`` carries the exit code the CLI would have ended with.

- Votes, candidates, judge ballots and probes are progress notifications as they arrive (the
  engine's event stream); the call stops reporting the moment it has decided.
- Cancelling a call (``notifications/cancelled``) cancels its engine call: the HTTP requests in
  flight are closed, as after an early decision. A call that has decided returns at once; its
  bookkeeping (the shadow challenger's grace, the call log) finishes in the background, and
  the server waits for it before it exits.
- Every call is logged like a CLI call, with ``extra.origin = "mcp"`` (``fscale history show``).
- Errors are tool errors (``isError``) with the CLI's one-line message and the exit code's name;
  bad arguments are one of them and never stop the server. Every string a tool returns or
  reports passes the redactor (``engine/redact.py``).

stdout is the protocol: the SDK serves it from a private descriptor and points fd 1 at stderr,
so nothing else (a library's print, a child process) can corrupt it. The SDK (the ``[mcp]``
extra) is imported only when the server starts: ``fscale mcp --help`` and every other command
run without it. This module deliberately has no ``from __future__ import annotations``: the
SDK reads the tools' signatures (defined inside :func:`build_server`) as real types.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import typer

from ..engine.base import output
from ..engine.base.errors import ExitCode, FscaleError, UsageError
from .common import guarded

#: Where this module's commands come in ``fscale --help`` (cli/__init__.py: commands).
HELP_ORDER = 80

#: The call log's ``extra.origin`` of every call made through this server.
ORIGIN = "mcp"

INSTRUCTIONS = (
    "fscale asks several LLMs the same question and turns their answers into one more reliable "
    "answer. Use `scale` to classify (the models vote on one of your labels; read `answer`, "
    "`confidence`, `status`), `verify` to check a draft against its source (YES = it makes "
    "unsupported claims), `generate` for best-of-k free text judged by other models, `route` to "
    "see which model suits a question, `health` and `models` for what is available. Every "
    "result is the object `fscale <tool> --json` prints; `status` other than `decided` means "
    "no decision (a tie, no valid vote, abstained, or every model failed)."
)


#: The generate strategies, for the tool's description (written out: the registry imports
#: the HTTP stack, which would double the server's start-up; a test keeps the two equal).
STRATEGIES = ("How the best candidate is selected: judge (default; judges from other families "
              "see the candidates shuffled and pick one), vote (self-consistency over final "
              "answers), weighted (verifier scores summed per answer), usc (one call picks the "
              "most consistent), tournament (pairwise knockout), beam or dvts (step-wise search "
              "scored by an LLM judge).")


# -- what every tool shares (no SDK needed: the tests call these directly) --------------------
def exit_name(code: ExitCode | int) -> str:
    """``ExitCode.USAGE_ERROR`` -> ``"usage_error"``."""
    return ExitCode(int(code)).name.lower()


def error_text(exc: BaseException) -> tuple[str, ExitCode]:
    """The CLI's one-line message for ``exc`` (redacted) and the exit code it would end with."""
    from ..engine.base.redact import redact

    if isinstance(exc, FscaleError):
        message, code = str(exc), exc.exit_code
    else:
        message, code = f"internal error: {type(exc).__name__}: {exc}", ExitCode.INTERNAL_ERROR
    return redact(" ".join(message.split())) or "", ExitCode(int(code))


def validation_message(tool: str, errors: list[dict[str, Any]]) -> str:
    """Pydantic's errors for a tool's arguments as one line, per argument (never the values)."""
    found: dict[str, list[str]] = {}
    for err in errors:
        loc = err.get("loc") or ()
        name = str(loc[0]) if loc else "arguments"
        msg = str(err.get("msg", "invalid"))
        if msg not in found.setdefault(name, []):
            found[name].append(msg)
    parts = [f"{name}: {' or '.join(msgs)}" for name, msgs in found.items()]
    return f"bad arguments for {tool}: " + "; ".join(parts)


def budget_option(budget: str | float | None) -> dict[str, Any]:
    """``budget`` for ``scale_request``, as the CLI's ``--budget`` takes it: USD per item
    (``0.002``) or relative to the best single model (``0.7x``). It is checked by the engine's
    own parser here, so a bad one is the CLI's usage error before any model is asked."""
    if budget is None:
        return {}
    from ..engine.base.budget import parse_budget

    return {"budget": parse_budget(budget).text}


def vote_line(event: Any) -> str | None:
    """A settled seat of a vote as one progress message (None: not a settled seat)."""
    from ..engine.base.events import Cancelled, VoteFailed, VoteReceived

    if isinstance(event, VoteReceived):
        answer = event.answer if event.answer is not None else "no answer"
        return f"{event.model}: {answer} ({event.latency_s:.2f} s)"
    if isinstance(event, VoteFailed):
        return f"{event.model}: failed ({event.kind}: {_short(event.error)})"
    if isinstance(event, Cancelled):
        return f"{event.model}: cancelled ({event.reason})"
    return None


def generate_line(event: Any) -> str | None:
    """A candidate, a judge's ballot or a search step as one progress message."""
    from ..engine.base.events import CandidateFailed, CandidateGenerated, JudgeVoted, StepScored

    if isinstance(event, CandidateGenerated):
        answer = f", answer {event.answer}" if event.answer else ""
        return f"candidate #{event.index} from {event.model} ({event.latency_s:.2f} s{answer})"
    if isinstance(event, CandidateFailed):
        return f"candidate #{event.index} from {event.model}: failed ({event.kind})"
    if isinstance(event, JudgeVoted):
        if event.error:
            return f"judge {event.judge}: failed ({_short(event.error)})"
        if event.score is not None:
            return f"judge {event.judge}: #{event.choice_index} scores {event.score:.2f}"
        if event.choice_index is None:
            return f"judge {event.judge}: no valid choice"
        return f"judge {event.judge}: #{event.choice_index} ({event.choice_model})"
    if isinstance(event, StepScored):
        score = "-" if event.score is None else f"{event.score:.2f}"
        return f"step {event.iteration + 1}, beam {event.beam}, {event.model}: score {score}"
    return None


def _short(text: str | None, width: int = 120) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


class Progress:
    """Progress notifications for one tool call: one per settled vote, candidate, ballot or
    probe; ``total`` when it is known (the seats started so far, the models probed). Stops at
    ``close()`` (the call has decided: its request is answered). A client that asked for no
    progress (no token) gets none; a failing notification never fails the call."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.sent = 0
        self.closed = ctx is None

    def close(self) -> None:
        self.closed = True

    async def send(self, message: str, total: int | None = None) -> None:
        if self.closed:
            return
        from ..engine.base.redact import redact

        self.sent += 1
        try:
            await self.ctx.report_progress(self.sent, total, redact(message))
        except Exception:  # the client went away: the call goes on (or is cancelled)
            pass


class Calls:
    """The engine calls in flight. Each runs in an asyncio task of its own, so that a client's
    cancellation cancels it once and its clean-up (HTTP requests cancelled, the engine closed)
    runs to the end; a scale call that has decided answers at once and finishes its
    bookkeeping (challenger, call log) in the background, which :meth:`drain` waits for."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    async def run(self, body: Callable[["asyncio.Future[Any]"], Awaitable[Any]]) -> Any:
        """``body(decided)`` either sets ``decided`` (then goes on in the background) or
        returns the result; its errors are raised here."""
        loop = asyncio.get_running_loop()
        decided: asyncio.Future[Any] = loop.create_future()
        task = loop.create_task(body(decided))
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        try:
            await asyncio.wait([decided, task], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            await _shielded(asyncio.wait([task]))
            raise
        if decided.done():
            return decided.result()
        return task.result()

    def _finished(self, task: "asyncio.Task[Any]") -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failure after the answer was sent is not news

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


async def _shielded(aw: Awaitable[Any]) -> Any:
    """Await ``aw`` even though the calling request was cancelled (the SDK cancels through
    anyio cancel scopes, which would interrupt the clean-up at its first await)."""
    import anyio

    with anyio.CancelScope(shield=True):
        return await aw


async def open_engine() -> Any:
    """An engine for one call, built in a thread (it reads config.toml and state files)."""
    from ..engine.session import Engine

    return await asyncio.to_thread(lambda: Engine(origin=ORIGIN))


async def scale_call(calls: Calls, request: Any, progress: Progress
                     ) -> tuple[dict[str, Any], ExitCode, list[str]]:
    """One scale (or verify) call: the object ``--json`` prints, at the moment of decision, its
    exit code, and the notes the CLI prints for people (e.g. "-k 5: only 3 usable models")."""
    from ..engine.base.events import Decided, VoteStarted

    async def body(decided: "asyncio.Future[Any]") -> None:
        engine = await open_engine()
        seats = 0
        async with engine:
            async for event in engine.scale_events(request):
                if isinstance(event, VoteStarted):
                    seats += 1
                elif isinstance(event, Decided):
                    progress.close()
                    if not decided.done():
                        decided.set_result((event.result.to_dict(), event.result.exit_code,
                                            list(event.result.notes)))
                else:
                    line = vote_line(event)
                    if line is not None:
                        await progress.send(line, seats)

    return await calls.run(body)


async def generate_call(calls: Calls, request: Any, progress: Progress) -> tuple[dict[str, Any], ExitCode]:
    from ..engine.base.events import Generated

    async def body(decided: "asyncio.Future[Any]") -> tuple[dict[str, Any], ExitCode]:
        engine = await open_engine()
        result = None
        async with engine:
            async for event in engine.generate_events(request):
                if isinstance(event, Generated):
                    result = event.result
                else:
                    line = generate_line(event)
                    if line is not None:
                        await progress.send(line)
        assert result is not None
        return result.to_dict(), result.exit_code

    return await calls.run(body)


async def health_call(calls: Calls, models: list[str] | None, panel: str | None,
                      progress: Progress) -> tuple[list[dict[str, Any]], ExitCode]:
    from .catalog import health_json, health_ok

    async def body(decided: "asyncio.Future[Any]") -> tuple[list[dict[str, Any]], ExitCode]:
        engine = await open_engine()
        probes = []
        async with engine:
            targets = await asyncio.to_thread(engine.catalog.probe_targets, list(models or ()),
                                              panel)
            async for probe in engine.health_events(targets):
                probes.append(probe)
                latency = "" if probe.latency_s is None else f" ({probe.latency_s:.2f} s)"
                await progress.send(f"{probe.model}: {probe.status}{latency}", len(targets))
        rows = health_json(probes, targets)
        return rows, ExitCode.DECIDED if health_ok(rows) else ExitCode.ALL_FAILED

    return await calls.run(body)


def route_sync(question: str, context: str | None, lam: float,
               models: list[str] | None) -> dict[str, Any]:
    from .common import engine_facade
    from .routing import route_json

    with engine_facade() as engine:
        routing = engine.routing
    obj, _why = route_json(routing, question, context, lam, tuple(models) if models else None)
    return obj


def models_sync(usable_only: bool) -> list[dict[str, Any]]:
    from .catalog import model_rows
    from .common import engine_facade

    with engine_facade() as engine:
        return model_rows(engine, usable_only)


def labels_of(answers: list[str] | str) -> tuple[str, ...] | str:
    """``answers`` as the CLI takes them: a list, or the comma-separated text."""
    return answers if isinstance(answers, str) else tuple(str(a) for a in answers)


# -- the server -------------------------------------------------------------------------------
def build_server(calls: Calls | None = None) -> Any:
    """The MCP server with fscale's tools (imports the SDK)."""
    from contextlib import asynccontextmanager
    from typing import Annotated, Literal

    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.shared.exceptions import MCPError
    from mcp.types import CallToolResult, TextContent, ToolAnnotations
    from pydantic import Field, ValidationError
    from typing_extensions import NotRequired, TypedDict

    from .. import __version__
    from ..engine.base.redact import redact, redact_tree
    from ..engine.requests import MAX_K, generate_request, scale_request, verify_request
    from .common import flush_storage_warnings, json_text

    calls = calls or Calls()

    # -- results ------------------------------------------------------------------------------
    def result(obj: Any, code: ExitCode, notes: list[str] | None = None, *,
               wrap: bool = False) -> CallToolResult:
        """The CLI's ``--json`` text as content and the same object as structured content;
        ``_meta.fscale``: the CLI's exit code, and the notes it prints on stderr."""
        text = json_text(obj)
        meta: dict[str, Any] = {"exit_code": int(code), "exit": exit_name(code)}
        if notes:
            meta["notes"] = [redact(note) for note in notes]
        try:
            data = json.loads(text)
        except ValueError:  # the redactor cut through JSON syntax (never seen): redact the tree
            data = redact_tree(obj)
        return CallToolResult(content=[TextContent(type="text", text=text)],
                              structured_content={"result": data} if wrap else data,
                              _meta={"fscale": meta})

    def failure(exc: BaseException) -> CallToolResult:
        message, code = error_text(exc)
        return CallToolResult(
            content=[TextContent(type="text", text=f"fscale: error: {message} "
                                                   f"({exit_name(code)}, exit code {int(code)})")],
            is_error=True,
            _meta={"fscale": {"exit_code": int(code), "exit": exit_name(code),
                              "error": message}})

    async def guard(work: Callable[[], Awaitable[CallToolResult]]) -> CallToolResult:
        """Every error of a tool becomes a tool error; cancellation goes through. Warnings
        about state files (e.g. one moved aside) go to stderr, the client's log, as the CLI's do."""
        try:
            return await work()
        except Exception as exc:
            return failure(exc)
        finally:
            flush_storage_warnings()

    # -- output schemas (what the CLI's --json prints; extra fields are allowed) -------------
    class Vote(TypedDict):
        model: str
        answer: str | None
        status: Annotated[str, Field(description="answered | no_answer | failed | replaced | "
                                                 "cancelled | pending (a challenger)")]
        latency_s: float | None
        error: str | None
        substitute_for: str | None
        prompt_tokens: int | None
        completion_tokens: int | None
        cost_usd: float | None

    class ScaleOutput(TypedDict):
        """What `fscale scale --json` prints (and `verify --json`)."""

        schema: int
        id: Annotated[str, Field(description="The call id (fscale history show ID)")]
        item_id: str | None
        answer: Annotated[str | None, Field(description="The winning label; null without a decision")]
        confidence: Annotated[float | None, Field(description="The winner's share of valid votes")]
        status: Annotated[str, Field(description="decided | tie | no_votes | all_failed | abstained")]
        votes: list[Vote]
        counts: dict[str, int]
        valid_votes: int
        members: list[str]
        calls_made: int
        usage: dict[str, Any]
        cost_usd: float | None
        elapsed_s: float
        decided_early: bool
        tied: list[str]
        tie_broken_by: str | None
        challenger: Vote | None
        challenger_calls: int
        challengers: list[Vote]
        abstained: NotRequired[bool]
        answered_by_stage: NotRequired[int | None]
        stages: NotRequired[list[dict[str, Any]]]
        calibrated: NotRequired[bool | None]
        signal: NotRequired[str | None]
        route: NotRequired[dict[str, Any] | None]

    class GenerateOutput(TypedDict):
        """What `fscale generate --json` prints."""

        schema: int
        id: str
        item_id: str | None
        strategy: str
        status: Annotated[str, Field(description="decided | no_votes | all_failed")]
        output: Annotated[str | None, Field(description="The selected candidate's text")]
        answer: str | None
        winner_model: str | None
        winner_index: int | None
        all_outputs: list[dict[str, Any]]
        judge_votes: list[dict[str, Any]]
        counts: dict[str, float]
        selected_by: str
        tied: list[int | str]
        calls_made: int
        usage: dict[str, Any]
        cost_usd: float | None
        elapsed_s: float
        generators: list[str]
        judges: list[str]
        judges_independent: bool | None
        steps: int | None

    class RouteOutput(TypedDict):
        """What `fscale route --json` prints."""

        schema: int
        model: Annotated[str, Field(description="The model the question is routed to")]
        cluster: int | None
        ranking: list[dict[str, Any]]
        clusters_fitted: bool

    class Probe(TypedDict):
        schema: int
        model: str
        status: Annotated[str, Field(description="ok | slow | rate_limited | dead | unavailable | "
                                                 "error | no_key")]
        latency_s: float | None
        detail: str

    class HealthOutput(TypedDict):
        """`fscale health --json` (a list) under "result"."""

        result: list[Probe]

    class Model(TypedDict):
        schema: int
        alias: str
        provider: str
        id: str
        tier: str
        family: str
        cost: float
        usable: bool
        why_not: str | None
        health: str | None

    class ModelsOutput(TypedDict):
        """`fscale models --json` (a list) under "result"."""

        result: list[Model]

    # -- arguments ----------------------------------------------------------------------------
    Question = Annotated[str, Field(description="The question every model answers.")]
    Answers = Annotated[list[str] | str, Field(
        description='The allowed labels, at least two: ["YES", "NO"] (or "YES,NO").')]
    ContextText = Annotated[str | None, Field(
        description="Context the models read with the question (a document, code, a review).")]
    K = Annotated[int | Literal["auto"] | None, Field(
        description=f"How many models vote (1-{MAX_K}; default: the configured k, 3), or 'auto': "
                    "the routed best model first, more only while the evidence is not enough.")]
    Models = Annotated[list[str] | None, Field(
        description="Explicit models by alias (see the models tool); each votes once.")]
    Panel = Annotated[str | None, Field(description="A named panel instead of the default one.")]
    TieBreak = Annotated[Literal["none", "rating", "order"] | None, Field(
        description="none (default): a tie is no decision; rating: the better-rated member's "
                    "label; order: the panel's listed order.")]

    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
    asks_models = ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                  idempotent_hint=False, open_world_hint=True)

    @asynccontextmanager
    async def lifespan(_server: Any) -> Any:
        try:
            yield {}
        finally:
            await _shielded(calls.drain())

    class Server(MCPServer):
        async def call_tool(self, name: str, arguments: dict[str, Any],
                            context: Any = None) -> Any:
            """Bad arguments and unknown tools as the CLI words a usage error, and every
            result through the redactor."""
            try:
                out = await super().call_tool(name, arguments, context)
            except MCPError:
                raise
            except ToolError as exc:
                if isinstance(exc.__cause__, ValidationError):
                    return failure(UsageError(validation_message(name, exc.__cause__.errors())))
                if self._tool_manager.get_tool(name) is None:
                    known = ", ".join(t.name for t in self._tool_manager.list_tools())
                    return failure(UsageError(f"no tool {name!r}; the tools are {known}"))
                return failure(exc.__cause__ or exc)
            if isinstance(out, CallToolResult):
                for block in out.content:
                    if isinstance(block, TextContent):
                        block.text = redact(block.text) or ""
                if out.structured_content is not None:
                    out.structured_content = redact_tree(out.structured_content)
            return out

    server = Server("fscale", version=__version__, instructions=INSTRUCTIONS,
                    lifespan=lifespan, log_level="WARNING")

    # -- tools --------------------------------------------------------------------------------
    @server.tool(annotations=asks_models)
    async def scale(
        question: Question,
        answers: Answers,
        context: ContextText = None,
        k: K = None,
        models: Models = None,
        panel: Panel = None,
        tie_break: TieBreak = None,
        alpha: Annotated[float | None, Field(
            description="k='auto' only: abstain (status abstained) unless the answer passes "
                        "the threshold calibrated for this risk, e.g. 0.1 (needs `fscale "
                        "calibrate`).")] = None,
        budget: Annotated[str | float | None, Field(
            description="k='auto' only: the spend per item, in USD (0.002) or relative to the "
                        "best single model (\"0.7x\"), as the CLI's --budget: the plan is "
                        "chosen on the profile so the expected spend fits.")] = None,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Annotated[CallToolResult, ScaleOutput]:
        """Several models vote on one of the allowed labels; the majority wins, as soon as the
        leader cannot be caught (the remaining requests are cancelled).

        Use it to classify (is this review positive? is this code safe?) or to have an ensemble
        check an agent's own output ("Is the Output above safe to run? SAFE/UNSAFE"). Returns
        the object `fscale scale --json` prints: answer, confidence (share of valid votes),
        status (decided, or tie / no_votes / all_failed / abstained: no decision), every vote,
        members, calls_made, cost_usd, and the call id. Progress: one notification per vote.
        """
        async def work() -> CallToolResult:
            request = scale_request(question, labels_of(answers), context=context,
                                    models=tuple(models) if models else None, panel=panel, k=k,
                                    tie_break=tie_break, alpha=alpha, **budget_option(budget))
            return result(*await scale_call(calls, request, Progress(ctx)))

        return await guard(work)

    @server.tool(annotations=asks_models)
    async def verify(
        draft: Annotated[str, Field(description="The text to check (e.g. the agent's summary or answer).")],
        source: Annotated[str, Field(description="The source the draft must be faithful to.")],
        question: Annotated[str | None, Field(
            description="Ask something else about Source and Output (answered YES/NO); the "
                        "default asks whether the Output makes claims the Source does not "
                        "support.")] = None,
        k: K = None,
        models: Models = None,
        panel: Panel = None,
        tie_break: TieBreak = None,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Annotated[CallToolResult, ScaleOutput]:
        """Does the draft make claims its source does not support? The models vote YES
        (unsupported or contradicted claims found) or NO (every claim is supported).

        Use it before handing over a summary, an answer with citations or generated docs.
        Returns the object `fscale verify --json` prints (the same fields as scale).
        """
        async def work() -> CallToolResult:
            request = verify_request(source, draft, question=question,
                                     models=tuple(models) if models else None, panel=panel, k=k,
                                     tie_break=tie_break)
            return result(*await scale_call(calls, request, Progress(ctx)))

        return await guard(work)

    @server.tool(annotations=asks_models)
    async def generate(
        question: Annotated[str, Field(description="The task every generator answers.")],
        k: Annotated[int | None, Field(
            description="Candidates (beam/dvts: beams); default: the panel size (4 for beam, dvts).")] = None,
        strategy: Annotated[str, Field(
            description=STRATEGIES)] = "judge",
        context: ContextText = None,
        models: Annotated[list[str] | None, Field(
            description="Generator models by alias (cycled when k is larger).")] = None,
        panel: Panel = None,
        judges: Annotated[int | None, Field(
            description="judge: number of judges (default k); weighted: verifier calls per "
                        "candidate; tournament: judgments per match.")] = None,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Annotated[CallToolResult, GenerateOutput]:
        """Generate k answers with different models and select the best (free text: code, a
        regex, a summary, a computation).

        Returns the object `fscale generate --json` prints: output (the selected text), answer
        (its final answer when the task asked for one), winner_model, every candidate and
        judge ballot. Progress: one notification per candidate and per ballot.
        """
        async def work() -> CallToolResult:
            request = generate_request(question, k=k, strategy=strategy, context=context,
                                       models=tuple(models) if models else None, panel=panel,
                                       judges=judges)
            return result(*await generate_call(calls, request, Progress(ctx)))

        return await guard(work)

    @server.tool(annotations=read_only)
    async def route(
        question: Annotated[str, Field(description="The question to route.")],
        context: ContextText = None,
        cost_weight: Annotated[float, Field(
            description="λ: score = expected error + λ·cost (0 = the most accurate model).")] = 0.0,
        models: Annotated[list[str] | None, Field(description="Only consider these models.")] = None,
    ) -> Annotated[CallToolResult, RouteOutput]:
        """Which model would answer this question best (for its cost), and the ranking behind
        it. Needs a profile (`fscale profile`); asks no model.

        Returns the object `fscale route --json` prints.
        """
        async def work() -> CallToolResult:
            obj = await asyncio.to_thread(route_sync, question, context, cost_weight, models)
            return result(obj, ExitCode.DECIDED)

        return await guard(work)

    @server.tool(annotations=asks_models)
    async def health(
        models: Annotated[list[str] | None, Field(
            description="Models to probe (default: every usable model).")] = None,
        panel: Annotated[str | None, Field(description="Probe one panel's members.")] = None,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Annotated[CallToolResult, HealthOutput]:
        """Probe models concurrently: ok / slow / rate_limited / dead / unavailable / error /
        no_key, with latency. Dead and unavailable models are then skipped by every call.

        Returns `fscale health --json` (a list) under "result". Progress: one notification per probe.
        """
        async def work() -> CallToolResult:
            rows, code = await health_call(calls, models, panel, Progress(ctx))
            return result(rows, code, wrap=True)

        return await guard(work)

    @server.tool(annotations=read_only)
    async def models(
        usable_only: Annotated[bool, Field(
            description="Only models whose provider has a key (or that are installed).")] = False,
    ) -> Annotated[CallToolResult, ModelsOutput]:
        """The catalogue: alias, provider, tier, family, cost, usable (and why not), health.

        Returns `fscale models --json` (a list) under "result".
        """
        async def work() -> CallToolResult:
            rows = await asyncio.to_thread(models_sync, usable_only)
            return result(rows, ExitCode.DECIDED, wrap=True)

        return await guard(work)

    return server


@guarded
def serve_mcp() -> None:
    """Serve fscale's tools to agents over the Model Context Protocol (stdio; the \\[mcp] extra).

    Tools: scale, verify, generate, route, health, models.
    Each returns the object its command's --json prints; votes arrive as progress.
    A cancelled call cancels its requests; every call is logged (origin: mcp).
    stdout is the protocol: an MCP client starts the server, not a person.

    Examples (client configuration; see README "Use from an agent"):

      {"mcpServers": {"fscale": {"command": "fscale", "args": ["mcp"]}}}

      claude mcp add fscale -- fscale mcp
    """
    try:
        from mcp.server.mcpserver import MCPServer  # noqa: F401
    except ImportError:
        raise UsageError("fscale mcp needs the MCP SDK (2.x): pip install 'fscale[mcp]'") from None
    import os
    import signal
    import sys

    def interrupted(_signum: int, _frame: Any) -> None:
        # The SDK reads stdin in a thread no cancellation reaches, so a graceful stop would wait
        # for the next line forever. State files are written atomically and the call log in
        # transactions: stopping here loses at most the bookkeeping of a call in flight.
        output.err.write("fscale: interrupted\n")
        output.err.flush()
        os._exit(int(ExitCode.INTERRUPTED))

    signal.signal(signal.SIGINT, interrupted)
    if sys.stdin.isatty():  # a person, not a client: say what this is and how to leave
        output.err.write("fscale mcp: serving MCP on stdin/stdout for an MCP client "
                         "(see 'fscale mcp --help'); Ctrl-C stops it\n")
    build_server().run("stdio")


def register(app: typer.Typer) -> None:
    app.command("mcp")(serve_mcp)
