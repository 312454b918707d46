"""The one path to a model: every feature asks through :class:`Asker`.

Vote members, the shadow challenger, ``-k auto`` stages, profiling and calibration, generate's
generators and judges, and health probes all call :meth:`Asker.ask` (one model, one request) or
:meth:`Asker.ask_seat` (a panel seat: the model, or a substitute when it is down or fails).
Below it, :class:`~fscale_tui.engine.wire.client.ChatClient` is the only code that builds a chat
request and sends it (rate limit, concurrency cap, retries, deadline). Here:

- **replies become votes or text** in one place (:meth:`Reply.fill`): reasoning is split off,
  and with ``labels`` the final answer is parsed into a label (``None`` = no vote);
- **health is recorded** for every failure that says something about the model (dead,
  unavailable, rate-limited), and for probes also ok / slow / error;
- **substitution**: a seat whose model is known to be down, or fails in a way another model
  would not, is handed to a substitute (same tier, other family) with a ``MemberSubstituted``
  event;
- **events**: ``VoteStarted``, ``VoteDelta`` (streaming), ``VoteReceived``, ``VoteFailed``
  go to the caller's ``emit``;
- **cancellation**: cancelling the awaiting task cancels the HTTP request (the connection is
  closed, so the server sees it go).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..base.calls import TASK_ID_FIELD, ChatReply, Reply
from ..base.errors import ProviderError
from ..base.events import Event, MemberSubstituted, VoteDelta, VoteFailed, VoteReceived, VoteStarted
from ..base.settings import ModelConfig, Settings
from ..catalog.registry import Registry
from ..providers import takes_task_id
from .health import HealthStore
from .parsing import parse_reply, split_reasoning

if TYPE_CHECKING:  # the HTTP stack is imported when the first request is made
    from ..wire.client import ChatClient

#: Failures after which a seat goes to a substitute rather than just counting as failed.
SUBSTITUTABLE = frozenset({"dead", "unavailable", "rate_limited", "auth", "server", "timeout",
                           "network", "tls", "malformed", "bad_request"})
#: Health verdicts that later calls (and processes) honour by skipping the model.
DOWN = ("dead", "unavailable", "rate_limited")
Emit = Callable[[Event], None]


def _ignore(event: Event) -> None:
    return None


def fill(out: Reply, reply: ChatReply, labels: tuple[str, ...] | None) -> None:
    """The one place a chat reply becomes a vote (``labels``) or a text."""
    out.raw = reply.content
    out.latency_s = reply.latency_s
    out.prompt_tokens = reply.prompt_tokens
    out.tokens = reply.completion_tokens
    out.finish_reason = reply.finish_reason
    out.logprobs = reply.logprobs
    out.attempts = reply.attempts
    if labels:
        parsed = parse_reply(reply.content, labels, reasoning=reply.reasoning)
        out.answer = parsed.answer
        out.thinking = parsed.reasoning
        out.text, _ = split_reasoning(reply.content, reply.reasoning)
        out.status = "answered" if parsed.answer is not None else "no_answer"
    else:
        out.text, out.thinking = split_reasoning(reply.content, reply.reasoning)
        out.status = "answered"


def price(model: ModelConfig, prompt_tokens: int | None,
          completion_tokens: int | None) -> float | None:
    """USD for one reply: its tokens at the model's ``cost`` (USD per million tokens); None
    when the provider reported no usage."""
    if prompt_tokens is None and completion_tokens is None:
        return None
    return ((prompt_tokens or 0) + (completion_tokens or 0)) * float(model.cost or 0.0) / 1e6


class Asker:
    """Asks models on behalf of one engine (its client, health store and registry)."""

    def __init__(self, settings: Settings, client: Callable[[], ChatClient], health: HealthStore,
                 registry: Registry) -> None:
        self.settings = settings
        self._client = client
        self.health = health
        self.registry = registry

    @property
    def client(self) -> ChatClient:
        return self._client()

    def _extra(self, model: ModelConfig, extra: dict[str, Any] | None,
               task_id: str | None) -> dict[str, Any] | None:
        """Request fields beyond the messages; a task id only for replay providers."""
        if task_id is None:
            return extra
        provider = self.settings.providers.get(model.provider)
        if provider is None or not takes_task_id(provider):
            return extra
        return {**(extra or {}), "metadata": {TASK_ID_FIELD: task_id}}

    def note_failure(self, model: ModelConfig, exc: ProviderError) -> None:
        """Share dead / unavailable / rate-limited verdicts with later calls and processes."""
        if exc.kind in DOWN:
            self.health.record(model, exc.kind, detail=str(exc), retry_after=exc.retry_after)

    async def ask(self, model: ModelConfig, messages: list[dict[str, Any]], *,
                  labels: tuple[str, ...] | None = None, call_id: str = "",
                  max_tokens: int | None = None, temperature: float | None = None,
                  stream: bool = False, extra: dict[str, Any] | None = None,
                  task_id: str | None = None, counter: Any = None, emit: Emit | None = None,
                  timeout: float | None = None, retries: int | None = None,
                  substitute_for: str | None = None, announce: bool = True,
                  on_start: Callable[[Reply], None] | None = None) -> Reply:
        """One request to one model; never raises a ProviderError (the Reply says it failed).

        With ``emit``, the call's events are emitted (``announce=False`` skips VoteStarted,
        e.g. when the caller announced the seat itself). ``on_start`` receives the Reply
        before the request goes out; it is filled in place, so a caller that cancels the
        request still holds it (status ``cancelled``).
        """
        s = self.settings
        emit = emit or _ignore
        out = Reply(model.alias, substitute_for=substitute_for)
        if on_start is not None:
            on_start(out)
        if announce:
            emit(VoteStarted(call_id, model.alias, model.id, substitute_for,
                             model.options.get("variant")))

        def on_delta(piece: str, think: str) -> None:
            emit(VoteDelta(call_id, model.alias, piece, think))

        started = time.monotonic()
        try:
            reply = await self.client.chat(
                model, messages,
                max_tokens=max_tokens if max_tokens is not None else s.get("max_tokens"),
                temperature=s.get("temperature") if temperature is None else temperature,
                stream=stream, on_delta=on_delta if stream else None,
                extra=self._extra(model, extra, task_id), counter=counter, labels=labels,
                timeout=timeout, retries=retries)
        except ProviderError as exc:
            out.fail(exc, started)
            self.note_failure(model, exc)
            emit(VoteFailed(call_id, model.alias, out.error or "", exc.kind, out.latency_s or 0.0))
            return out
        except asyncio.CancelledError:
            out.status = "cancelled"
            raise
        except Exception as exc:  # a bug or an unexpected library error: this ask fails alone
            out.fail(ProviderError("error", f"{type(exc).__name__}: {exc}"), started)
            emit(VoteFailed(call_id, model.alias, out.error or "", "error", out.latency_s or 0.0))
            return out
        fill(out, reply, labels)
        out.cost_usd = price(model, out.prompt_tokens, out.tokens)
        emit(VoteReceived(call_id, model.alias, out.answer, out.latency_s or 0.0, out.raw,
                          out.thinking, out.tokens))
        return out

    async def ask_seat(self, model: ModelConfig, messages: list[dict[str, Any]], *,
                       used: set[str], reserved: Iterable[str] = (), call_id: str = "",
                       emit: Emit | None = None, substitute: bool = True,
                       **kwargs: Any) -> list[Reply]:
        """A panel seat: ``model``, or a substitute when it is known to be down or fails.

        Returns every reply of the seat in order: replaced ones (status ``replaced``) then
        the last, which decides the seat. ``used`` (shared by the seats of a call) keeps a
        model from sitting twice; ``reserved`` models (the shadow challenger) are never drafted.
        ``on_start`` (see :meth:`ask`) sees each reply object as its request starts.
        """
        emit = emit or _ignore
        blocked = set(reserved)
        used.add(model.alias)
        replies: list[Reply] = []
        substitute_for: str | None = None
        if substitute and self.health.is_down(model.alias):
            sub = self.registry.substitute(model, used | blocked)
            if sub is not None:
                emit(MemberSubstituted(call_id, model.alias, sub.alias,
                                       "known to be down (health state)"))
                used.add(sub.alias)
                model, substitute_for = sub, model.alias
        while True:
            reply = await self.ask(model, messages, call_id=call_id, emit=emit,
                                   substitute_for=substitute_for, **kwargs)
            replies.append(reply)
            if reply.status != "failed" or not substitute or reply.error_kind not in SUBSTITUTABLE:
                return replies
            sub = self.registry.substitute(model, used | blocked)
            if sub is None:
                return replies
            reply.status = "replaced"
            emit(MemberSubstituted(call_id, model.alias, sub.alias, reply.error_kind or "failed"))
            used.add(sub.alias)
            substitute_for = model.alias
            model = sub

    async def probe(self, model: ModelConfig, messages: list[dict[str, Any]], *,
                    slow_after: float) -> tuple[str, Reply]:
        """A health probe: one tiny request, no retry; every outcome is recorded.
        -> (ok | slow | dead | unavailable | rate_limited | error, the reply)."""
        reply = await self.ask(model, messages, max_tokens=16, temperature=0.0, retries=0)
        if reply.ok:
            status = "ok" if (reply.latency_s or 0.0) <= slow_after else "slow"
            self.health.record(model, status, latency_s=reply.latency_s)
            return status, reply
        if reply.error_kind in DOWN:
            return str(reply.error_kind), reply  # recorded by note_failure
        self.health.record(model, "error", detail=reply.error or "")
        return "error", reply
