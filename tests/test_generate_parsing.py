"""Judge-reply parsing, verifier scores and answer normalisation (no server needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fscale_tui.engine.decide.answers import (
    answers_match,
    asks_for_number,
    extract_answer,
    final_answer,
    gold_answer,
    gsm8k_gold,
    normalize_answer,
)
from fscale_tui.engine.decide.judgments import p_yes, parse_choice, parse_score


@pytest.mark.parametrize("reply, n, expected", [
    ("Output 1 is worse, Output 2 is best", 3, 2),
    ("Output 2 is best, Output 1 is worse", 3, 2),
    ("Best: Output 3", 3, 3),
    ("The best output is Output 2.", 3, 2),
    ("Output 2 is better than Output 1.", 2, 2),
    ("Output 3 wins.", 3, 3),
    ("I choose Output 3.", 3, 3),
    ("I would not choose Output 1. I choose Output 3.", 3, 3),
    ("**Output 2**", 3, 2),
    ("Reasoning about both...\n2", 3, 2),
    ("Best: 2", 3, 2),
    ("[[1]]", 2, 1),
    ("I think Output 2 answers the question.", 3, 2),
    ("<think>Output 1 is best</think>Best: Output 3", 3, 3),
    # never a vote:
    ("I would not choose Output 1.", 3, None),
    ("Output 1 is wrong.", 3, None),
    ("There are 2 apples and 3 pears.", 3, None),
    ("Comparing Output 1 and Output 2: both are fine.", 3, None),
    ("Best: Output 7", 3, None),
    ("", 3, None),
    # a number that is a math result, not a ballot:
    ("Output 1 is correct. The answer is 2.", 3, 1),
])
def test_judge_parser_reads_the_final_choice_not_any_digit(reply, n, expected):
    assert parse_choice(reply, n) == expected


def test_usc_selector_reply_with_response_labels():
    assert parse_choice("The most consistent response is Response 2", 3, label="Response") == 2


@given(st.integers(1, 9), st.integers(1, 9))
def test_a_worse_statement_never_beats_an_explicit_best(worse, best):
    n = max(worse, best)
    assert parse_choice(f"Output {worse} is worse, Output {best} is best", n) == best
    assert parse_choice(f"Output {best} is the best. Output {worse} is worse.", n) == best


@pytest.mark.parametrize("reply, expected", [
    ("Score: 7", 6 / 9), ("I rate it 10/10", 1.0), ("The steps look fine.\nScore: **1**", 0.0),
    ("5", 4 / 9), ("Score: 11", None), ("no idea", None),
])
def test_verifier_score_is_scaled_to_unit_interval(reply, expected):
    got = parse_score(reply)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_p_yes_from_top_logprobs():
    lp = {"content": [{"token": " Yes", "logprob": -0.1, "top_logprobs": [
        {"token": " Yes", "logprob": -0.1}, {"token": "No", "logprob": -2.4},
        {"token": "Maybe", "logprob": -5.0}]}]}
    import math
    py, pn = math.exp(-0.1), math.exp(-2.4)
    assert p_yes(lp) == pytest.approx(py / (py + pn))
    assert p_yes(None) is None and p_yes({"content": [{"token": "Hmm"}]}) is None


@pytest.mark.parametrize("text, expected", [
    ("The answer is 42.", "42"),
    ("so \\boxed{\\frac{1}{2}}", "0.5"),
    ("#### 1,000", "1000"),
    ("Final answer: $18.00", "18"),
    ("Therefore, the final answer is: $\\boxed{18}$. I hope it is correct.", "18"),
    ("The answer is: 18 dollars.", "18"),
    ("The answer is 7 (seven).", "7"),
    ("Answer: five", "5"),
    ("The answer is (B)", "b"),
    ("<think>the answer is 3</think>The answer is 4", "4"),
    ("She has 9 eggs, so she makes 18", "18"),
    ("The answer is 3.5 hours", "3.5"),
    ("**Final Answer:** The answer is: 3", "3"),
    ("-7", "-7"),
    ("50%", "50"),
    ("Nothing to see", None),
])
def test_final_answers_are_extracted_and_normalised(text, expected):
    assert final_answer(text) == expected


def test_strict_extraction_needs_an_explicit_statement():
    assert extract_answer("She has 9 eggs", fallback=False) is None
    assert extract_answer("She has 9 eggs.\n\n#### 9", fallback=False) == "9"


def test_answers_match_numbers_across_spellings():
    assert answers_match("1/2", "0.5") and answers_match("$1,000", "1000.0")
    assert answers_match("Paris", " paris. ") and not answers_match("41", "42")
    assert not answers_match(None, "1")
    assert gsm8k_gold("Janet sells 9 eggs.\n#### 18") == "18"
    assert gold_answer("#### 18") == gold_answer("18") == "18"


@given(st.integers(-10**9, 10**9))
def test_integers_normalise_to_themselves_with_or_without_separators(n):
    assert normalize_answer(f"{n:,}") == str(n) == normalize_answer(str(n))


# -- when a task has a final answer (issue 12 item 9) ---------------------------------------------
@pytest.mark.parametrize("question, gold, expected", [
    ("What is 17*23?", None, True),
    ("Compute 3 + 4", None, True),
    ("What is 12 - 5?", None, True),
    ("How many eggs does Janet sell every day?", None, True),
    ("A train leaves at 3 pm at 60 km/h. How far has it gone at 5 pm?", None, True),
    ("q", "#### 18", True),
    ("q", "1,000", True),
    ("Write a regex for ISO dates", None, False),
    ("Write a regex that matches dates like 2024-01-02 or 01/02/2024", None, False),
    ("Summarise the notes", None, False),
    ("Summarise in one sentence", None, False),
    ("Which city is the capital of France?", "Paris", False),
])
def test_asks_for_number(question, gold, expected):
    assert asks_for_number(question, gold) is expected


def test_a_candidate_has_an_answer_only_when_the_task_asked_for_one():
    from fscale_tui.engine.strategies.common import answer_of

    regex = "Use ^\\d{4}-\\d{2}-\\d{2}$ — it matches 2024-01-02 (4 digits, then 2 and 2)."
    summary = "The team met twice, agreed on 3 goals and will report in 2 weeks."
    assert answer_of(regex, numeric=False) is None
    assert answer_of(summary, numeric=False) is None
    assert answer_of("17 * 23 = 391", numeric=True) == "391"
    assert answer_of("So the result is clear.\n\nThe answer is: POSITIVE", numeric=False) == "positive"
