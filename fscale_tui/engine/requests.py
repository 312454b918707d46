"""Building requests from what a person typed: shared by the CLI and the TUI.

Both views turn raw text (a comma-separated label list, "3" for k, a source and a draft) into
the same ``ScaleRequest``; keeping that here means the two views cannot drift apart.
Pure functions, no I/O. The parsing helpers (labels, ``-k``) are cheap to import: the CLI
checks what was typed before it loads the vote machinery.
"""

from __future__ import annotations

from typing import Any

from .base.calls import GenerateRequest, ScaleRequest
from .base.errors import UsageError

DEFAULT_VERIFY_QUESTION = (
    "Does the Output contain any claim that is not supported by the Source? "
    "Answer YES if at least one claim is unsupported or contradicted, NO if every claim is supported."
)
VERIFY_LABELS = ("YES", "NO")


def split_labels(value: str | None) -> tuple[str, ...] | None:
    """``"SAFE, VULNERABLE"`` -> ``("SAFE", "VULNERABLE")``; empty -> None."""
    if value is None:
        return None
    items = tuple(x.strip() for x in value.split(",") if x.strip())
    return items or None


#: The largest -k that makes sense (every member is one request per call).
MAX_K = 64


def is_auto(k: str | int | None) -> bool:
    """``-k auto``: route + calibrated cascade instead of a fixed number of models."""
    return isinstance(k, str) and k.strip().lower() == "auto"


def parse_k(k: str | int | None) -> int | None:
    """``-k`` as typed: a number from 1 to 64, or nothing (``auto`` is :func:`is_auto`)."""
    if k is None or (isinstance(k, str) and not k.strip()):
        return None
    if is_auto(k):
        raise UsageError("-k auto (routing + calibrated cascade) works with scale and verify only")
    try:
        value = int(k)
    except (TypeError, ValueError):
        raise UsageError(f"-k must be a number or 'auto', not {k!r}") from None
    if not 1 <= value <= MAX_K:
        raise UsageError(f"-k must be between 1 and {MAX_K} (or 'auto'), not {value}")
    return value


def verify_context(source: str, draft: str) -> str:
    """The context a verify call sends: the source, then the draft as "Output"."""
    return f"Source:\n{source}\n\nOutput:\n{draft}"


def verify_request(source: str, draft: str, *, question: str | None = None,
                   models: tuple[str, ...] | None = None, panel: str | None = None,
                   k: int | str | None = None, tie_break: str | None = None,
                   id: str | None = None, stream: bool = False) -> ScaleRequest:
    """A scale request asking whether ``draft`` makes claims ``source`` does not support."""
    if not source.strip():
        raise UsageError("the source is empty")
    if not draft.strip():
        raise UsageError("the draft is empty")
    request = ScaleRequest(question=(question or "").strip() or DEFAULT_VERIFY_QUESTION,
                           answers=VERIFY_LABELS, context=verify_context(source, draft),
                           models=models, panel=panel, k=None if is_auto(k) else parse_k(k),
                           tie_break=tie_break, id=id, stream=stream, auto=is_auto(k))
    request.validate()
    return request


def scale_request(question: str, answers: str | tuple[str, ...], *, context: str | None = None,
                  models: tuple[str, ...] | None = None, panel: str | None = None,
                  k: int | str | None = None, tie_break: str | None = None,
                  id: str | None = None, stream: bool = False,
                  item_id: str | None = None, alpha: float | None = None,
                  budget: str | None = None) -> ScaleRequest:
    """A validated scale request; ``answers`` may be the comma-separated text as typed."""
    labels = split_labels(answers) if isinstance(answers, str) else tuple(answers)
    if not labels:
        raise UsageError("missing answers, e.g. YES,NO")
    request = ScaleRequest(question=question, answers=labels,
                           context=context if context and context.strip() else None,
                           models=models, panel=panel, k=None if is_auto(k) else parse_k(k),
                           tie_break=tie_break, id=id, stream=stream, auto=is_auto(k),
                           item_id=item_id, alpha=alpha, budget=budget)
    request.validate()
    return request


def generate_request(question: str, **opts: Any) -> GenerateRequest:
    """A validated generate request; options given as None take the request's defaults."""
    return validated(GenerateRequest(question=question,
                                     **{k: v for k, v in opts.items() if v is not None}))


def validated(request: GenerateRequest) -> GenerateRequest:
    """``request`` checked against the registered strategies (a ``UsageError`` if it is not
    one they can run)."""
    from .strategies import strategies  # the strategy modules load only for a generate call

    request.validate(strategies())
    return request
