"""What a call spent: one model for every feature (design §8, "Spend").

A call's spend is its **decision** calls (the requests that made the answer: votes, ``-k auto``
stages, generators and judges, retries included) plus its **shadow** calls (the challengers
asked outside the panel to learn, never part of the decision), each in requests, tokens and USD
(the model's list price × the tokens its provider reported). ``scale``, ``verify``, ``-k auto``,
``generate`` and batches all report it through :class:`Spend`, so nothing computes spend by
hand: the ``--json`` object (``spend``, ``cost_usd_total``), the call log, ``history show``, the
batch summary line and the TUI banner read the same figures.

Plain frozen dataclasses, no I/O: the views import this module directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


def _add_cost(a: float | None, b: float | None) -> float | None:
    """USD sums where ``None`` means "no reply reported a price" (not zero)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


@dataclass(frozen=True)
class Part:
    """One side of a call's spend: requests sent, tokens and USD of the replies."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None  # None: no reply carried usage (or no model has a price)

    @classmethod
    def of(cls, calls: int, replies: Iterable[Any]) -> "Part":
        """``calls`` requests sent; tokens and USD summed over ``replies`` (votes, candidates)."""
        prompt = completion = 0
        cost: float | None = None
        for r in replies:
            prompt += int(getattr(r, "prompt_tokens", 0) or 0)
            completion += int(getattr(r, "tokens", 0) or 0)
            cost = _add_cost(cost, getattr(r, "cost_usd", None))
        return cls(int(calls or 0), prompt, completion, cost)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Part":
        d = d or {}
        cost = d.get("cost_usd")
        return cls(int(d.get("calls") or 0), int(d.get("prompt_tokens") or 0),
                   int(d.get("completion_tokens") or 0), None if cost is None else float(cost))

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Part") -> "Part":
        return Part(self.calls + other.calls, self.prompt_tokens + other.prompt_tokens,
                    self.completion_tokens + other.completion_tokens,
                    _add_cost(self.cost_usd, other.cost_usd))

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 8)}


@dataclass(frozen=True)
class Spend:
    """A call's (or a batch's) spend: ``decision`` + ``shadow``.

    ``pending``: shadows still running when this was read — a one-shot ``--json`` is printed the
    moment the decision is known, so their requests and USD are not in it yet (the call log,
    ``history show`` and batch lines have the final figures)."""

    decision: Part = field(default_factory=Part)
    shadow: Part = field(default_factory=Part)
    pending: int = 0

    @classmethod
    def of(cls, decision_calls: int, decision_replies: Iterable[Any], shadow_calls: int = 0,
           shadow_replies: Iterable[Any] = (), pending: int = 0) -> "Spend":
        return cls(Part.of(decision_calls, decision_replies),
                   Part.of(shadow_calls, shadow_replies), int(pending))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Spend":
        """From a ``spend`` object, or (older call logs and JSON lines) from the flat keys
        ``calls_made`` / ``challenger_calls`` / ``usage`` / ``cost_usd``."""
        d = d or {}
        if isinstance(d.get("spend"), Mapping):
            d = d["spend"]
        if "decision" in d:
            return cls(Part.from_dict(d.get("decision")), Part.from_dict(d.get("shadow")),
                       int(d.get("pending") or 0))
        usage = d.get("usage") or {}
        cost = d.get("cost_usd", usage.get("cost_usd"))
        return cls(Part(int(d.get("calls_made") or 0), int(usage.get("prompt_tokens") or 0),
                        int(usage.get("completion_tokens") or 0),
                        None if cost is None else float(cost)),
                   Part(int(d.get("challenger_calls") or 0)))

    @property
    def calls(self) -> int:
        """Every request: decision + shadow."""
        return self.decision.calls + self.shadow.calls

    @property
    def cost_usd_total(self) -> float | None:
        return _add_cost(self.decision.cost_usd, self.shadow.cost_usd)

    @property
    def shadow_share(self) -> float:
        """Shadow requests per decision request (what ``shadow_budget`` bounds)."""
        return self.shadow.calls / self.decision.calls if self.decision.calls else 0.0

    def __add__(self, other: "Spend") -> "Spend":
        return Spend(self.decision + other.decision, self.shadow + other.shadow,
                     self.pending + other.pending)

    def to_dict(self) -> dict[str, Any]:
        total = self.cost_usd_total
        return {"decision": self.decision.to_dict(), "shadow": self.shadow.to_dict(),
                "calls": self.calls, "pending": self.pending,
                "cost_usd_total": None if total is None else round(total, 8)}

    def calls_text(self) -> str:
        """For people: ``3 calls + 1 shadow`` (no shadow: exactly ``3 calls``)."""
        text = _plural(self.decision.calls, "call")
        shadows = self.shadow.calls + self.pending
        if shadows:
            text += f" + {_plural(shadows, 'shadow')}"
            if self.pending:
                text += " (running)"
        return text

    def cost_text(self) -> str:
        """For people: ``, $0.000120 ($0.000160 with shadows)``; empty when nothing has a
        price (so ``f"{calls_text()}, 0.52s{cost_text()}"`` reads well either way)."""
        cost, total = self.decision.cost_usd, self.cost_usd_total
        text = f", ${cost:.6f}" if cost else ""
        if self.shadow.calls and total and total != cost:
            text += f" (${total:.6f} with shadows)"
        return text

    def detail(self) -> str:
        """Both sides in full: ``3 decision calls (221 tokens, $0.000022) + 1 shadow call
        (53 tokens, $0.000005) = $0.000027 in all``."""
        def side(part: Part, word: str) -> str:
            what = [f"{part.tokens} tokens"] if part.tokens else []
            if part.cost_usd is not None:
                what.append(f"${part.cost_usd:.6f}")
            return _plural(part.calls, f"{word} call") + (f" ({', '.join(what)})" if what else "")

        text = side(self.decision, "decision") + " + " + side(self.shadow, "shadow")
        if self.pending:
            text += f" ({self.pending} still running)"
        total = self.cost_usd_total
        return text + (f" = ${total:.6f} in all" if total is not None else "")

    def describe(self) -> str:
        """``3 calls + 1 shadow, $0.000120 ($0.000160 with shadows)``."""
        return self.calls_text() + self.cost_text()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def total(spends: Iterable[Spend]) -> Spend:
    out = Spend()
    for s in spends:
        out = out + s
    return out
