"""Best-of-k selection: judges, self-consistency, weighted verifiers, USC, tournaments.

Tie-breaks are deterministic and never depend on arrival order:

* **judge / tournament**: most judge votes; then *consistency* (how many other candidates
  state the same normalised final answer); then the lowest candidate index (the generators'
  listed order).
* **vote**: most samples; then the answer first stated in candidate order (search-and-learn's
  ``find_majority_answer``).
* **weighted**: largest score sum; then more samples; then first in candidate order. Within
  the winning answer, the best-scored candidate (then the lowest index) is the output.
* **usc**: the selector's choice; without a valid choice, the ``vote`` rule decides.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..base.settings import ModelConfig
from ..base.errors import ProviderError
from ..base.events import CandidateFailed, CandidateGenerated, JudgeVoted
from ..decide.judgments import (SCORE_LABELS, choice_labels, judge_messages, p_yes, parse_choice,
                      parse_score, score_messages, usc_messages, yes_messages, yes_no)
from . import register
from .common import Run, answer_of, visible_text
from ..base.calls import Candidate, GenerateResult, JudgeVote


# -- candidates --------------------------------------------------------------------------------
async def make_candidates(run: Run, k: int, *, sampling: bool) -> list[Candidate]:
    """k candidates concurrently, cycling through the generators; failures are recorded.
    Candidates given in the request are used as they are (no call)."""
    if run.request.candidates is not None:
        return given_candidates(run)
    messages = run.base_messages()
    cands = [Candidate(index=i, model=run.generator_for(i).alias, text=None,
                       family=run.generator_for(i).family) for i in range(k)]

    async def one(c: Candidate) -> None:
        model = run.generator_for(c.index)
        try:
            reply = await run.chat(model, messages,
                                   temperature=run.temperature_for(c.index, sampling=sampling))
        except ProviderError as exc:
            c.error = str(exc)
            run.emit(CandidateFailed(run.call_id, model.alias, c.index, str(exc), exc.kind))
            return
        c.text = visible_text(reply)
        c.latency_s = reply.latency_s
        c.answer = answer_of(c.text, numeric=run.numeric)
        run.emit(CandidateGenerated(run.call_id, model.alias, c.index, c.text,
                                    reply.latency_s or 0.0, c.answer))  # answered: it has one

    await asyncio.gather(*(one(c) for c in cands))
    return cands


def given_candidates(run: Run) -> list[Candidate]:
    names = run.request.candidate_models or ("given",) * len(run.request.candidates or ())
    models = run.ctx.settings.models
    cands = []
    for i, (text, name) in enumerate(zip(run.request.candidates or (), names)):
        family = models[name].family if name in models else name
        c = Candidate(index=i, model=name, text=text, answer=answer_of(text, numeric=run.numeric), latency_s=0.0,
                      family=family)
        cands.append(c)
        run.emit(CandidateGenerated(run.call_id, name, i, text, 0.0, c.answer))
    return cands


def _result(run: Run, cands: list[Candidate], votes: list[JudgeVote], winner: Candidate | None,
            *, status: str, selected_by: str, counts: Mapping[str, float] | None = None,
            tied: Sequence[int | str] | None = None, answer: str | None = None) -> GenerateResult:
    return GenerateResult(
        id=run.call_id, strategy=run.request.strategy, status=status,
        output=winner.text if winner else None,
        answer=answer if answer is not None else (winner.answer if winner else None),
        winner_model=winner.model if winner else None,
        winner_index=winner.index if winner else None,
        all_outputs=cands, judge_votes=votes, counts=dict(counts or {}), selected_by=selected_by,
        tied=list(tied or []), question=run.request.question,
        generators=[g.alias for g in run.generators], judges=[j.alias for j in run.judges])


def _consistency(c: Candidate, cands: list[Candidate]) -> int:
    if c.answer is None:
        return 0
    return sum(1 for o in cands if o.ok and o.index != c.index and o.answer == c.answer)


def rank_by_votes(ok: list[Candidate], tally: Mapping[int, float]) -> tuple[Candidate, str, list[int]]:
    """Winner by votes, then consistency, then lowest index; says which rule decided."""
    top = max(tally.get(c.index, 0) for c in ok)
    tied = [c for c in ok if tally.get(c.index, 0) == top]
    if len(tied) == 1:
        return tied[0], "judges", []
    best_cons = max(_consistency(c, ok) for c in tied)
    by_cons = [c for c in tied if _consistency(c, ok) == best_cons]
    if len(by_cons) == 1:
        return by_cons[0], "tie-break: consistency", [c.index for c in tied]
    return min(by_cons, key=lambda c: c.index), "tie-break: order", [c.index for c in tied]


def _fallback_status(cands: list[Candidate]) -> str:
    return "all_failed" if not any(c.ok for c in cands) else "no_votes"


# -- judge ---------------------------------------------------------------------------------------
async def ask_choice(run: Run, judge: ModelConfig, shown: list[Candidate], *,
                     label: str = "Output", match: str = "", usc: bool = False,
                     record: list[JudgeVote] | None = None) -> JudgeVote:
    """One ballot: ``shown`` is already in this judge's order; the choice is mapped back.
    ``record`` receives the vote when it is emitted, so results list votes in event order."""
    texts = [c.text or "" for c in shown]
    order = [c.index for c in shown]
    if usc:
        messages = usc_messages(run.request.question, run.request.context, texts)
    else:
        messages = judge_messages(run.request.question, run.request.context, texts, label)
    try:
        reply = await run.chat(judge, messages, temperature=0.0,
                               labels=choice_labels(len(shown), label))
    except ProviderError as exc:
        vote = JudgeVote(judge.alias, None, None, None, order, None, error=str(exc), match=match)
        if record is not None:
            record.append(vote)
        run.emit(JudgeVoted(run.call_id, judge.alias, None, None, None, tuple(order), 0.0,
                            match=match, error=str(exc)))
        return vote
    pos = parse_choice(reply.content, len(shown), label=label, reasoning=reply.reasoning)
    chosen = shown[pos - 1] if pos is not None else None
    vote = JudgeVote(judge.alias, chosen.index if chosen else None,
                     chosen.model if chosen else None, reply.content, order, reply.latency_s,
                     match=match)
    if record is not None:
        record.append(vote)
    run.emit(JudgeVoted(run.call_id, judge.alias, vote.choice_model, reply.content,
                        vote.choice_index, tuple(order), reply.latency_s or 0.0, match=match))
    return vote


def ballot_for(run: Run, judge: ModelConfig, ok: list[Candidate]) -> list[Candidate]:
    """The candidates this judge sees, in its own random order.

    A judge never sees its own family's candidates when at least two others remain.
    """
    ballot = [c for c in ok if c.family != judge.family]
    if len(ballot) < 2:
        ballot = list(ok)
    run.rng.shuffle(ballot)
    return ballot


@register("judge", "k candidates from different families; judges from other families see them shuffled, under neutral labels; majority wins", judges="k", order=0)
async def judge(run: Run) -> GenerateResult:
    """Free Scaling's generate(), done carefully: k candidates, M outside judges, majority."""
    k = run.k
    cands = await make_candidates(run, k, sampling=False)
    ok = [c for c in cands if c.ok]
    if not ok:
        return _result(run, cands, [], None, status="all_failed", selected_by="")
    if len(ok) == 1:
        return _result(run, cands, [], ok[0], status="decided", selected_by="only candidate")
    # Shuffles are drawn before any judge runs, so a seed reproduces them exactly.
    ballots = [(j, ballot_for(run, j, ok)) for j in run.judges]
    votes: list[JudgeVote] = []
    tasks = [asyncio.create_task(ask_choice(run, j, shown, record=votes)) for j, shown in ballots]
    decided_early = False
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            tally = Counter(v.choice_index for v in votes if v.choice_index is not None)
            if run.request.early_stop and pending and tally:
                ranked = tally.most_common(2) + [(None, 0)]
                if ranked[0][1] > ranked[1][1] + len(pending):
                    decided_early = True
                    break
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    tally = Counter(v.choice_index for v in votes if v.choice_index is not None)
    for c in cands:
        c.votes = tally.get(c.index, 0)
    counts = {str(c.index): tally.get(c.index, 0) for c in ok}
    if not tally:
        winner, rule, tied = rank_by_votes(ok, {})
        return _result(run, cands, votes, winner, status="no_votes", counts=counts,
                       selected_by=f"no valid judge vote; {rule.replace('judges', 'order')}",
                       tied=tied)
    winner, rule, tied = rank_by_votes(ok, tally)
    if decided_early:
        rule += " (decided early)"
    return _result(run, cands, votes, winner, status="decided", selected_by=rule,
                   counts=counts, tied=tied)


# -- vote (self-consistency) ---------------------------------------------------------------------
def majority(ok: list[Candidate]) -> tuple[str | None, Counter[str], list[str]]:
    counts: Counter[str] = Counter(c.answer for c in ok if c.answer is not None)
    if not counts:
        return None, counts, []
    top = max(counts.values())
    tied = [a for a in counts if counts[a] == top]  # Counter keeps first-seen order
    first_seen: dict[str, int] = {}
    for c in sorted(ok, key=lambda c: c.index):
        if c.answer is not None:
            first_seen.setdefault(c.answer, c.index)
    winner = min(tied, key=lambda a: first_seen[a])
    return winner, counts, tied if len(tied) > 1 else []


@register("vote", "self-consistency over final answers", judges=0, order=1)
async def vote(run: Run) -> GenerateResult:
    """Self-consistency (Wang et al., 2023): k samples, majority of the final answers."""
    cands = await make_candidates(run, run.k, sampling=True)
    ok = [c for c in cands if c.ok]
    winner_answer, counts, tied = majority(ok)
    if winner_answer is None:
        return _result(run, cands, [], None, status=_fallback_status(cands),
                       selected_by="no final answer in any sample", counts={})
    rep = min((c for c in ok if c.answer == winner_answer), key=lambda c: c.index)
    for c in cands:
        c.votes = counts.get(c.answer, 0) if c.answer is not None else 0
    return _result(run, cands, [], rep, status="decided",
                   selected_by="tie-break: first in order" if tied else "majority",
                   counts=dict(counts), tied=list(tied))


# -- weighted best-of-n ----------------------------------------------------------------------------
async def verify_score(run: Run, verifier: ModelConfig, text: str, *, index: int,
                       partial: bool = False) -> JudgeVote:
    """One verifier call on candidate ``index``: a 1-10 score, or P(yes) from logprobs
    (``--verifier yes``); scaled to [0, 1]. ``partial`` asks about the steps so far (PRM)."""
    use_yes = run.request.verifier == "yes" and not partial
    if use_yes:
        messages = yes_messages(run.request.question, run.request.context, text)
        extra: dict[str, Any] | None = {"logprobs": True, "top_logprobs": 5}
        labels: tuple[str, ...] = ("Yes", "No")
    else:
        messages = score_messages(run.request.question, run.request.context, text, partial=partial)
        extra, labels = None, SCORE_LABELS
    try:
        reply = await run.chat(verifier, messages, temperature=0.0, extra=extra, labels=labels)
    except ProviderError as exc:
        return JudgeVote(verifier.alias, None, None, None, [index], None, error=str(exc),
                         candidate_index=index)
    if use_yes:
        score = p_yes(reply.logprobs)
        if score is None:
            score = yes_no(reply.answer)
    else:
        score = parse_score(reply.content, reasoning=reply.reasoning)
        if score is None and reply.answer in SCORE_LABELS:
            # A grammar-constrained verifier (the local models) replies "Answer: 7": the one
            # reply parser already read the score label.
            score = (int(reply.answer) - 1) / 9
    return JudgeVote(verifier.alias, None, None, reply.content, [index], reply.latency_s,
                     score=score, candidate_index=index)


@register("weighted", "verifier scores summed per answer (weighted best-of-N)", order=2)
async def weighted(run: Run) -> GenerateResult:
    """Weighted best-of-N: verifier scores summed per distinct normalised final answer."""
    cands = await make_candidates(run, run.k, sampling=True)
    ok = [c for c in cands if c.ok]
    if not ok:
        return _result(run, cands, [], None, status="all_failed", selected_by="")
    per = max(1, run.request.judges or 1)

    async def score_one(c: Candidate, j: int) -> JudgeVote:
        verifier = run.judges_for([c.family], offset=c.index + j)[0]
        v = await verify_score(run, verifier, c.text or "", index=c.index)
        run.emit(JudgeVoted(run.call_id, v.judge, c.model, v.raw, c.index, (c.index,),
                            v.latency_s or 0.0, score=v.score, error=v.error))
        return v

    votes = list(await asyncio.gather(*(score_one(c, j) for c in ok for j in range(per))))
    for c in ok:
        scores = [v.score for v in votes if v.candidate_index == c.index and v.score is not None]
        c.score = sum(scores) / len(scores) if scores else None
    if all(c.score is None for c in ok):
        winner_answer, counts, _ = majority(ok)
        rep = (min((c for c in ok if c.answer == winner_answer), key=lambda c: c.index)
               if winner_answer is not None else min(ok, key=lambda c: c.index))
        return _result(run, cands, votes, rep, status="no_votes", counts=dict(counts),
                       selected_by="no valid verifier score; majority then order")
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in sorted(ok, key=lambda c: c.index):
        groups[c.answer if c.answer is not None else f"#{c.index}"].append(c)
    sums = {key: sum(c.score or 0.0 for c in members) for key, members in groups.items()}
    for c in ok:
        c.votes = round(c.score or 0.0, 4)
    best_key = max(groups, key=lambda key: (sums[key], len(groups[key]), -groups[key][0].index))
    top = sums[best_key]
    tied = [key for key in groups if abs(sums[key] - top) < 1e-9]
    rep = max(groups[best_key], key=lambda c: (c.score or 0.0, -c.index))
    return _result(run, cands, votes, rep, status="decided",
                   selected_by="weighted score" + (" (tie-break: samples, then order)" if len(tied) > 1 else ""),
                   counts={key: round(v, 4) for key, v in sums.items()}, tied=tied if len(tied) > 1 else [])


# -- universal self-consistency -------------------------------------------------------------------
@register("usc", "one call picks the most consistent candidate", judges="one", order=3)
async def usc(run: Run) -> GenerateResult:
    """Universal self-consistency (Chen et al., 2023): one extra call picks the most
    consistent candidate. The candidates are shown in a shuffled order (undone in the result)."""
    cands = await make_candidates(run, run.k, sampling=True)
    ok = [c for c in cands if c.ok]
    if not ok:
        return _result(run, cands, [], None, status="all_failed", selected_by="")
    if len(ok) == 1:
        return _result(run, cands, [], ok[0], status="decided", selected_by="only candidate")
    shown = list(ok)
    run.rng.shuffle(shown)
    v = await ask_choice(run, run.judges[0], shown, label="Response", usc=True)
    if v.choice_index is not None:
        winner = next(c for c in ok if c.index == v.choice_index)
        winner.votes = 1
        return _result(run, cands, [v], winner, status="decided", selected_by="usc selector",
                       counts={str(winner.index): 1})
    winner_answer, counts, _ = majority(ok)
    rep = (min((c for c in ok if c.answer == winner_answer), key=lambda c: c.index)
           if winner_answer is not None else min(ok, key=lambda c: c.index))
    return _result(run, cands, [v], rep, status="no_votes", counts=dict(counts),
                   selected_by="no valid selector choice; majority then order")


# -- tournament --------------------------------------------------------------------------------------
@register("tournament", "pairwise knockout, sides swapped", order=4)
async def tournament(run: Run) -> GenerateResult:
    """Pairwise knockout: each match judged m times (default 2) with the sides swapped on
    every other judgment; byes go to the last candidate of an odd round."""
    cands = await make_candidates(run, run.k, sampling=False)
    ok = [c for c in cands if c.ok]
    if not ok:
        return _result(run, cands, [], None, status="all_failed", selected_by="")
    m = max(1, run.request.judges or 2)
    votes: list[JudgeVote] = []
    alive = sorted(ok, key=lambda c: c.index)
    rnd, match_no = 0, 0
    any_valid = False
    last_rule = "only candidate"
    while len(alive) > 1:
        rnd += 1
        pairs = [(alive[i], alive[i + 1]) for i in range(0, len(alive) - 1, 2)]
        nxt: list[Candidate] = []

        async def play(a: Candidate, b: Candidate, no: int) -> tuple[Candidate, str, list[JudgeVote]]:
            label = f"round {rnd}: #{a.index} vs #{b.index}"
            judges = run.judges_for([a.family, b.family], offset=no * m)
            calls: list[Awaitable[JudgeVote]] = []
            for j in range(m):
                shown = [a, b] if j % 2 == 0 else [b, a]
                calls.append(ask_choice(run, judges[j % len(judges)], shown, match=label))
            ballots = list(await asyncio.gather(*calls))
            tally = Counter(v.choice_index for v in ballots if v.choice_index is not None)
            winner, rule, _ = rank_by_votes([a, b], tally)
            return winner, rule, ballots

        results = await asyncio.gather(*(play(a, b, match_no + i) for i, (a, b) in enumerate(pairs)))
        match_no += len(pairs)
        for winner, rule, ballots in results:
            votes.extend(ballots)
            any_valid = any_valid or any(v.choice_index is not None for v in ballots)
            winner.votes += 1
            nxt.append(winner)
            last_rule = rule
        if len(alive) % 2:
            nxt.append(alive[-1])
        alive = nxt
    champion = alive[0]
    counts = {str(c.index): c.votes for c in ok}
    if not any_valid and len(ok) > 1:
        return _result(run, cands, votes, champion, status="no_votes", counts=counts,
                       selected_by="no valid judge vote; order")
    rule = {"judges": "tournament", "only candidate": "only candidate"}.get(
        last_rule, f"tournament (final {last_rule})")
    return _result(run, cands, votes, champion, status="decided", selected_by=rule, counts=counts)


StrategyFn = Callable[[Run], Awaitable[GenerateResult]]
