"""The evidence sentence: which sentence of the retrieved blocks a reply quotes."""

import pytest

from chatbot.rag.evidence import MAX_CHARS, best_quotes, candidate_sentences


def flat(texts):
    """Every text the same vector: the cosine cannot tell sentences apart, the other signals must."""
    return [[1.0, 0.0] for _ in texts]


def test_the_closest_sentence_by_embedding_wins_and_question_words_break_ties():
    def by_topic(texts):  # a toy embedding: sentences about feeding point the question's way
        return [[1.0, 0.0] if "fed" in text or "feed" in text else [0.0, 1.0] for text in texts]

    block = "The herons live at the north pond. The herons are fed at 10:30 every day. Visitors like them."
    (quote,) = best_quotes("When are the herons fed?", [block], by_topic)
    assert (quote.n, quote.text) == (1, "The herons are fed at 10:30 every day.")
    two = best_quotes("When are the herons fed?", ["Nothing here is relevant at all.", block], by_topic, count=2)
    assert [q.text for q in two] == ["The herons are fed at 10:30 every day.", "The herons live at the north pond."]
    assert two[0].n == 2 and two[0].score > two[1].score


def test_quotes_are_whole_sentences_of_the_blocks_never_headings_markers_or_whole_blocks():
    long_sentence = "word " * 120 + "end."
    blocks = [
        "# Opening hours\n\nThe museum opens at 9:00 [2]. Short.",
        long_sentence,
        "Tickets cost 12 euros at the door.",
        "How much does a ticket cost at the museum door?",  # a FAQ's question: it never answers
    ]
    found = candidate_sentences(blocks)
    assert ("The museum opens at 9:00.") in [text for _, text in found]
    assert all(len(text) <= MAX_CHARS and "[" not in text and not text.startswith("#") for _, text in found)
    assert [n for n, _ in found] == [1, 3]  # the heading, "Short." and the over-long block give no candidate
    (quote,) = best_quotes("How much does a ticket cost?", blocks, flat)
    assert (quote.n, quote.text) == (3, "Tickets cost 12 euros at the door.")


def test_the_question_words_a_sentence_holds_count_when_the_cosine_ties():
    block = "The pond is north of the entrance. The herons are fed twice a day near the pond."
    (quote,) = best_quotes("Where are the herons fed?", [block], flat)
    assert quote.text == "The herons are fed twice a day near the pond."
    assert best_quotes("Where are the herons fed?", ["# Herons", ""], flat) == []


GUIDE = [
    "The bot says I don't know when no passage scores above min_relevance, or when the checks withhold "
    "the model's answer because no passage supports it.",
    "Drop files into the knowledge folder; the watcher indexes them within seconds.",
]


def test_an_answer_that_only_restates_the_question_adds_nothing():
    from chatbot.rag.vacuous import adds_nothing

    question = "Why does the bot say I don't know?"
    tautology = "The answer is that the bot is not able to answer the question because it is not able to answer it [2]."
    assert adds_nothing(tautology, question, GUIDE)
    assert adds_nothing("The bot says I don't know [1].", question, GUIDE)
    # hard negatives: an informative answer, and words that no passage holds (the unfounded check's job)
    assert not adds_nothing("It says so when no passage scores above min_relevance [1].", question, GUIDE)
    assert adds_nothing("Because of cosmic rays.", question, GUIDE)
    assert not adds_nothing("Because the checks withhold the answer [1].", question, GUIDE)


def test_an_earlier_answer_repeated_for_a_new_question_is_caught_but_not_for_the_same_question():
    from chatbot.rag.vacuous import repeats_earlier

    earlier = [("Why does the bot say I don't know?", "It says so when no passage scores above min_relevance [2].")]
    again = "It says so when no passage scores above min_relevance [1]."
    assert repeats_earlier(again, "What does the min_relevance setting do?", earlier)
    assert not repeats_earlier(again, "Why does the bot say I don't know?", earlier)  # asked again: may repeat
    assert not repeats_earlier("Drop files into the knowledge folder [1].", "How do I add files?", earlier)
    assert not repeats_earlier(again, "What does min_relevance do?", [])


@pytest.mark.parametrize(
    ("text", "declined"),
    [
        ("No. The context blocks do not answer this question.", True),
        ("The passages do not mention the opening hours.", True),
        ("I don't know.", True),
        ("No, the documents don't say.", True),
        ("No. Revenue rose 5% in the quarter [1].", False),
        ("The documents show that revenue rose [1].", False),
        ("Nobody knows who built it [1].", False),
    ],
)
def test_a_reply_that_says_the_blocks_do_not_answer_is_a_decline(text, declined):
    from chatbot.rag.chain import is_decline

    assert is_decline(text) is declined


def test_a_sentence_hard_wrapped_over_lines_is_quoted_whole_and_list_items_stay_apart():
    block = (
        "## How do I refresh it?\n\nInstalling and refreshing\n"
        "To refresh the knowledge base, drop new files into the folder, edit files there or\n"
        "delete them, then run `chatbot sync`. The sync adds new files, and\nremoves deleted ones.\n\n"
        "- First item of a list here.\n- Second item of the list here.\n1. A numbered step of the list."
    )
    texts = [text for _, text in candidate_sentences([block])]
    assert texts[:2] == [
        "To refresh the knowledge base, drop new files into the folder, edit files there or delete them, then run "
        "`chatbot sync`.",
        "The sync adds new files, and removes deleted ones.",
    ]
    assert "First item of a list here." in texts and "Second item of the list here." in texts
    assert "A numbered step of the list." in texts
    assert not any(text.startswith("Installing") for text in texts)  # a heading line is not joined to its text


def test_every_decline_reason_reads_as_plain_words_naming_what_went_wrong():
    from chatbot.rag import chain
    from chatbot.rag.reasons import plain_reason

    question = "How long do quokkas live in the wild?"
    templates = {
        chain.NOTHING_RETRIEVED: "no passage in your documents is close enough to the question about \u2018long\u2019",
        chain.MODEL_DECLINED: "the model said the passages do not answer it",
        chain.CONTEXT_DUMP: "the draft answer copied the passages instead of answering",
        chain.UNFOUNDED.format("23, Perth"): "the draft answer named \u201823\u2019 and \u2018Perth\u2019, which no",
        chain.UNSUPPORTED: "no passage says what the draft answer said",
        chain.RESTATED: "the draft answer only repeated the question's own words",
        chain.REPEATED: "the draft answer repeated an earlier answer of this conversation",
        chain.UNLIKELY.format(0.123, 0.4): "look unlikely to answer it (estimated 12% likely, below the 40% needed)",
        chain.EMPTY: "the model wrote nothing",
    }
    said = {reason: plain_reason(reason, question) for reason in templates}
    for reason, expected in templates.items():
        assert expected in said[reason] and said[reason] != reason, reason
    assert len(set(said.values())) == len(templates)  # each reason its own sentence
    assert "quokkas" in said[chain.NOTHING_RETRIEVED] and "wild" in said[chain.NOTHING_RETRIEVED]
    many = plain_reason(chain.UNFOUNDED.format("1, 2, 3, 4, 5, 6"), question)
    assert "and 2 more" in many
    assert plain_reason(None, question) is None
