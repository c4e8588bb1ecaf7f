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


def test_a_second_sentence_is_quoted_only_when_it_scores_as_close_as_the_margin():
    from chatbot.rag.evidence import Quote, shown_quotes

    best, near = Quote(1, "The herons are fed at 10:30.", 1.30), Quote(2, "Feeding is free.", 1.22)
    assert shown_quotes([best, near], 0.1) == [best, near]
    assert shown_quotes([best, near], 0.05) == [best]  # hard negative: just outside the margin
    assert shown_quotes([best, near], 0.0) == [best]  # 0: always one sentence
    far = Quote(2, "The zoo opens at nine.", 0.70)
    assert shown_quotes([best, far], 0.1) == [best] and shown_quotes([best], 0.1) == [best]
    assert shown_quotes([], 0.1) == []


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


def test_an_answer_agrees_with_its_evidence_when_the_sentence_holds_what_it_adds():
    from chatbot.rag.vacuous import evidence_agreement

    question = "When are the herons at Millbrook pond fed?"
    evidence = "The herons are fed at seven in the morning by the warden."
    assert evidence_agreement("They are fed at seven in the morning [1].", question, evidence) == 1.0
    assert evidence_agreement("The herons are fed [1].", question, evidence) == 1.0  # adds nothing: not this check's
    # hard negatives: a plausible span from elsewhere, and half right
    assert evidence_agreement("They are fed at noon by the keeper [2].", question, evidence) == 0.0
    assert evidence_agreement("At seven, by the volunteers.", question, evidence) == 0.5


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
        chain.ONLY_NEAR: "\u2018wild\u2019 to answer from (min_relevance); the nearest one is quoted, so check",
        chain.MODEL_DECLINED: "the model said the passages do not answer it",
        chain.CONTEXT_DUMP: "the draft answer copied the passages instead of answering",
        chain.UNFOUNDED.format("23, Perth"): "the draft answer named \u201823\u2019 and \u2018Perth\u2019, which no",
        chain.UNSUPPORTED: "no passage says what the draft answer said",
        chain.RESTATED: "the draft answer only repeated the question's own words",
        chain.REPEATED: "the draft answer repeated an earlier answer of this conversation",
        chain.UNLIKELY.format(0.123, 0.4): "look unlikely to answer it (estimated 12% likely, below the 40% needed)",
        chain.EMPTY: "the model wrote nothing",
        chain.DISAGREES: "the draft answer said something the passage quoted below does not",
    }
    said = {reason: plain_reason(reason, question) for reason in templates}
    for reason, expected in templates.items():
        assert expected in said[reason] and said[reason] != reason, reason
    assert len(set(said.values())) == len(templates)  # each reason its own sentence
    assert "quokkas" in said[chain.NOTHING_RETRIEVED] and "wild" in said[chain.NOTHING_RETRIEVED]
    mine = plain_reason(chain.ONLY_NEAR, "How do I add my own documents?")
    assert "about \u2018add\u2019 and \u2018documents\u2019 to answer from" in mine  # not 'my'
    many = plain_reason(chain.UNFOUNDED.format("1, 2, 3, 4, 5, 6"), question)
    assert "and 2 more" in many
    assert plain_reason(None, question) is None


def test_a_lora_merged_into_linear_layers_adds_its_scaled_product(tmp_path):
    import json

    import torch
    from safetensors.torch import save_file

    from chatbot.models.embeddings import merge_lora

    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Linear(4, 3))
    before = [layer.weight.detach().clone() for layer in model]
    a, b = torch.randn(2, 6), torch.randn(4, 2)
    save_file({"0.lora_A.weight": a, "0.lora_B.weight": b}, str(tmp_path / "lora.safetensors"))
    (tmp_path / "lora.json").write_text(json.dumps({"rank": 2, "alpha": 4}))
    assert merge_lora(model, tmp_path / "lora.safetensors") == 1
    assert torch.allclose(model[0].weight, before[0] + b @ a * 2.0)
    assert torch.equal(model[1].weight, before[1])  # a layer the LoRA does not name is untouched


BRIDGE = [
    "The bridge crosses the river at its widest point.",
    "It was designed by Anna Kowalski in 1931.",
    "The bridge carries four lanes of traffic.",
    "Tolls on the bridge were abolished in 1960.",
]
TREATY = [
    "The treaty was signed in Paris.",
    "It ended the war between the two kingdoms.",
    "The treaty was written in French and Latin.",
    "Both kings attended the signing of the treaty.",
]
HERONS = [
    "The herons live at the north pond of the zoo.",
    "Visitors may watch the herons from the boardwalk.",
    "The herons are fed at 10:30 and again at 15:00 every day.",
    "Their nests are in the tall reeds.",
]


def test_the_evidence_scorer_is_the_embedded_model_with_its_lora_and_only_for_that_model(make_settings):
    from chatbot.app.runtime import embeddings_for, evidence_embeddings_for
    from chatbot.models.embeddings import EVIDENCE_LORA
    from chatbot.models.sources import resolve_embedding_folder

    settings = make_settings()
    scorer = evidence_embeddings_for(settings)
    assert EVIDENCE_LORA.is_file() and scorer.lora == EVIDENCE_LORA and scorer is not embeddings_for(settings)
    cases = [  # (question, the sentences of a passage, the one that answers)
        ("Who designed the bridge?", BRIDGE, 1),
        ("What did the treaty end?", TREATY, 1),
        ("When are the herons fed?", HERONS, 2),
    ]

    def picks(embeddings) -> list[int]:  # noqa: ANN001
        chosen = []
        for question, sentences, _ in cases:
            vectors = embeddings.embed_documents([question, *sentences])
            scores = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]]
            chosen.append(scores.index(max(scores)))
        return chosen

    assert picks(scorer) == [answer for _, _, answer in cases]  # by cosine alone, no word overlap
    assert picks(embeddings_for(settings)) != [answer for _, _, answer in cases]  # the plain model misses some
    other = make_settings(embedding_model=str(resolve_embedding_folder("embedded")))  # any other model: no LoRA
    assert evidence_embeddings_for(other) is embeddings_for(other) and embeddings_for(other).lora is None
