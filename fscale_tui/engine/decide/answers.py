"""Final answers of free-form solutions: extraction and normalisation (design §6).

Self-consistency, weighted best-of-N and gold checking compare *final answers*, not texts.
The rules follow search-and-learn / Qwen2.5-Math's parser, without a sympy dependency:

Extraction (``extract_answer``), on the answer text with reasoning stripped; the **last**
explicit statement wins:

1. ``\\boxed{…}`` (balanced braces, ``\\fbox`` too);
2. a GSM8K-style ``#### 42`` line;
3. ``The (final) answer is …`` / ``Final answer: …`` / ``Answer: …`` (up to the end of the
   sentence or line);
4. only with ``fallback=True``: the last number in the text (what GSM8K graders do).

When a free-form reply *has* a final answer (``asks_for_number``): a reply that states one
explicitly (rules 1–3) has it, whatever the task; the last-number fallback (rule 4) is used only
when the task asks for a number: a ``gold`` answer that is a number was given, or the question
itself is a computation (an arithmetic expression such as ``17*23`` or ``3 + 4``, or wording such
as "how many", "how much", "calculate", "compute", "evaluate", "solve", "sum of", "product
of", "what is <number>"). A regex, a summary or a poem has no final answer (``None``), even if
it mentions numbers.

Normalisation (``normalize_answer``): LaTeX wrappers (``$``, ``\\text{}``, ``\\left``, ``\\!``),
currency, percent signs, thousands separators and trailing units are removed; numbers become
one canonical spelling (``1,000.00`` = ``1000``, ``\\frac{1}{2}`` = ``1/2`` = ``0.5``, ``five``
= ``5``); anything else is lower-cased with surrounding punctuation and spaces collapsed.
"""

from __future__ import annotations

import re
from fractions import Fraction

from ..ask.parsing import split_reasoning

__all__ = ["answers_match", "asks_for_number", "extract_answer", "final_answer", "gold_answer", "gsm8k_gold", "normalize_answer"]

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
}

_HASH_RE = re.compile(r"^\s*#{4}\s*(?P<ans>.+?)\s*$", re.MULTILINE)
_ANSWER_IS_RE = re.compile(
    r"(?:\b(?:the\s+)?(?:final\s+)?answer\s*(?:is|=|:)|\bfinal\s+answer\s*(?:is|=|:)?)"
    r"[\s:*_`]*(?P<ans>[^\n]+)",
    re.IGNORECASE,
)
_NUMBER_RE = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")
# Things that end a stated answer: "The answer is 42. I hope it is correct." keeps "42".
# A parenthesis after something ("42 (forty-two)") starts a remark; "(B)" alone is the answer.
_SENTENCE_END_RE = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|;|(?<=\S)\s+\(|\bI hope\b|"
                              r"\bbecause\b|\bsince\b|\bwhich\b", re.IGNORECASE)


def _boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` / ``\\fbox{…}`` with balanced braces."""
    last = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            last = (m.start(), text[m.end():i - 1])
    return last[1] if last else None


def extract_answer(text: str | None, *, fallback: bool = True,
                   reasoning: str | None = None) -> str | None:
    """The raw final-answer string of a solution, or None when it states none."""
    if not text:
        return None
    answer_text, _ = split_reasoning(text, reasoning)
    if not answer_text:
        return None
    found: list[tuple[int, str]] = []
    boxed = _boxed(answer_text)
    if boxed is not None and boxed.strip():
        idx = answer_text.rfind("\\boxed")
        found.append((idx if idx >= 0 else answer_text.rfind("\\fbox"), boxed.strip()))
    for m in _HASH_RE.finditer(answer_text):
        found.append((m.start(), m.group("ans")))
    for m in _ANSWER_IS_RE.finditer(answer_text):
        ans = m.group("ans")
        if "\\boxed" in ans or "\\fbox" in ans:
            continue  # already taken, with its braces intact
        inner = _ANSWER_IS_RE.search(ans)  # "Final Answer: The answer is: 3"
        while inner is not None:
            ans = inner.group("ans")
            inner = _ANSWER_IS_RE.search(ans)
        cut = _SENTENCE_END_RE.search(ans)
        ans = ans[:cut.start()] if cut else ans
        ans = ans.strip(" *_`:")
        if ans:
            found.append((m.start(), ans))
    if found:
        return max(found, key=lambda p: p[0])[1].strip()
    if fallback:
        numbers: list[str] = _NUMBER_RE.findall(answer_text)
        if numbers:
            return numbers[-1].strip()
    return None


def _unwrap_latex(s: str) -> str:
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", " ")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\$", "$").replace("\\%", "%")
    s = re.sub(r"\\boxed\s*\{(.*)\}", r"\1", s)
    for _ in range(3):
        s = re.sub(r"\\(?:text|textbf|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\1/\2", s)
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)
    s = s.replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", "")
    return s.replace("$", "")


def _as_number(s: str) -> Fraction | None:
    """A number if ``s`` is one (with optional currency, sign, units or % around it)."""
    t = s.strip().lower()
    t = re.sub(r"^(?:[a-z]\s*=\s*)", "", t)  # "x = 5"
    t = t.strip(" .:;!*_`'\"")
    if t in _NUMBER_WORDS:
        return Fraction(_NUMBER_WORDS[t])
    m = re.fullmatch(
        r"(?:[a-z ]*?\s)?"  # a leading word or two: "rs 50", "usd 5"
        r"(?P<sign>[-+−])?\s*(?:[$€£¥]|usd|eur|rs\.?)?\s*"
        r"(?P<num>\(?-?\d[\d,]*(?:\.\d*)?\)?(?:\s*/\s*\(?\d+(?:\.\d+)?\)?)?|\.\d+)"
        r"\s*(?:%|percent|[a-z][a-z .²³/-]*)?",
        t,
    )
    if not m:
        return None
    num = m.group("num").replace("(", "").replace(")", "").replace(" ", "")
    if re.search(r"\d,\d{1,2}(?!\d)", num):  # "1,5" is a decimal comma in some locales: not ours
        return None
    num = num.replace(",", "")
    try:
        if "/" in num:
            a, b = num.split("/")
            value = Fraction(a) / Fraction(b)
        else:
            value = Fraction(num.rstrip("."))
    except (ValueError, ZeroDivisionError):
        return None
    if m.group("sign") in ("-", "−"):
        value = -value
    return value


def _format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return format(float(value), ".10g")


def normalize_answer(answer: str | None) -> str | None:
    """One canonical spelling per distinct answer (None stays None)."""
    if answer is None:
        return None
    s = _unwrap_latex(str(answer)).strip()
    if not s:
        return None
    number = _as_number(s)
    if number is not None:
        return _format_number(number)
    s = s.lower()
    s = re.sub(r"\s+", " ", s)
    s = s.strip(" .:;!*_`'\"")
    if re.fullmatch(r"\(\s*[a-z0-9]\s*\)", s):  # "(b)"
        s = s[1:-1].strip()
    return s or None


def final_answer(text: str | None, *, fallback: bool = True, reasoning: str | None = None) -> str | None:
    """``normalize_answer(extract_answer(text))``."""
    return normalize_answer(extract_answer(text, fallback=fallback, reasoning=reasoning))


def answers_match(a: str | None, b: str | None) -> bool:
    """Two answers (raw or normalised) denote the same value."""
    na, nb = normalize_answer(a), normalize_answer(b)
    if na is None or nb is None:
        return False
    if na == nb:
        return True
    x, y = _as_number(na), _as_number(nb)
    if x is not None and y is not None:
        return abs(float(x) - float(y)) <= 1e-6 * max(1.0, abs(float(y)))
    return False


def gold_answer(gold: str | None) -> str | None:
    """A gold answer as given by a user or a dataset ('18', '#### 18', a full solution)."""
    if gold is None or not str(gold).strip():
        return None
    text = str(gold)
    if "####" in text or "\\boxed" in text or re.search(r"answer\s*(?:is|:)", text, re.I):
        extracted = extract_answer(text, fallback=False)
        if extracted is not None:
            return normalize_answer(extracted)
    return normalize_answer(text)


def gsm8k_gold(answer_field: str) -> str | None:
    """The gold answer of a GSM8K item: what follows ``#### ``."""
    m = _HASH_RE.search(answer_field or "")
    return normalize_answer(m.group("ans")) if m else None


# An arithmetic expression: digits around + * / × ÷ ^ (a "-" only with spaces, so dates such as
# 2024-01-02 and ranges such as 3-5 are not computations; "/" not between two 1-2 digit groups
# followed by another "/", so 01/02/2024 is not one either).
_EXPRESSION_RE = re.compile(r"\d\s*[+*×÷^]\s*-?\(?\d|\d\s+[-−]\s+\(?\d|"
                            r"(?<![\d/])\d+\s*/\s*\d+(?![\d/])")
_COMPUTE_WORDS_RE = re.compile(
    r"\bhow\s+(?:many|much|long|far|old|fast)\b|\b(?:calculate|compute|evaluate|solve)\b|"
    r"\b(?:sum|product|quotient|difference|total|average|mean|remainder|square\s+root)\s+of\b|"
    r"\bwhat\s+is\s+[-−(]?\d|\bwhat\s+number\b",
    re.IGNORECASE)


def asks_for_number(question: str | None, gold: str | None = None) -> bool:
    """Whether a task asks for a numeric final answer (so the last number of a reply that
    states none explicitly may be taken as its answer): a numeric ``gold`` was given, or the
    question is a computation (see the module docstring)."""
    if gold is not None and str(gold).strip():
        g = gold_answer(gold)
        if g is not None and _as_number(g) is not None:
            return True
    q = question or ""
    return bool(_EXPRESSION_RE.search(q) or _COMPUTE_WORDS_RE.search(q))
