from chatbot.rag.citations import attribute, cited_numbers, drop_unknown_markers
from chatbot.text import support


def test_cited_numbers_in_order_without_duplicates_or_out_of_range():
    text = "Revenue rose [2]. Costs fell [1, 2]. See also [7] and [2][3]."
    assert cited_numbers(text, block_count=3) == [2, 1, 3]


def test_support_is_share_of_sentence_content_words_found_in_block():
    assert support("The reactor runs hot", "the reactor core runs at 4000 kelvin") == 2 / 3
    assert support("the of and", "anything") == 0.0


def test_attribute_appends_marker_before_final_punctuation():
    blocks = ["Paris is the capital of France.", "The Zorblax reactor runs at 4,812 kelvin."]
    text, added = attribute("The Zorblax reactor runs at 4,812 kelvin. Nice weather today!", blocks)
    assert text == "The Zorblax reactor runs at 4,812 kelvin [2]. Nice weather today!"
    assert added == [2]


def test_attribute_leaves_cited_and_unsupported_sentences_alone():
    blocks = ["Apples are red fruit grown in orchards."]
    answer = "Apples are red fruit [1]. Quantum chromodynamics describes quarks and gluons."
    assert attribute(answer, blocks) == (answer, [])


def test_sentences_do_not_end_at_initials():
    from chatbot.text import sentences

    assert [s for s, _ in sentences("Sales in the U.S. rose 5%. Costs fell.")] == [
        "Sales in the U.S. rose 5%.",
        "Costs fell.",
    ]


def test_markers_that_name_no_block_are_dropped_and_the_rest_kept():
    assert drop_unknown_markers("Run it [1]. Then train [2]. Also [1, 5].", 1) == "Run it [1]. Then train. Also [1]."
    assert drop_unknown_markers("Run it [1].", 0) == "Run it."  # no blocks: no marker can be followed
    assert drop_unknown_markers("Run it [4]. Open [2, 3].", 4) == "Run it [4]. Open [2, 3]."
