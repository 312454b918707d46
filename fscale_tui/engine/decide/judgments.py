"""Reading judges: which candidate a judge chose, what score a verifier gave, P(yes).

The choice parser is strict on purpose (the original tool counted the "1" of "Output 1 is
worse" as a vote). Rules, applied to the reply with its reasoning stripped:

1. **Only explicit choice statements count**, and the *last* one wins:
   ``Best: Output 2`` / ``The best output is Output 2`` / ``Final answer: Output 2`` /
   ``The most consistent response is Response 2``; ``Best: 2`` / ``Winner - 2`` at the end of
   a line; ``Output 2 is (the) best / better / correct / the winner / preferred / more
   accurate …``, ``Output 2 wins``; ``I choose / pick / select / prefer / go with / vote for
   Output 2``; ``\\boxed{Output 2}``, ``[[2]]``; a line holding nothing but ``Output 2``; a
   bare ``2`` only as the reply's last line.
2. **Negative or comparative-down statements are never votes**: ``Output 1 is worse``,
   ``Output 1 is not the best``, ``I would not choose Output 1`` match no positive pattern
   (a negation between the verb and the label breaks the pattern).
3. **A bare number elsewhere is never a vote** ("2 apples", "step 1", and "the answer is 2",
   which in a math task is a result, not a ballot); a label mention outside an explicit
   statement counts only when it is the *only* label mentioned in the whole reply and is not
   negated (``I think Output 2 answers the question.``).
4. Numbers outside ``1..n`` are ignored. No usable statement = no vote (``None``).
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..ask.parsing import split_reasoning

__all__ = ["parse_choice", "parse_score", "p_yes", "choice_labels"]

_POSITIVE = (r"(?:the\s+|clearly\s+|much\s+|slightly\s+|definitely\s+|overall\s+|by\s+far\s+)*"
             r"(?:best|better|correct|right|winner|superior|stronger|strongest|preferred|"
             r"preferable|most\s+\w+|more\s+(?:accurate|correct|complete|helpful|consistent)|"
             r"the\s+one)")
_CHOICE_WORDS = (r"(?:best|winner|winning|choice|chosen|verdict|pick|selection|preferred|preference|"
                 r"decision|final\s+answer|answer|most\s+consistent)")
#: Words after which a bare number is a choice ("Best: 2"); "answer" is not one of them.
_BARE_CHOICE_WORDS = r"(?:best|winner|choice|verdict|pick|selection|preferred|decision)"
_NEGATION = re.compile(r"\b(?:not|n't|never|no)\b", re.IGNORECASE)


def choice_labels(n: int, label: str = "Output") -> tuple[str, ...]:
    """The neutral labels shown to a judge: ``Output 1`` … ``Output n``."""
    return tuple(f"{label} {i}" for i in range(1, n + 1))


def _patterns(label: str) -> list[re.Pattern[str]]:
    lab = rf"(?:{re.escape(label)}|output|response|candidate)s?"
    strict_ref = rf"{lab}\s*(?:no\.?\s*|number\s*)?#?\s*\(?(\d+)\)?"
    bare_end = r"(?:the\s+)?(?:one\s+)?#?\(?(\d+)\)?[\s*_`.!)]*$"
    sep = r"[\s*_`]*(?:is|would\s+be|:|=|-|–|—|→)[\s*_`:]*(?:the\s+)?(?:one\s+)?"
    return [
        # "Best: Output 2", "The best output is Output 2", "Final answer: Output 2",
        # "The most consistent response is Response 2"
        re.compile(rf"\b{_CHOICE_WORDS}(?:\s+{lab})?{sep}{strict_ref}", re.IGNORECASE),
        # "Best: 2" / "Winner - 2" at the end of a line (never "answer is 2": that is a result)
        re.compile(rf"\b{_BARE_CHOICE_WORDS}(?:\s+{lab})?{sep}{bare_end}",
                   re.IGNORECASE | re.MULTILINE),
        # "Output 2 is the best", "Output 2 is better than Output 1", "Output 2 wins"
        re.compile(rf"{strict_ref}[\s*_`]*(?:is|seems|appears|would\s+be|was)"
                   rf"(?:\s+to\s+be)?\s+{_POSITIVE}", re.IGNORECASE),
        re.compile(rf"{strict_ref}[\s*_`]*\s+wins\b", re.IGNORECASE),
        # "I choose Output 2", "I'd go with Output 2", "Selecting Output 2" (negation checked)
        re.compile(rf"\b(?:choose|chose|choosing|pick|picked|picking|select|selected|selecting|"
                   rf"prefer|preferring|go\s+with|going\s+with|vote\s+for|voting\s+for)"
                   rf"\s+(?:the\s+)?{strict_ref}", re.IGNORECASE),
        # "\boxed{Output 2}", "[[2]]"
        re.compile(rf"\\boxed\s*\{{\s*(?:\\text\s*\{{)?\s*{strict_ref}", re.IGNORECASE),
        re.compile(r"\[\[\s*(\d+)\s*\]\]"),
        # A line with nothing but the label: "Output 2", "**Output 2**."
        re.compile(rf"^[\s>*_`#\-•]*{strict_ref}[\s*_`.!)]*$", re.IGNORECASE | re.MULTILINE),
    ]


_CHOOSE_PATTERN = 4


_CACHE: dict[str, list[re.Pattern[str]]] = {}


def parse_choice(reply: str | None, n: int, *, label: str = "Output",
                 reasoning: str | None = None) -> int | None:
    """The 1-based position a judge chose among ``n`` shown candidates, or None."""
    text, _ = split_reasoning(reply, reasoning)
    if not text:
        return None
    patterns = _CACHE.setdefault(label, _patterns(label))
    found: list[tuple[int, int]] = []  # (position in text, choice)
    for pat in patterns:
        for m in pat.finditer(text):
            num = next((g for g in m.groups() if g is not None), None)
            if num is None:
                continue
            value = int(num)
            if not 1 <= value <= n:
                continue
            # "... is not the best: Output 2" style negation right before the statement's verb
            head = text[max(0, m.start() - 12):m.start()]
            if pat is patterns[_CHOOSE_PATTERN] and _NEGATION.search(head):
                continue
            found.append((m.end(), value))
    last_line = text.strip().splitlines()[-1] if text.strip() else ""
    tail = re.fullmatch(r"[\s>*_`#]*\(?(\d+)\)?[\s*_`.!)]*", last_line)
    if tail and 1 <= int(tail.group(1)) <= n:
        found.append((len(text), int(tail.group(1))))
    if found:
        return max(found)[1]
    # Rule 3: a lone label mention is a vote only if it is the only one.
    lab = rf"(?:{re.escape(label)}|output|response|candidate)s?"
    mentioned = {int(x) for x in re.findall(rf"\b{lab}\s*#?\s*(\d+)\b", text, re.IGNORECASE)}
    mentioned = {x for x in mentioned if 1 <= x <= n}
    if len(mentioned) == 1:
        only = mentioned.pop()
        mentions = list(re.finditer(rf"\b{lab}\s*#?\s*{only}\b", text, re.IGNORECASE))
        after = text[mentions[-1].end():mentions[-1].end() + 40]
        before = text[max(0, mentions[-1].start() - 24):mentions[-1].start()]
        if _NEGATION.search(before):
            return None
        if not re.match(r"\s*(?:is|was|seems|appears)?\s*(?:not|n't|worse|wrong|incorrect|"
                        r"bad|poor|weaker|inferior|flawed|fails)", after, re.IGNORECASE):
            return only
    return None


_SCORE_RES = [
    re.compile(r"\b(?:score|rating|grade|rate\s+it|i\s+rate\s+(?:it|this))\s*(?:is|of|:|=|-)?"
               r"[\s*_`:]*(\d+(?:\.\d+)?)(?:\s*(?:/|out\s+of)\s*10)?", re.IGNORECASE),
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*10\b", re.IGNORECASE),
    re.compile(r"\\boxed\s*\{\s*(\d+(?:\.\d+)?)\s*\}"),
    re.compile(r"^[\s*_`#>]*(\d+(?:\.\d+)?)[\s*_`.]*$", re.MULTILINE),
]


def parse_score(reply: str | None, *, low: float = 1, high: float = 10,
                reasoning: str | None = None) -> float | None:
    """A verifier's score, scaled to [0, 1]; the last explicit statement wins."""
    text, _ = split_reasoning(reply, reasoning)
    if not text:
        return None
    found: list[tuple[int, float]] = []
    for pat in _SCORE_RES:
        for m in pat.finditer(text):
            value = float(m.group(1))
            if low <= value <= high:
                found.append((m.end(), value))
    if not found:
        return None
    value = max(found)[1]
    return (value - low) / (high - low) if high > low else 1.0


def _token_kind(token: str) -> str | None:
    t = token.strip().strip(".,:;!*_`'\"").lower()
    if t in ("yes", "y", "true", "correct"):
        return "yes"
    if t in ("no", "n", "false", "incorrect"):
        return "no"
    return None


def p_yes(logprobs: Any) -> float | None:
    """P(yes) / (P(yes) + P(no)) at the first yes/no token of an OpenAI ``logprobs`` object.

    Uses the token's ``top_logprobs`` when present (both alternatives), else the sampled token
    alone (1 or 0 is not informative, so that case returns None and the text decides).
    """
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return None
    for entry in content:
        if not isinstance(entry, dict) or _token_kind(str(entry.get("token", ""))) is None:
            continue
        probs = {"yes": 0.0, "no": 0.0}
        for alt in entry.get("top_logprobs") or []:
            if not isinstance(alt, dict):
                continue
            kind = _token_kind(str(alt.get("token", "")))
            if kind is not None:
                logprob: Any = alt.get("logprob")  # a number, if the provider is well-behaved
                try:
                    probs[kind] += math.exp(float(logprob))
                except (TypeError, ValueError):
                    continue
        total = probs["yes"] + probs["no"]
        return probs["yes"] / total if total > 0 else None
    return None


def yes_no(answer: str | None) -> float | None:
    """1.0 for a Yes verdict, 0.0 for No, None when the reply stated neither (the verdict is
    the label the engine's one reply parser found, ``Reply.answer``)."""
    if answer is None:
        return None
    return 1.0 if answer == "Yes" else 0.0


# -- prompts -----------------------------------------------------------------------------------
def _block(text: str) -> str:
    return "<<<\n" + text.strip() + "\n>>>"


def judge_messages(question: str, context: str | None, texts: list[str],
                   label: str = "Output") -> list[dict[str, str]]:
    """Best-of-n ballot; ``texts`` are already in this judge's shuffled order."""
    n = len(texts)
    system = ("You are an impartial judge. Several candidate outputs answer the same task. Pick "
              "the single best one: correct, complete, and faithful to the context. The order "
              "in which they are shown and their length mean nothing. Think briefly if you need "
              f"to, then end your reply with a final line of the form 'Best: {label} N'.")
    if context:
        system += "\n\nContext:\n" + context
    body = f"Task:\n{question.strip()}\n\n"
    body += "\n\n".join(f"{label} {i}:\n{_block(t)}" for i, t in enumerate(texts, 1))
    body += f"\n\nWhich output is best? End with 'Best: {label} N' (N from 1 to {n})."
    return [{"role": "system", "content": system}, {"role": "user", "content": body}]


def usc_messages(question: str, context: str | None, texts: list[str]) -> list[dict[str, str]]:
    """Universal self-consistency (Chen et al., 2023): pick the most consistent response."""
    body = f"I have generated the following responses to the question: {question.strip()}\n\n"
    if context:
        body = f"Context:\n{context}\n\n" + body
    body += "\n\n".join(f"Response {i}:\n{_block(t)}" for i, t in enumerate(texts, 1))
    body += ("\n\nEvaluate these responses.\nSelect the most consistent response based on "
             "majority consensus.\nStart your answer with \"The most consistent response is "
             "Response X\" (without quotes).")
    return [{"role": "user", "content": body}]


def score_messages(question: str, context: str | None, text: str, *,
                   partial: bool = False) -> list[dict[str, str]]:
    """Verifier (weighted best-of-n) or process-reward stand-in (beam search, DVTS)."""
    system = "You are a careful grader of solutions."
    if context:
        system += "\n\nContext:\n" + context
    if partial:
        ask = ("Here are the steps of a solution written so far. Judge only these steps: are "
               "they correct and on track to the right final answer? Rate them from 1 (wrong or "
               "off track) to 10 (correct and promising).")
        what = "Solution so far"
    else:
        ask = ("How likely is this solution to be correct? Rate it from 1 (certainly wrong) to "
               "10 (certainly correct).")
        what = "Proposed solution"
    body = (f"Problem:\n{question.strip()}\n\n{what}:\n{_block(text)}\n\n{ask} "
            "End with a final line of the form 'Score: N'.")
    return [{"role": "system", "content": system}, {"role": "user", "content": body}]


def yes_messages(question: str, context: str | None, text: str) -> list[dict[str, str]]:
    system = "You are a careful grader of solutions."
    if context:
        system += "\n\nContext:\n" + context
    body = (f"Problem:\n{question.strip()}\n\nProposed solution:\n{_block(text)}\n\n"
            "Is this solution correct? Answer Yes or No.")
    return [{"role": "system", "content": system}, {"role": "user", "content": body}]


SCORE_LABELS = tuple(str(i) for i in range(1, 11))
