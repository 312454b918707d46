"""Turn one LLM reply into a vote for one of the caller's labels (design §4).

The rules, in the order they are applied:

1. **Reasoning is stripped first.** A separate ``reasoning_content``/``reasoning`` field, inline
   ``<think>…</think>`` (also ``<thinking>``, ``<reasoning>`` and ``◁think▷…◁/think▷``), a
   closing tag with no opening one (everything before it is reasoning: the opening tag was part
   of the prompt template) and an unclosed opening tag (the reply was cut by ``max_tokens``:
   everything after it is reasoning). Only the remaining final-answer text is parsed; the
   reasoning is kept for display.
2. **The whole answer text is read**, not just its first line.
3. **Labels match as whole words**, case-insensitively, longest label first: ``YES`` never
   matches ``YESTERDAY`` and ``UNSAFE`` only ever counts for ``UNSAFE``. The label is returned
   in the caller's spelling.
4. **Echoes of the options are not votes**: two or more *different* labels joined by
   ``or``/``/``/``,`` (``SAFE or VULNERABLE?``), or listed on consecutive lines as options
   (``A) …`` / ``B) …``), are discarded.
5. **Negated mentions are not votes**: a negation word a few words before the label in the same
   clause (``not SAFE``, ``isn't compliant``, ``no longer SAFE``, ``cannot be considered SAFE``)
   or right after it (``B is wrong``). With a ``NO`` label, ``no`` followed by a noun (``no
   issues found``) is the determiner, not the label; ``No.``/``No,``/``NO`` are votes.
6. **Explicit statements beat incidental mentions**: ``Answer: X``, ``Final answer: X``, ``The
   answer is (X)``, ``\\boxed{X}``, ``**X**``, ``(X)``, a label alone on a line or opening a
   line with punctuation (``B) …``, ``SAFE: …``), and for multi-letter labels the first label
   after an answer marker on its line (``Final answer: the code is SAFE``). The *last* explicit
   statement wins; without one, the last incidental (un-negated, non-echo) mention wins.
   One refinement: bold/parenthesised labels *inside running prose* ("a **safe** version
   would…") are weaker than a stated answer, so commentary after ``Answer: X`` cannot flip it;
   they still beat plain mentions.
7. **Single-character labels** (``A``–``J``, ``1``–``5``) count only in explicit forms, so the
   article "a" or the pronoun "I" in running prose is never a vote.
8. **No usable answer is ``None``** (no vote), which is never confused with a label such as
   ``UNCLEAR``.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["ParsedReply", "split_reasoning", "extract_label", "parse_reply"]


@dataclass(frozen=True)
class ParsedReply:
    answer: str | None  # canonical label, or None = no vote
    text: str  # final-answer text with reasoning removed
    reasoning: str  # reasoning text for display ("" if none)


# --------------------------------------------------------------------------------------------
# 1. Reasoning
# --------------------------------------------------------------------------------------------

# One regex for every opening/closing variant so a single left-to-right walk can keep a depth
# counter; `selfclose` catches `<think/>`, which must not open an (unclosed) block.
_TAG_RE = re.compile(
    r"<\s*(?P<close>/)?\s*(?:thinking|think|reasoning)\b[^<>]*?(?P<selfclose>/)?\s*>"
    r"|◁\s*(?P<close2>/)?\s*think\s*▷",
    re.IGNORECASE,
)


def split_reasoning(content: str | None, reasoning_field: str | None = None) -> tuple[str, str]:
    """-> (answer_text, reasoning_text)

    ``reasoning_field`` (the provider's separate reasoning channel) comes first in the
    reasoning text, followed by any inline blocks in the order they appear.
    """
    field = reasoning_field.strip() if isinstance(reasoning_field, str) else ""
    if not content:
        return "", field
    if "<" not in content and "◁" not in content:
        # Fast path: the vast majority of replies carry no inline tags at all.
        return content.strip(), field

    # Segments of [is_reasoning, text] in document order, so that an orphan closing tag can
    # retroactively turn everything before it into reasoning.
    segments: list[list[Any]] = []
    depth = 0
    pos = 0
    for m in _TAG_RE.finditer(content):
        segments.append([depth > 0, content[pos:m.start()]])
        pos = m.end()
        if m.group("selfclose"):
            continue
        if m.group("close") or m.group("close2"):
            if depth:
                depth -= 1
            else:
                # `…</think>answer` without an opening tag: chat templates often put `<think>`
                # in the prompt, so everything the model wrote before the close is reasoning.
                for seg in segments:
                    seg[0] = True
        else:
            depth += 1
    # Text after a still-open tag was cut off by max_tokens mid-thought: it is reasoning.
    segments.append([depth > 0, content[pos:]])

    answer = "\n".join(t.strip() for r, t in segments if not r and t.strip())
    parts = [field] if field else []
    parts.extend(t.strip() for r, t in segments if r and t.strip())
    return answer, "\n\n".join(parts)


# --------------------------------------------------------------------------------------------
# 2. Label extraction
# --------------------------------------------------------------------------------------------

# English one-letter words. As labels they need the strictest treatment: "Answer: I think…" or
# "the answer is a tricky one" must not be read as votes for I or A.
_AMBIGUOUS_LETTERS = frozenset({"A", "I"})
# Labels that are also a determiner/negation word ("no issues found").
_DETERMINER_LABELS = frozenset({"NO"})

# Words that introduce a final answer.
_MARKER_WORDS = (
    r"(?:answer|verdict|classification|conclusion|decision|label|result|rating|prediction|"
    r"assessment|judge?ment|sentiment|category|choice|option|response|output)s?"
)
_DECOR_TAIL = r"[\s*_`'\"“”‘’(\[{:$]*$"

# The label directly follows an answer marker: "Answer: X", "The final answer is (X)",
# "option B", "I'd go with B", "<answer>X", "\boxed{X}". Anchored at the end of the prefix.
_IMMEDIATE_MARKER_RE = re.compile(
    r"(?:"
    rf"\b{_MARKER_WORDS}\b[\s*_`]*(?:(?:is|would\s+be|will\s+be|should\s+be)\b|=|:|->|→|[-–—])?"
    r"|\b(?:choose|chose|pick|picked|select|selected|go(?:ing)?\s+with|went\s+with|opt\s+for)\s"
    r"|<\s*(?:final_?)?answer\s*>"
    r"|\\boxed\s*\{\s*(?:\\(?:text|textbf|mathrm|mathbf)\s*\{)?"
    r")" + _DECOR_TAIL,
    re.IGNORECASE,
)
# An answer marker anywhere earlier on the line ("Final answer: the code is SAFE"); greedy `.*`
# so that the *last* marker on the line is the one found.
_MARKER_ANYWHERE_RE = re.compile(
    rf".*\b{_MARKER_WORDS}\b[\s*_`]*(?:(?:is|would\s+be)\b|:|=|->|→|[–—]|-\s)",
    re.IGNORECASE | re.DOTALL,
)
# Nothing but decoration (bullets, quotes, markdown, brackets, a "1." list number) before the
# label on its line.
_DECOR_PREFIX_RE = re.compile(r"\s*(?:\d{1,3}[.)]\s+)?[\W_]*")
# Nothing but decoration after the label ("SAFE", "**B**.", "(B)"); a trailing "?" is a
# question, not a statement.
_ALONE_SUFFIX_RE = re.compile(r"(?:[^\w?]|_)*")
# The label opens the line and is followed by a separator: "SAFE: …", "No, …", "VULNERABLE - …".
_LINE_SEP_SUFFIX_RE = re.compile(r"[*_`'\"”’)\]]*\s*[.:;,!)\]\-–—]")
# Stricter for single characters: "B) …", "B. …", "B: …", "B - …".
_STRICT_LINE_SEP_SUFFIX_RE = re.compile(r"[*_`'\"”’]*(?:[.:)\]]|\s+[-–—:]\s)")
# Markdown emphasis hugging the label: "**X**", "*X*", "__X__", "**(B)**".
_BOLD_PREFIX_RE = re.compile(r"(?:\*{1,3}|_{1,3})[(\[\"'`“‘]*$")
_BOLD_SUFFIX_RE = re.compile(r"[)\]\"'`”’.:!,]*(?:\*{1,3}|_{1,3})")
_PAREN_PREFIX_RE = re.compile(r"[(\[]\s*$")
_PAREN_SUFFIX_RE = re.compile(r"\s*[)\]]")
# "B is correct", "SAFE is the right answer".
_CORRECT_SUFFIX_RE = re.compile(
    r"[)\]*_`'\"”’]*\s+(?:is|was|seems|appears)\s+(?:to\s+be\s+)?(?:the\s+)?(?:most\s+)?"
    r"(?:correct|right|best|accurate)\b",
    re.IGNORECASE,
)
# Negation after the label: "B is wrong", "SAFE is not correct", "(C) can be ruled out".
_NEGATED_SUFFIX_RE = re.compile(
    r"[)\]*_`'\"”’]*\s+(?:is|was|are|seems|appears|would\s+be|can\s+be)"
    r"(?:n['’]t\b|\s+not\b|\s+(?:incorrect|wrong|false|unlikely|ruled\s+out|eliminated)\b)",
    re.IGNORECASE,
)
# For A/I after a marker: "Answer: A because…" is fine, "Answer: I think…" / "is a tricky one"
# is prose. Only these verbs may follow the letter.
_AMBIGUOUS_FOLLOW_RE = re.compile(r"\s+[A-Za-z]")
_AMBIGUOUS_OK_FOLLOW_RE = re.compile(
    r"\s+(?:is|was|because|since|seems|appears|fits|matches)\b", re.IGNORECASE
)
# "no" followed by a word is the determiner ("no issues"), unless the word is a pronoun that
# starts an answer sentence ("No it isn't", "No way").
_DETERMINER_FOLLOW_RE = re.compile(
    r"[ \t]+(?!(?:it|this|that|i|we|they|there|you|he|she|way)\b)[^\W\d_]", re.IGNORECASE
)

# Clause boundaries limit how far back a negation reaches ("not X, but SAFE" is SAFE).
_CLAUSE_BREAKS = frozenset(
    ". ; : ! ? , — – but however although though whereas while and so therefore thus hence "
    "because yet instead".split()
)
# Words and clause punctuation, in one C-level pass; the negation scope is then walked backwards
# in Python over a handful of tokens.
_TOKEN_RE = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)?|[.;:!?,—–]")
_HAS_ALNUM_RE = re.compile(r"[^\W_]")
_NEGATIONS = frozenset(
    "not no never neither nor none cannot non hardly isnt arent wasnt werent dont doesnt didnt "
    "cant wont shouldnt couldnt wouldnt".split()
)
# "no doubt it is SAFE" and "not only SAFE" affirm rather than negate.
_NOT_NEGATING_NEXT = frozenset({"doubt", "only", "just", "question"})
# A negated opinion verb negates the whole clause, however long: "I don't think the code is
# SAFE", "I do not believe this review is POSITIVE".
_OPINION_VERBS = frozenset(
    "think believe consider feel say expect seem appear sure".split()
)
_NEGATION_WINDOW = 4  # words before the label

# Text between two mentions that makes them one option list: only punctuation/whitespace and
# list words ("SAFE or VULNERABLE", "A, B, C, or D", "SAFE/UNSAFE", "option A or option B"), on
# one line: lists spread over lines are handled by _mark_option_lines, and a newline between
# "Answer: B" and a following "(A) is wrong…" must not merge them.
_GAP_PUNCT = r"(?:[^\S\n]|[*_`'\"“”‘’()\[\]{}<>,/|\\&+~=-])"
_JOIN_GAP_RE = re.compile(
    rf"{_GAP_PUNCT}*(?:(?:or|nor|and|vs\.?|versus|either|options?|choices?)\b{_GAP_PUNCT}*)*",
    re.IGNORECASE,
)
# A group is only an option list if some gap really lists: "IS X" in "the answer is X" (with a
# label IS) or "safe (SAFE)" are adjacent mentions, not a list.
_CONNECTOR_RE = re.compile(r"[,/|&]|\b(?:or|nor|and|vs|versus)\b", re.IGNORECASE)
_MAX_GAP = 40
# How far back on a line an answer marker still governs a label; also bounds regex work on
# very long single-line replies.
_MARKER_REACH = 200


@dataclass(frozen=True)
class _LabelSet:
    regex: re.Pattern[str]
    canonical: tuple[str, ...]  # by group index: the caller's spelling
    strict: tuple[bool, ...]  # single-character label: explicit forms only
    ambiguous: tuple[bool, ...]  # also an English one-letter word (A, I)
    determiner: tuple[bool, ...]  # also a determiner ("no")


@lru_cache(maxsize=256)
def _compile(labels: tuple[str, ...]) -> _LabelSet | None:
    canonical: list[str] = []
    seen: set[str] = set()
    for label in labels:
        key = label.strip().casefold()
        # Blank labels cannot be matched; a repeated label would make votes ambiguous, the
        # first spelling wins.
        if key and key not in seen:
            seen.add(key)
            canonical.append(label)
    if not canonical:
        return None
    alternatives = []
    # Longest first: at a given position the alternation takes the first alternative that
    # matches, so "UNSAFE"/"NOT SAFE" must be tried before "SAFE".
    for i in sorted(range(len(canonical)), key=lambda i: -len(canonical[i].strip())):
        stripped = canonical[i].strip()
        parts = [p for p in re.split(r"[\s_\-]+", stripped) if p]
        # Multi-word labels tolerate any separator: NOT_SAFE matches "not safe" and "not-safe".
        body = r"[\s_\-]+".join(map(re.escape, parts)) if parts else re.escape(stripped)
        alternatives.append(f"(?P<g{i}>{body})")
    # Word boundaries that also treat "_" and "-" inside identifiers/compounds as part of the
    # word ("is_safe", "non-compliant", "SAFE-ish") while letting markdown ("__SAFE__") through.
    # The leading lookahead on the possible first characters is only a speed-up (about 3x): it
    # fails most positions before the lookbehinds and the alternation are tried.
    firsts = "".join(sorted({re.escape(c.strip()[0]) for c in canonical}))
    regex = re.compile(
        rf"(?=[{firsts}])(?<![^\W_])(?<![^\W_][_\-])(?:" + "|".join(alternatives)
        + r")(?![^\W_])(?![_\-][^\W_])",
        re.IGNORECASE,
    )
    upper = [c.strip().upper() for c in canonical]
    return _LabelSet(
        regex=regex,
        canonical=tuple(canonical),
        strict=tuple(len(u) == 1 for u in upper),
        ambiguous=tuple(u in _AMBIGUOUS_LETTERS for u in upper),
        determiner=tuple(u in _DETERMINER_LABELS for u in upper),
    )


# How a mention opens its line: not at all, as the whole line ("SAFE", "(B)") or leading a line
# of text ("B) 14", "SAFE: no input reaches the query").
_NOT_AT_LINE_START, _ALONE, _LEADING = 0, 1, 2
# Strength of a mention. Emphasis inside running prose ("a **safe** version would…") is
# explicit but weaker than a stated answer, so explanation after "Answer: X" cannot flip it.
_INCIDENTAL, _WEAK, _STRONG = 0, 1, 2

# Context kept on each side of a mention. Every rule looks at most this far, and bounding the
# slices keeps a pathological single-line reply with thousands of mentions linear.
_WINDOW = 200


class _Mention:
    __slots__ = ("idx", "start", "end", "ls", "le", "prefix", "suffix", "whole_line", "upper",
                 "line_start", "echo", "negated", "strength", "eligible")

    def __init__(self, idx: int, start: int, end: int, ls: int, le: int, text: str) -> None:
        self.idx = idx
        self.start = start
        self.end = end
        self.ls = ls  # start of the mention's line
        self.le = le  # end of the mention's line
        self.prefix = text[max(ls, start - _WINDOW):start]
        self.suffix = text[end:min(le, end + _WINDOW)]
        # Only when the whole line is in view can the label be "alone on its line".
        self.whole_line = start - ls <= _WINDOW and le - end <= _WINDOW
        self.upper = text[start:end].isupper()
        self.line_start = _NOT_AT_LINE_START
        self.echo = False
        self.negated = False
        self.strength = _INCIDENTAL
        self.eligible = False


def _negated_before(prefix: str) -> bool:
    """A negation word among the last few words of the clause preceding the label."""
    clause: list[str] = []
    for token in reversed(_TOKEN_RE.findall(prefix)):
        token = token.lower()
        if token in _CLAUSE_BREAKS:
            break
        clause.append(token)
    clause.reverse()
    n = len(clause)
    for i, word in enumerate(clause):
        if word in _NEGATIONS or word.endswith(("n't", "n’t")):
            following = clause[i + 1:i + 3]
            nxt = following[0] if following else ""
            if nxt in _OPINION_VERBS or (nxt == "really" and following[1:] and
                                         following[1] in _OPINION_VERBS):
                return True
            if i >= n - _NEGATION_WINDOW and nxt not in _NOT_NEGATING_NEXT:
                return True
    return False


def _mark_echo_groups(text: str, mentions: list[_Mention]) -> None:
    """Mentions of >= 2 different labels joined into one option list are echoes, not votes."""
    group = [mentions[0]]
    listed = False  # some gap in the group holds a connector
    for prev, cur in zip(mentions, mentions[1:]):
        gap = text[prev.end:cur.start]
        if len(gap) <= _MAX_GAP and _JOIN_GAP_RE.fullmatch(gap):
            group.append(cur)
            # A label spelled like a connector ("OR") can itself be the "or" of the list.
            listed = listed or bool(_CONNECTOR_RE.search(gap)) \
                or bool(_CONNECTOR_RE.fullmatch(text, prev.start, prev.end)) \
                or bool(_CONNECTOR_RE.fullmatch(text, cur.start, cur.end))
            continue
        if listed:
            _flag_if_mixed(group)
        group, listed = [cur], False
    if listed:
        _flag_if_mixed(group)


def _mark_option_lines(text: str, mentions: list[_Mention]) -> None:
    """Consecutive lines each opening with a different label ("A) 12" / "B) 14") list options."""
    run: list[_Mention] = []
    for cur in mentions:
        if not cur.line_start:
            continue
        # Blank lines may separate options, but the shape must match: after "A) 12" / "B) 14"
        # a bare "B" on its own line is the answer, not another option.
        if run and cur.ls > run[-1].ls and cur.line_start == run[-1].line_start \
                and not text[run[-1].le:cur.ls].strip():
            run.append(cur)
            continue
        _flag_if_mixed(run)
        run = [cur]
    _flag_if_mixed(run)


def _flag_if_mixed(group: list[_Mention]) -> None:
    if len(group) > 1 and len({m.idx for m in group}) > 1:
        for m in group:
            m.echo = True


def _strength(m: _Mention, spec: _LabelSet) -> int:
    prefix, suffix = m.prefix, m.suffix
    if m.line_start:
        return _STRONG
    if _IMMEDIATE_MARKER_RE.search(prefix[-48:]):  # longest marker + decoration fits
        if spec.ambiguous[m.idx] and _AMBIGUOUS_FOLLOW_RE.match(suffix) \
                and not _AMBIGUOUS_OK_FOLLOW_RE.match(suffix):
            return _INCIDENTAL  # "Answer: I think…", "the answer is a tricky one"
        return _STRONG
    if spec.ambiguous[m.idx] and not m.upper:
        return _INCIDENTAL  # "(a)"/"(i)" mid-sentence are enumerations in prose
    if (_BOLD_PREFIX_RE.search(prefix[-12:]) and _BOLD_SUFFIX_RE.match(suffix)) \
            or (_PAREN_PREFIX_RE.search(prefix[-12:]) and _PAREN_SUFFIX_RE.match(suffix)) \
            or (not spec.ambiguous[m.idx] and _CORRECT_SUFFIX_RE.match(suffix)):
        # ("B is correct" is not for A/I: "I was right" is the pronoun.)
        # "**SAFE** is my verdict" opens the line; "a **safe** version" sits in prose.
        return _WEAK if _HAS_ALNUM_RE.search(prefix) else _STRONG
    return _INCIDENTAL


def extract_label(text: str, labels: Sequence[str]) -> str | None:
    """Label from final-answer text (reasoning already stripped).

    Returns the caller's spelling of the label, or None when the text holds no usable vote.

    Choice of winner: the last explicit statement (see module docstring) wins; emphasis inside
    prose ("a **safe** version") only counts as explicit when no stated answer ("Answer: X",
    a label on its own line, ...) exists. When there is no explicit statement, the last
    *incidental* mention wins, after discarding negated mentions and echoes of
    the option list. So a reply that mentions several different labels in passing ("it is
    not VULNERABLE here, the code is SAFE") is read by its last affirmative mention: models
    conclude at the end, and the last mention is the conclusion more often than the first.
    Single-character labels never count incidentally.
    """
    if not text:
        return None
    if isinstance(labels, str):
        labels = (labels,)
    spec = _compile(tuple(labels))
    if spec is None:
        return None

    mentions: list[_Mention] = []
    newlines: list[int] | None = None
    for match in spec.regex.finditer(text):
        if newlines is None:
            # Line boundaries once, then bisect: rfind/find per mention would be quadratic on a
            # long line full of mentions.
            newlines = []
            i = text.find("\n")
            while i >= 0:
                newlines.append(i)
                i = text.find("\n", i + 1)
        assert match.lastgroup is not None  # every alternative is a named group
        idx = int(match.lastgroup[1:])
        start, end = match.span()
        k = bisect_left(newlines, start)
        ls = newlines[k - 1] + 1 if k else 0
        k = bisect_left(newlines, end, k)
        le = newlines[k] if k < len(newlines) else len(text)
        m = _Mention(idx, start, end, ls, le, text)
        if spec.determiner[idx] and not m.upper and _DETERMINER_FOLLOW_RE.match(m.suffix):
            continue  # "no issues found": the determiner, not the label NO
        mentions.append(m)
    if not mentions:
        return None

    for m in mentions:
        if m.whole_line and _DECOR_PREFIX_RE.fullmatch(m.prefix):
            sep = _STRICT_LINE_SEP_SUFFIX_RE if spec.strict[m.idx] else _LINE_SEP_SUFFIX_RE
            if _ALONE_SUFFIX_RE.fullmatch(m.suffix):
                m.line_start = _ALONE
            elif sep.match(m.suffix):
                m.line_start = _LEADING
    _mark_echo_groups(text, mentions)
    _mark_option_lines(text, mentions)

    prev_end_on_line = -1
    prev_ls = -1
    last_explicit_end = -1
    for m in mentions:
        # A negation only reaches back to the previous label on the same line: in "not
        # VULNERABLE SAFE" the "not" belongs to VULNERABLE.
        clause_start = prev_end_on_line if prev_ls == m.ls else m.ls
        prev_end_on_line, prev_ls = m.end, m.ls
        if m.echo:
            continue
        strength = _strength(m, spec)
        if strength == _INCIDENTAL and spec.strict[m.idx]:
            continue  # a single character in prose is never a vote; skip the negation work
        m.negated = _negated_before(text[max(clause_start, m.start - 80):m.start]) \
            or bool(_NEGATED_SUFFIX_RE.match(m.suffix))
        if m.negated:
            continue
        if strength == _INCIDENTAL:
            # The first affirmative label after "Final answer:" on its line ("Final answer: it
            # is VULNERABLE. A SAFE variant would…"). Only the first: once the marker has been
            # answered, later labels on the line are commentary.
            window = m.prefix[-_MARKER_REACH:]
            marker = _MARKER_ANYWHERE_RE.match(window)
            if marker and m.start - len(window) + marker.end() >= last_explicit_end:
                strength = _STRONG
        if strength != _INCIDENTAL:
            last_explicit_end = m.end
        m.strength = strength
        m.eligible = True

    # The last mention of the strongest kind present wins: a stated answer, else emphasis in
    # prose, else the last plain (un-negated, non-echo) mention.
    best = None
    for m in mentions:
        if m.eligible and (best is None or m.strength >= best.strength):
            best = m
    return None if best is None else spec.canonical[best.idx]


def parse_reply(content: str | None, labels: Sequence[str], *,
                reasoning: str | None = None) -> ParsedReply:
    """Split off the reasoning, then read the vote from the final-answer text only."""
    text, reasoning_text = split_reasoning(content, reasoning)
    return ParsedReply(answer=extract_label(text, labels), text=text, reasoning=reasoning_text)
