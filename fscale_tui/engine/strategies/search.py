"""Step-wise search as in search-and-learn: beam search and DVTS, with an LLM judge as PRM.

A *step* ends at a blank line: every step request carries ``stop: ["\\n\\n"]``, except in the
last iteration, which writes the solution to its end (as search-and-learn does). A partial
solution is complete when its step states a final answer, comes back empty, or is cut by
``max_tokens``. An LLM judge scores each partial solution from 1 to 10 (scaled to [0, 1]),
standing in for the process reward model; the score of the whole prefix is used, i.e.
search-and-learn's ``last`` aggregation.

* **beam** (N beams, width M): each iteration extends the N active beams by one step, keeps
  the N/M best-scored unfinished beams and expands each of them M times again. It stops once
  N solutions are finished (search-and-learn keeps iterating; finished beams are what we
  need) or after ``max_steps``. The best-scored finished solution wins.
* **dvts** (N beams, width M): N/M independent subtrees; each iteration expands a subtree's
  current path M times and keeps only its best child (greedy within the subtree, diverse
  across subtrees). The best-scored finished subtree wins.

**Continuing a partial solution**, per provider (``continuation`` option on the model or the
provider in config.toml, default by provider type):

* ``continue_final_message`` (default for ``local``, the embedded llama.cpp; use it for vLLM
  and recent llama.cpp servers): the partial solution is sent as a trailing assistant message
  with ``continue_final_message: true, add_generation_prompt: false`` (vLLM's documented
  extension, also accepted by llama.cpp's server); the model continues that very message.
  llama.cpp returns the prefilled text again at the start of ``content``; vLLM returns only
  the continuation: an echoed prefix is removed either way.
* ``prefill``: trailing assistant message only (llama.cpp's ``llama-server`` prefills it by
  default, ``--prefill-assistant``; Ollama and Anthropic-compatible gateways do the same).
* ``next_step`` (default for other OpenAI-compatible APIs, whose chat endpoint would treat a
  trailing assistant message as a finished turn): the partial solution is quoted in the user
  message and the model is asked for the next step only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from ..base.errors import ProviderError
from ..base.events import CandidateGenerated, StepScored
from ..base.settings import ModelConfig
from ..decide.answers import extract_answer
from ..providers import continuation
from . import register
from .common import Run, answer_of, visible_text
from ..base.calls import Candidate, GenerateResult
from .selection import _result, verify_score

CONTINUATIONS = ("continue_final_message", "prefill", "next_step")
DEFAULT_MAX_STEPS = 8
DEFAULT_WIDTH = 2
STEP_SYSTEM = ("Solve the problem step by step. Write each step as one short paragraph and "
               "separate the steps with a blank line. When you are done, end with a final line "
               "of the form 'The answer is: <answer>'.")


def continuation_mode(run: Run, model: ModelConfig) -> str:
    provider = run.ctx.settings.providers.get(model.provider)
    for opts in (model.options, provider.options if provider else {}):
        mode = opts.get("continuation")
        if mode in CONTINUATIONS:
            return str(mode)
    default = continuation(provider) if provider is not None else None
    return default if default in CONTINUATIONS else "next_step"


def step_request(run: Run, model: ModelConfig, partial: str, *, last: bool
                 ) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Messages and extra body fields asking ``model`` for the next step of ``partial``."""
    messages = run.base_messages(STEP_SYSTEM)
    extra: dict[str, Any] = {} if last else {"stop": ["\n\n"]}
    if not partial:
        return messages, extra
    mode = continuation_mode(run, model)
    if mode in ("prefill", "continue_final_message"):
        messages.append({"role": "assistant", "content": partial})
        if mode == "continue_final_message":
            extra.update(continue_final_message=True, add_generation_prompt=False)
        return messages, extra
    ask = ("Finish this solution: write the remaining steps and end with 'The answer is: "
           "<answer>'." if last else
           "Write only the next step of this solution (one short paragraph). If the solution "
           "is already complete, write only its final line 'The answer is: <answer>'.")
    messages[-1] = {"role": "user", "content": (
        f"{run.request.question}\n\nHere is the solution so far:\n<<<\n{partial.rstrip()}\n>>>"
        f"\n\n{ask}")}
    return messages, extra


def _new_text(partial: str, content: str) -> str:
    """The continuation only: llama.cpp's server echoes a prefilled assistant message at the
    start of ``content`` (vLLM does not), so an echoed prefix is removed."""
    if partial:
        for prefix in (partial, partial.rstrip()):
            if prefix and content.startswith(prefix):
                return content[len(prefix):].strip()
    return content.strip()


@dataclass
class _Path:
    """A partial (or finished) solution."""

    id: int
    text: str = ""
    steps: list[str] = field(default_factory=list)
    score: float | None = None
    completed: bool = False
    error: str | None = None
    model: str = ""


async def _extend(run: Run, path: _Path, model: ModelConfig, iteration: int, *,
                  last: bool) -> _Path:
    """One step for ``path`` (a new object), then its score from a judge."""
    new = replace(path, steps=list(path.steps), model=model.alias)
    messages, extra = step_request(run, model, path.text, last=last)
    try:
        reply = await run.chat(model, messages, temperature=run.sampling_temperature,
                               extra=extra or None)
    except ProviderError as exc:
        new.error = str(exc)
        return new
    step = _new_text(path.text, visible_text(reply))
    new.steps.append(step)
    new.completed = (last or not step or reply.finish_reason == "length"
                     or extract_answer(step, fallback=False) is not None)
    new.text = path.text + step + ("" if new.completed else "\n\n")
    scorer = run.judges_for([model.family], offset=path.id + iteration)[0]
    vote = await verify_score(run, scorer, new.text.strip(), index=path.id,
                              partial=not new.completed)
    new.score = vote.score
    return new


def _rank_key(p: _Path) -> tuple[float, int]:
    return (-(p.score if p.score is not None else -1.0), p.id)


def _finish(run: Run, finished: list[_Path], steps: int) -> GenerateResult:
    cands: list[Candidate] = []
    for i, p in enumerate(finished):
        c = Candidate(index=i, model=p.model, text=p.text.strip(), answer=answer_of(p.text, numeric=run.numeric),
                      score=p.score, votes=round(p.score or 0.0, 4),
                      family=run.ctx.settings.models[p.model].family if p.model in run.ctx.settings.models else "")
        cands.append(c)
        run.emit(CandidateGenerated(run.call_id, c.model, c.index, c.text or "", 0.0, c.answer))
    if not cands:
        res = _result(run, [], [], None, status="all_failed", selected_by="")
        res.steps = steps
        return res
    scored = [c for c in cands if c.score is not None]
    if scored:
        winner = max(scored, key=lambda c: (c.score, -c.index))
        status, rule = "decided", "best step-judge score"
    else:
        winner, status, rule = cands[0], "no_votes", "no valid judge score; order"
    res = _result(run, cands, [], winner, status=status, selected_by=rule,
                  counts={str(c.index): round(c.score or 0.0, 4) for c in cands})
    res.steps = steps
    return res


@register("beam", "step-wise beam search scored by an LLM judge", default_k=4, search=True, order=5)
async def beam(run: Run) -> GenerateResult:
    n = run.k
    width = max(1, run.request.width or DEFAULT_WIDTH)
    keep = max(1, n // width)
    max_steps = run.request.max_steps or DEFAULT_MAX_STEPS
    active = [_Path(id=i) for i in range(n)]
    finished: list[_Path] = []
    it = 0
    for it in range(max_steps):
        last = it == max_steps - 1
        extended = list(await asyncio.gather(*(
            _extend(run, p, run.generator_for(p.id), it, last=last) for p in active)))
        live = [p for p in extended if not p.error and not p.completed]
        finished += [p for p in extended if not p.error and p.completed]
        unique: dict[str, _Path] = {}
        for p in sorted(live, key=_rank_key):
            unique.setdefault(p.text, p)  # search-and-learn's filter_duplicates
        kept = list(unique.values())[:keep]
        for p in extended:
            run.emit(StepScored(run.call_id, it, p.id, p.model, p.steps[-1] if p.steps else "",
                                p.score, p.completed, kept=p in kept or p.completed))
        if not kept or len(finished) >= n:
            break
        # Each kept beam is expanded `width` times in the next iteration (N active again).
        active = [replace(kept[j % len(kept)], id=j) for j in range(n)]
    finished.sort(key=_rank_key)
    return _finish(run, finished[:n], it + 1)


@register("dvts", "diverse verifier tree search", default_k=4, search=True, order=6)
async def dvts(run: Run) -> GenerateResult:
    n = run.k
    width = max(1, run.request.width or DEFAULT_WIDTH)
    subtrees = [_Path(id=s) for s in range(max(1, n // width))]
    max_steps = run.request.max_steps or DEFAULT_MAX_STEPS
    it = 0
    for it in range(max_steps):
        last = it == max_steps - 1
        live = [t for t in subtrees if not t.completed and not t.error]
        if not live:
            break
        jobs = [(t, j) for t in live for j in range(width)]
        children = await asyncio.gather(*(
            _extend(run, t, run.generator_for(t.id * width + j), it, last=last)
            for t, j in jobs))
        for t in live:
            mine = [c for (owner, _), c in zip(jobs, children) if owner is t and not c.error]
            best = min(mine, key=_rank_key) if mine else None
            for c in mine:
                run.emit(StepScored(run.call_id, it, t.id, c.model, c.steps[-1] if c.steps else "",
                                    c.score, c.completed, kept=c is best))
            if best is None:
                t.error = "every expansion failed"
                continue
            t.text, t.steps, t.score = best.text, best.steps, best.score
            t.completed, t.model = best.completed, best.model
    finished = [t for t in subtrees if t.completed and not t.error]
    return _finish(run, finished, it + 1)
