"""Tests for fscale_tui.engine.ask.parsing (design §4): reasoning stripping and label extraction."""

from __future__ import annotations

import dataclasses
import re
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fscale_tui.engine.ask.parsing import ParsedReply, extract_label, parse_reply, split_reasoning

SV = ["SAFE", "VULNERABLE"]
SU = ["SAFE", "UNSAFE"]
YN = ["YES", "NO"]
LETTERS = list("ABCDEFGHIJ")
PNU = ["POSITIVE", "NEGATIVE", "UNCLEAR"]


# ------------------------------------------------------------------------------------------
# split_reasoning / think tags
# ------------------------------------------------------------------------------------------

def test_content_without_tags_is_all_answer():
    assert split_reasoning("  SAFE\n") == ("SAFE", "")


def test_content_none_is_empty_answer_and_no_vote():
    assert split_reasoning(None) == ("", "")
    parsed = parse_reply(None, SV)
    assert parsed == ParsedReply(answer=None, text="", reasoning="")


def test_content_none_keeps_reasoning_field():
    parsed = parse_reply(None, SV, reasoning="I think it is SAFE")
    assert parsed.answer is None  # the answer never comes from the reasoning
    assert parsed.reasoning == "I think it is SAFE"


def test_think_block_is_reasoning_not_answer():
    parsed = parse_reply("<think>It looks SAFE at first.</think>\nVULNERABLE", SV)
    assert parsed.answer == "VULNERABLE"
    assert parsed.text == "VULNERABLE"
    assert parsed.reasoning == "It looks SAFE at first."


@pytest.mark.parametrize("open_tag,close_tag", [
    ("<think>", "</think>"),
    ("<thinking>", "</thinking>"),
    ("<reasoning>", "</reasoning>"),
    ("<THINK>", "</THINK>"),
    ("◁think▷", "◁/think▷"),
])
def test_all_think_tag_variants_are_stripped(open_tag, close_tag):
    parsed = parse_reply(f"{open_tag}The answer is SAFE, surely{close_tag}\n\nAnswer: VULNERABLE",
                         SV)
    assert parsed.answer == "VULNERABLE"
    assert parsed.text == "Answer: VULNERABLE"
    assert parsed.reasoning == "The answer is SAFE, surely"


def test_missing_opening_tag_everything_before_close_is_reasoning():
    parsed = parse_reply("Okay, maybe it is SAFE... no.\n</think>\n\nVULNERABLE", SV)
    assert parsed.answer == "VULNERABLE"
    assert parsed.text == "VULNERABLE"
    assert parsed.reasoning == "Okay, maybe it is SAFE... no."


def test_unclosed_think_tag_is_reasoning():
    # Cut by max_tokens in the middle of the thought: no answer at all.
    parsed = parse_reply("<think>Let me check. Answer: SAFE? Hmm, the loop", SV)
    assert parsed.answer is None
    assert parsed.text == ""
    assert parsed.reasoning == "Let me check. Answer: SAFE? Hmm, the loop"


def test_unclosed_think_tag_keeps_text_before_it():
    parsed = parse_reply("VULNERABLE\n<think>but maybe SAFE", SV)
    assert parsed.answer == "VULNERABLE"
    assert parsed.reasoning == "but maybe SAFE"


def test_reasoning_field_is_kept_and_never_parsed():
    parsed = parse_reply("VULNERABLE", SV, reasoning="Final answer: SAFE")
    assert parsed.answer == "VULNERABLE"
    assert parsed.reasoning == "Final answer: SAFE"


def test_reasoning_field_comes_before_inline_reasoning():
    answer, reasoning = split_reasoning("<think>inline</think>SAFE", "field")
    assert answer == "SAFE"
    assert reasoning == "field\n\ninline"


def test_several_think_blocks_and_nesting():
    answer, reasoning = split_reasoning(
        "<think>a <think>b</think> c</think>X<reasoning>d</reasoning>Y")
    assert answer == "X\nY"
    assert reasoning == "a\n\nb\n\nc\n\nd"


def test_self_closing_think_tag_does_not_swallow_the_answer():
    assert split_reasoning("<think/>SAFE") == ("SAFE", "")


def test_empty_think_block_then_answer():
    assert parse_reply("<think>\n\n</think>\n\n**SAFE**", SV) == ParsedReply("SAFE", "**SAFE**", "")


def test_parsed_reply_is_frozen():
    parsed = parse_reply("SAFE", SV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.answer = "VULNERABLE"  # type: ignore[misc]


# ------------------------------------------------------------------------------------------
# Matching: word boundaries, case, canonical spelling
# ------------------------------------------------------------------------------------------

def test_plain_label_reply():
    assert extract_label("VULNERABLE", SV) == "VULNERABLE"


def test_casing_of_reply_does_not_matter():
    assert extract_label("vulnerable", SV) == "VULNERABLE"
    assert extract_label("Safe.", SV) == "SAFE"


def test_label_is_returned_in_callers_spelling():
    assert extract_label("the code is VULNERABLE", ["Safe", "Vulnerable"]) == "Vulnerable"
    assert extract_label("Answer: b", ["a", "b"]) == "b"


def test_unsafe_is_not_safe():
    assert extract_label("UNSAFE", SU) == "UNSAFE"
    assert extract_label("The code is unsafe.", SU) == "UNSAFE"
    assert extract_label("The code is unsafe.", SV) is None
    assert extract_label("SAFE", SU) == "SAFE"


def test_yes_never_matches_yesterday():
    assert extract_label("Yesterday I looked at it.", YN) is None
    assert extract_label("Yesterday I looked at it. Yes.", YN) == "YES"


def test_longest_label_wins_at_same_position():
    assert extract_label("The code is NOT SAFE", ["SAFE", "NOT_SAFE"]) == "NOT_SAFE"
    assert extract_label("The code is safe", ["SAFE", "NOT_SAFE"]) == "SAFE"
    labels = ["SAFE", "SAFE WITH CAVEATS", "VULNERABLE"]
    assert extract_label("Answer: SAFE WITH CAVEATS", labels) == "SAFE WITH CAVEATS"
    assert extract_label("Answer: safe with caveats.", labels) == "SAFE WITH CAVEATS"
    assert extract_label("Answer: SAFE", labels) == "SAFE"


def test_label_inside_identifier_or_compound_is_not_a_mention():
    assert extract_label("is_safe = check(x)", SV) is None
    assert extract_label("This is non-compliant.", ["COMPLIANT", "OTHER"]) is None
    assert extract_label("__SAFE__", SV) == "SAFE"  # markdown emphasis still counts


def test_no_labels_or_empty_text_is_no_vote():
    assert extract_label("SAFE", []) is None
    assert extract_label("", SV) is None
    assert extract_label("   \n ", SV) is None


def test_label_set_given_as_tuple_or_list_is_equivalent():
    assert extract_label("Answer: NO", ("YES", "NO")) == extract_label("Answer: NO", YN) == "NO"


# ------------------------------------------------------------------------------------------
# Explicit statements
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply", [
    "Answer: VULNERABLE",
    "Final answer: VULNERABLE",
    "**Final Answer:** **VULNERABLE**",
    "The answer is VULNERABLE.",
    "The answer is (VULNERABLE).",
    "$\\boxed{VULNERABLE}$",
    "\\boxed{\\text{VULNERABLE}}",
    "VULNERABLE",
    "`VULNERABLE`",
    "\"VULNERABLE\"",
    "- VULNERABLE",
    "### VULNERABLE",
    "VULNERABLE: the query concatenates user input.",
    "Verdict: VULNERABLE",
    "<answer>VULNERABLE</answer>",
])
def test_explicit_forms_beat_an_earlier_incidental_mention(reply):
    # Without the explicit form, the last incidental mention (SAFE) would win.
    text = f"The code looks safe, SAFE even.\n{reply}\nSome would call it SAFE."
    assert extract_label(text, SV) == "VULNERABLE"


def test_last_explicit_statement_wins():
    assert extract_label("Answer: SAFE\n\nOn reflection:\nAnswer: VULNERABLE", SV) == "VULNERABLE"
    assert extract_label("**SAFE**\n\nFinal answer: VULNERABLE", SV) == "VULNERABLE"
    assert extract_label("Answer: VULNERABLE\n\nFinal answer: SAFE", SV) == "SAFE"


def test_explicit_statement_beats_later_incidental_mention():
    text = "Final answer: VULNERABLE\n\nA safe version would use bound parameters."
    assert extract_label(text, SV) == "VULNERABLE"


def test_emphasis_in_later_commentary_does_not_flip_a_stated_answer():
    text = ("**Answer: VULNERABLE**\n\nThe code passes `user_id` straight into the query. "
            "A **safe** implementation would use parameters.")
    assert extract_label(text, SV) == "VULNERABLE"
    # ...but emphasis in prose still beats plain incidental mentions.
    assert extract_label("It is **SAFE** here; VULNERABLE code looks different.", SV) == "SAFE"


def test_option_list_followed_by_bare_answer_line():
    text = ("Looking at the options:\n- A) 12: too small\n- B) 14: correct\n"
            "- C) 16: too big\n- D) 18: too big\n\n**B**")
    assert extract_label(text, LETTERS) == "B"
    assert extract_label("A) 12\n\nB) 14\n\nC) 16", LETTERS) is None


def test_first_label_after_answer_marker_on_its_line_is_explicit():
    text = "Final answer: the code is VULNERABLE. A SAFE variant would escape the input."
    assert extract_label(text, SV) == "VULNERABLE"


def test_answer_on_last_line_of_multiline_reply():
    text = ("Let me look at the code.\nIt reads a file name from the request.\n"
            "It passes it to open() without checks.\n\nVULNERABLE")
    assert extract_label(text, SV) == "VULNERABLE"


def test_whole_answer_is_read_not_only_first_line():
    assert extract_label("Let me think about this carefully.\n\nThe answer is NO.", YN) == "NO"


def test_markdown_bold_label_is_explicit():
    text = ("The function is vulnerable in theory, but input is validated upstream, "
            "so it is **SAFE** in practice.\nVULNERABLE code would look different.")
    assert extract_label(text, SV) == "SAFE"


# ------------------------------------------------------------------------------------------
# Incidental mentions
# ------------------------------------------------------------------------------------------

def test_incidental_mention_is_a_vote_without_explicit_statement():
    assert extract_label("After analysis, the sentiment is clearly positive overall.", PNU) \
        == "POSITIVE"


def test_last_non_negated_incidental_mention_wins():
    assert extract_label("It could look VULNERABLE, but it's actually SAFE", SV) == "SAFE"
    assert extract_label("Not vulnerable; the code is safe, and nothing else is VULNERABLE "
                         "unless you say not VULNERABLE", SV) == "VULNERABLE"
    assert extract_label("It is SAFE, not VULNERABLE.", SV) == "SAFE"


# ------------------------------------------------------------------------------------------
# Negation
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply", [
    "The code is not SAFE.",
    "not SAFE",
    "It is NOT safe",
    "This isn't safe at all.",
    "It is never SAFE to do this.",
    "It is no longer SAFE.",
    "It cannot be considered SAFE.",
    "I don't think the code is SAFE.",
    "Answer: not SAFE",
])
def test_negated_label_is_not_a_vote(reply):
    assert extract_label(reply, SV) is None


def test_negated_label_is_not_a_vote_for_other_label_sets():
    assert extract_label("The policy isn't compliant.", ["COMPLIANT", "NONCOMPLIANT"]) is None
    assert extract_label("NOT vulnerable", SV) is None


def test_negation_does_not_cross_a_clause_boundary():
    assert extract_label("It is not vulnerable; it is SAFE.", SV) == "SAFE"
    assert extract_label("It is not vulnerable, so SAFE.", SV) == "SAFE"
    assert extract_label("Not vulnerable. SAFE", SV) == "SAFE"


def test_negation_far_before_the_label_does_not_count():
    assert extract_label("There were no problems reported by the scanner in the code, SAFE.",
                         SV) == "SAFE"


def test_affirming_negation_phrases_are_not_negations():
    assert extract_label("There is no doubt it is SAFE.", SV) == "SAFE"


def test_negation_after_the_label():
    assert extract_label("Answer: B\n\n(A) is wrong, and (C) is incorrect.", LETTERS) == "B"
    assert extract_label("SAFE is not correct here.", SV) is None


# ------------------------------------------------------------------------------------------
# YES / NO: "no" as label vs "no" as negation
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply,expected", [
    ("No.", "NO"),
    ("NO", "NO"),
    ("no", "NO"),
    ("No, the function does not validate its input.", "NO"),
    ("No it isn't.", "NO"),
    ("The answer is no.", "NO"),
    ("Answer: No", "NO"),
    ("I'd say NO.", "NO"),
    ("Yes.", "YES"),
    ("yes", "YES"),
    ("Yes, no issues were found.", "YES"),  # "no issues": the determiner, not a NO vote
    ("No vulnerabilities detected.\n\nAnswer: YES", "YES"),
    ("No issues were found.", None),
    ("Yes or no?", None),
    ("YES/NO", None),
    ("Yes and no.", None),
])
def test_no_as_label_versus_no_as_negation(reply, expected):
    assert extract_label(reply, YN) == expected


def test_no_before_another_label_is_a_negation():
    assert extract_label("No VULNERABLE code paths; the rest is fine.", SV) is None
    assert extract_label("No. It is VULNERABLE.", SV) == "VULNERABLE"


# ------------------------------------------------------------------------------------------
# Echo of the options
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply", [
    "SAFE or VULNERABLE?",
    "SAFE/VULNERABLE",
    "Answer SAFE or VULNERABLE",
    "Is it **SAFE** or **VULNERABLE**?",
    "safe (SAFE) or vulnerable (VULNERABLE)",
    "Neither SAFE nor VULNERABLE.",
    "SAFE, VULNERABLE",
])
def test_question_echo_is_not_a_vote(reply):
    assert extract_label(reply, SV) is None


def test_echo_of_letter_options_is_not_a_vote():
    assert extract_label("A, B, C or D?", LETTERS) is None
    assert extract_label("(A), (B), (C), or (D)", LETTERS) is None
    assert extract_label("A) 12\nB) 14\nC) 16\nD) 18", LETTERS) is None
    assert extract_label("- SAFE\n- VULNERABLE", SV) is None


def test_echo_followed_by_an_answer_counts_the_answer():
    assert extract_label("SAFE or VULNERABLE? The code is VULNERABLE.", SV) == "VULNERABLE"
    assert extract_label("A) 12\nB) 14\nC) 16\nD) 18\n\nThe answer is B.", LETTERS) == "B"


def test_same_label_repeated_is_not_an_echo():
    assert extract_label("SAFE, SAFE, SAFE", SV) == "SAFE"


# ------------------------------------------------------------------------------------------
# No vote vs UNCLEAR
# ------------------------------------------------------------------------------------------

def test_no_answer_is_distinct_from_unclear_label():
    assert extract_label("UNCLEAR", PNU) == "UNCLEAR"
    assert extract_label("The sentiment is unclear.", PNU) == "UNCLEAR"
    assert extract_label("I cannot determine this from the text.", PNU) is None
    assert extract_label("", PNU) is None
    assert parse_reply("<think>long thought, maybe UNCLEAR", PNU).answer is None


def test_unclear_without_the_label_is_no_vote():
    assert extract_label("The review is unclear.", ["POSITIVE", "NEGATIVE"]) is None


# ------------------------------------------------------------------------------------------
# Single-letter labels
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply,expected", [
    ("B", "B"),
    ("b", "B"),
    ("(B)", "B"),
    ("B.", "B"),
    ("**B**", "B"),
    ("Answer: B", "B"),
    ("Answer: (C)", "C"),
    ("Answer: a", "A"),
    ("The answer is D.", "D"),
    ("The answer is (E).", "E"),
    ("The correct option is option F because it fits.", "F"),
    ("B) 14", "B"),
    ("\\boxed{G}", "G"),
    ("The final answer is: **H**", "H"),
    ("I think the answer is I.", "I"),
    ("Answer: A because the others overflow.", "A"),
    ("Answer:\n(J) 42 is the only value that fits.", "J"),
])
def test_single_letter_explicit_forms(reply, expected):
    assert extract_label(reply, LETTERS) == expected


@pytest.mark.parametrize("reply", [
    "A careful reading shows this is a trick question.",
    "I think this is hard to say.",
    "The answer is a tricky one.",
    "Answer: I am not sure.",
    "I was right about it.",
    "It is a bug in part (a) of the code.",
    "B seems plausible but so does C.",
])
def test_article_a_and_pronoun_i_in_prose_are_not_votes(reply):
    assert extract_label(reply, LETTERS) is None


def test_letter_answer_after_prose_with_articles():
    text = "A quick check: I computed 7 * 2 = 14, which is a match for one option.\nAnswer: (C)"
    assert extract_label(text, LETTERS) == "C"


def test_multi_letter_labels_next_to_letter_labels():
    labels = ["A", "B", "NONE"]
    assert extract_label("None of them fits, so NONE.", labels) == "NONE"
    assert extract_label("a bit of both, so NONE", labels) == "NONE"


# ------------------------------------------------------------------------------------------
# parse_reply end to end, caching
# ------------------------------------------------------------------------------------------

def test_parse_reply_combines_split_and_extract():
    parsed = parse_reply("<think>SAFE? no</think>\nThe code is exploitable.\n\n**VULNERABLE**",
                         SV, reasoning="provider reasoning")
    assert parsed == ParsedReply(answer="VULNERABLE",
                                 text="The code is exploitable.\n\n**VULNERABLE**",
                                 reasoning="provider reasoning\n\nSAFE? no")


def test_compiled_patterns_are_cached_per_label_set():
    from fscale_tui.engine.ask import parsing

    parsing._compile.cache_clear()
    extract_label("SAFE", SV)
    extract_label("VULNERABLE", ("SAFE", "VULNERABLE"))
    info = parsing._compile.cache_info()
    assert (info.hits, info.misses) == (1, 1)


# ------------------------------------------------------------------------------------------
# Property tests
# ------------------------------------------------------------------------------------------

WORD = st.text(alphabet=string.ascii_uppercase, min_size=1, max_size=8)


@st.composite
def label_sets(draw):
    """Distinct uppercase words, some of them prefixes/suffixes of others (SAFE, UNSAFE, SAFER)."""
    base = draw(st.lists(WORD, min_size=1, max_size=4, unique=True))
    labels = list(base)
    for word in base:
        if draw(st.booleans()):
            labels.append(draw(st.sampled_from(["UN", "NOT", "RE", "X"])) + word)
        if draw(st.booleans()):
            labels.append(word + draw(st.sampled_from(["S", "ER", "ABLE", "Y"])))
    labels = list(dict.fromkeys(labels))
    if len(labels) < 2:
        labels.append(labels[0] + "Q")
    return draw(st.permutations(labels))


FILLER_WORD = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=9)
FILLER_TOKEN = st.one_of(FILLER_WORD, FILLER_WORD, FILLER_WORD,
                         st.sampled_from([",", ".", ":", "!", "?", "(", ")", "**", "\n", "-"]))


def filler_for(labels):
    """Random prose-like text that contains none of the labels as a word."""
    banned = {label.casefold() for label in labels}
    return st.lists(FILLER_TOKEN.filter(lambda w: w.casefold() not in banned), max_size=30) \
        .map(" ".join)


def assume_template_has_no_label(labels, template):
    """Fixed words of a template ("The code is {}") must not themselves be labels (e.g. IS)."""
    words = {w.casefold() for w in re.findall(r"[A-Za-z]+", template)}
    assume(not words & {label.casefold() for label in labels})


def random_casing(data, label):
    flips = data.draw(st.lists(st.booleans(), min_size=len(label), max_size=len(label)))
    return "".join(c.lower() if f else c for c, f in zip(label, flips))


THOUGHT = st.text(st.characters(blacklist_characters="<>◁▷", blacklist_categories=("Cs",)),
                  max_size=80)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_prop_filler_then_answer_line_parses_to_label(data):
    labels = data.draw(label_sets())
    label = data.draw(st.sampled_from(labels))
    filler = data.draw(filler_for(labels))
    assert extract_label(f"{filler}\nAnswer: {label}", labels) == label


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_prop_think_wrapper_does_not_change_the_answer(data):
    labels = data.draw(label_sets())
    label = data.draw(st.sampled_from(labels))
    reply = data.draw(st.one_of(
        filler_for(labels).map(lambda f: f"{f}\nAnswer: {label}"),
        st.lists(st.one_of(filler_for(labels), st.sampled_from(labels)), max_size=6)
        .map(" ".join),
    ))
    thought = data.draw(THOUGHT)
    plain = parse_reply(reply, labels)
    wrapped = parse_reply(f"<think>{thought}</think>{reply}", labels)
    assert wrapped.answer == plain.answer
    assert wrapped.text == plain.text == reply.strip()
    assert wrapped.reasoning == thought.strip()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_prop_casing_of_label_in_reply_does_not_matter(data):
    labels = data.draw(label_sets())
    label = data.draw(st.sampled_from(labels))
    filler = data.draw(filler_for(labels))
    template = data.draw(st.sampled_from([
        "Answer: {}", "The answer is {}.", "**{}**", "{}", "Final answer: ({})", "\\boxed{{{}}}",
    ]))
    cased = random_casing(data, label)
    assert extract_label(f"{filler}\n" + template.format(cased), labels) == label


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_prop_reply_without_any_label_is_no_vote(data):
    labels = data.draw(label_sets())
    text = data.draw(st.one_of(
        filler_for(labels),
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
    ))
    words = {w.casefold() for w in re.findall(r"[^\W\d_]+", text)}
    assume(not words & {label.casefold() for label in labels})
    assert extract_label(text, labels) is None
    assert parse_reply(text, labels).answer is None


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_prop_label_embedded_in_longer_word_never_matches(data):
    labels = data.draw(label_sets())
    label = data.draw(st.sampled_from(labels))
    before = data.draw(st.text(alphabet=string.ascii_letters, max_size=4))
    after = data.draw(st.text(alphabet=string.ascii_letters, max_size=4))
    assume(before or after)
    word = before + label + after
    assume(word.casefold() not in {lab.casefold() for lab in labels})
    template = data.draw(st.sampled_from(["Answer: {}", "{}", "The code is {}.", "**{}**"]))
    assume_template_has_no_label(labels, template)
    assert extract_label(template.format(word), labels) is None


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_prop_result_is_none_or_one_of_the_labels(data):
    labels = data.draw(label_sets())
    pieces = st.one_of(
        filler_for(labels), st.sampled_from(labels), WORD,
        st.sampled_from(["not", "no", "or", "/", "Answer:", "**", "(", ")", "<think>",
                         "</think>", "\n", "The answer is", "\\boxed{", "}"]),
    )
    text = data.draw(st.lists(pieces, max_size=12).map(" ".join))
    result = parse_reply(text, labels).answer
    assert result is None or result in labels


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_prop_last_explicit_statement_wins(data):
    labels = data.draw(label_sets())
    first = data.draw(st.sampled_from(labels))
    last = data.draw(st.sampled_from(labels))
    filler = data.draw(filler_for(labels))
    text = f"Answer: {first}\n{filler}\nFinal answer: **{last}**"
    assert extract_label(text, labels) == last


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_prop_negated_only_mention_is_no_vote(data):
    labels = data.draw(label_sets())
    label = data.draw(st.sampled_from(labels))
    filler = data.draw(filler_for(labels))
    negation = data.draw(st.sampled_from(["not", "is not", "isn't", "never", "no longer",
                                          "cannot be considered"]))
    assume_template_has_no_label(labels, f"The code {negation}")
    assert extract_label(f"{filler}\nThe code {negation} {label}.", labels) is None


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_prop_listing_several_options_is_no_vote(data):
    labels = data.draw(label_sets())
    shown = data.draw(st.lists(st.sampled_from(labels), min_size=2, max_size=len(labels),
                               unique=True))
    joiner = data.draw(st.sampled_from([" or ", "/", ", ", " / ", ", or "]))
    filler = data.draw(filler_for(labels))
    assert extract_label(f"{filler}\nAnswer {joiner.join(shown)}?", labels) is None


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_prop_caller_spelling_is_returned(data):
    labels = data.draw(label_sets())
    spelled = [random_casing(data, label) for label in labels]
    index = data.draw(st.integers(0, len(labels) - 1))
    assert extract_label(f"Answer: {labels[index]}", spelled) == spelled[index]
