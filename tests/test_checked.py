"""Only checked sentences are shown: kept when a block supports them, re-cited, or left out."""

import pytest

from chatbot.rag.checked import keep_checked
from chatbot.rag.grounding import judge

QUESTION = "How old is the pond and when are the herons fed?"
BLOCKS = [
    "The pond was dug in 1887 by the town council. It is home to a colony of grey herons.",
    "The herons are fed every morning at 8 am by the keeper. Visitors may watch from the bridge.",
]


def check(text: str):
    return keep_checked(text, BLOCKS, lambda sentence, block: judge(sentence, block, QUESTION).supported, QUESTION)


def test_a_supported_sentence_stays_and_one_no_block_holds_is_left_out():
    checked = check("The herons are fed every morning at 8 am [2]. The keeper likes jazz music on Sundays.")
    assert checked.text == "The herons are fed every morning at 8 am [2]."
    assert checked.dropped == ["The keeper likes jazz music on Sundays."] and checked.supported


@pytest.mark.parametrize(
    "made_up",
    [
        "The pond is 1887 years old.",  # the block's number, in a claim it does not make
        "The herons are fed every morning at 9 am [2].",  # the wrong number, cited
        "The answer is: 9 am.",  # a short answer with the wrong figure
        "The herons are fed by the mayor of Springfield [2].",  # a name no block holds
    ],
)
def test_hard_negatives_leave_nothing_to_show(made_up):
    checked = check(made_up)
    assert checked.text == "" and not checked.supported and checked.dropped


def test_a_sentence_cited_to_the_wrong_block_is_re_cited_to_the_block_that_holds_it():
    checked = check("The herons are fed every morning at 8 am [1]. The pond was dug in 1887 [1].")
    assert checked.text == "The herons are fed every morning at 8 am [2]. The pond was dug in 1887 [1]."
    assert checked.recited == 1 and checked.dropped == []


def test_a_marker_naming_a_block_that_does_not_hold_the_sentence_is_removed_beside_one_that_does():
    assert (
        check("The herons are fed every morning at 8 am [1, 2].").text
        == "The herons are fed every morning at 8 am [2]."
    )


def test_a_short_answer_is_cited_when_a_block_holds_every_word_it_claims():
    assert check("The answer is: 8 am.").text == "The answer is: 8 am [2]."
    assert check("The answer is: 8 pm.").text == ""  # "pm": a word no block holds


def test_a_lead_in_stays_with_what_it_leads_into_and_goes_with_it():
    kept = check("Sure! Here is what I found: The herons are fed every morning at 8 am [2].")
    assert kept.text == "Sure! Here is what I found: The herons are fed every morning at 8 am [2]."
    gone = check("The pond was dug in 1887 [1]. Here is more:\n\nThe keeper sings opera to the herons.")
    assert gone.text == "The pond was dug in 1887 [1]."
    assert gone.dropped == ["The keeper sings opera to the herons."]
    assert check("Sure! Here you go.").text == ""  # courtesy alone is not an answer


def test_a_lead_in_in_the_questions_words_claims_nothing_and_a_sentence_in_them_is_an_echo():
    listed = check("The herons are fed:\n- every morning at 8 am [2]")
    assert listed.text == "The herons are fed:\n- every morning at 8 am [2]" and listed.dropped == []
    assert check("The herons are fed.").text == ""  # the question's words as an answer: nothing said
