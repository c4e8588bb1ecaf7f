"""The citation check against hard negatives: each rule is shown flagging what it must and
passing the honest paraphrase next to it."""

from pathlib import Path

import pytest

from chatbot.rag.citations import attribute, claims_by_block
from chatbot.rag.grounding import check_citations, judge, unfounded_specifics

ADAMS = (
    "John Adams was the second president of the United States, serving from 1797 to 1801. "
    "He died on July 4, 1826, the same day as Thomas Jefferson."
)
REPORT = "Net revenue (in millions): 2,031 in the third quarter of 2023, up 12.4% from 1,807 a year earlier."
SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad2" / "dev-v2.0.json"


@pytest.mark.parametrize(
    ("sentence", "block", "reason"),
    [
        ("The death of George W. Bush was 2001 [4].", ADAMS, "name"),  # another person's file
        ("Adams served as president from 1797 to 1805.", ADAMS, "number"),
        ("Adams died on July 4, 1827.", ADAMS, "number"),
        ("Net revenue was $2.5 billion in the third quarter of 2023.", REPORT, "number"),
        ("Net revenue rose 21% from a year earlier.", REPORT, "number"),
        ("Adams did not serve as president of the United States.", ADAMS, "negation"),
        ("# John Adams", "# John Adams\n\n" + ADAMS, "structure"),
        ("| Net revenue | 2,031 |", REPORT, "structure"),
        ("Who was the second president of the United States?", ADAMS, "echo"),
        ("Adams founded a shipping company and traded tobacco overseas.", ADAMS, "words"),
        ("The population of the town is approximately 25,000.", "The town lies on the river Struma.", "number"),
    ],
)
def test_unsupported_sentences_are_flagged_with_their_reason(sentence, block, reason):
    question = "Who was the second president of the United States?"
    verdict = judge(sentence, block, question)
    assert not verdict.supported and reason in verdict.reasons, verdict


@pytest.mark.parametrize(
    ("sentence", "block"),
    [
        ("Adams served as president from 1797 to 1801 [1].", ADAMS),
        ("John Adams died on July 4, 1826.", ADAMS),
        ("Net revenue was $2.0 billion in the third quarter of 2023.", REPORT),  # rounded, scale from the caption
        ("Net revenue was 2031 million in the third quarter of 2023.", REPORT),
        ("Net revenue grew 12.4 percent from a year earlier.", REPORT),
        ("Net revenue grew about 12% from a year earlier.", "Net revenue grew 12.4% from a year earlier."),
        ("The stool has three legs.", "The stool has 3 legs and a round seat."),
        ("1826.", ADAMS),  # a short answer: judged on its number only
        ("Jefferson died the same day as Adams.", ADAMS),
    ],
)
def test_honest_sentences_pass(sentence, block):
    question = "Who was the second president of the United States?"
    assert judge(sentence, block, question).supported


def test_check_reports_the_worst_sentence_per_block_and_attribution_never_adds_a_rejected_marker():
    blocks = [ADAMS, REPORT]
    answer = "Adams served from 1797 to 1801 [1]. He died in 1830 [1]. Net revenue was 2,031 million [2]."
    verdicts = check_citations(claims_by_block(answer, 2), blocks)
    assert not verdicts[1].supported and "number" in verdicts[1].reasons
    assert verdicts[2].supported
    fabricated = "John Adams was the second president of the United States until 1805."
    accept = lambda sentence, block: judge(sentence, block).supported  # noqa: E731
    assert attribute(fabricated, blocks)[1] == [1]  # word overlap alone would cite block 1
    assert attribute(fabricated, blocks, accept) == (fabricated, [])
    honest = "John Adams was the second president of the United States."
    assert attribute(honest, blocks, accept)[1] == [1]


def test_unfounded_specifics_are_the_numbers_and_names_no_block_states():
    blocks = ["Zlatograd is a town in the Smolyan Province of southern Bulgaria."]
    assert unfounded_specifics("The population of Zlatograd is approximately 25,000 [1].", blocks) == ["25,000"]
    assert unfounded_specifics("It was founded by Ivan Shishman.", blocks) == ["Ivan", "Shishman"]
    assert unfounded_specifics("Zlatograd is a town in southern Bulgaria [1].", blocks) == []
    numbered = "1. Zlatograd is a town in southern Bulgaria [1].\n2."  # list numbers, the last one empty
    assert unfounded_specifics(numbered, blocks) == []
    assert unfounded_specifics("Zlatograd is a town of\n2. 25,000 people.", blocks) == ["25,000"]


@pytest.mark.skipif(not SQUAD.exists(), reason="needs ../shared/data/squad2 (public data, not in the repo)")
def test_on_the_script_built_labelled_set_the_check_meets_its_targets_and_beats_word_overlap():
    from chatbot.evaluation.citation_set import build_pairs, check_flags, overlap_flags, score

    pairs = build_pairs(SQUAD, questions=150)
    assert len(pairs) >= 300
    unsupported = sum(not pair.supported for pair in pairs)
    assert 0.4 <= unsupported / len(pairs) <= 0.6
    assert len({pair.kind for pair in pairs if not pair.supported}) == 7  # every kind of hard negative
    check, overlap = score(pairs, check_flags), score(pairs, overlap_flags)
    assert check["precision"] >= 0.9 and check["recall"] >= 0.8, check
    assert check["recall"] > overlap["recall"] + 0.3, (check, overlap)


@pytest.mark.skipif(not SQUAD.exists(), reason="needs ../shared/data/squad2 (public data, not in the repo)")
def test_on_the_labelled_answers_each_new_unsupported_shape_is_caught_and_right_answers_pass():
    from chatbot.evaluation.citation_set import ANSWER_KINDS, answer_flags, build_answer_pairs, per_kind, score_kinds

    pairs = build_answer_pairs(SQUAD, questions=150)
    kinds = score_kinds(pairs, answer_flags)
    assert set(kinds) == set(ANSWER_KINDS)
    for kind, figures in kinds.items():
        assert figures["pairs"] >= 100 and figures["precision"] >= 0.9 and figures["recall"] >= 0.9, (kind, figures)
    judged = per_kind(pairs, answer_flags)  # the hard positives: right answers the checks must let through
    for kind in ("after a turn on another question", "same question asked again"):
        right, total = map(int, judged[kind].split("/"))
        assert right == total, (kind, judged[kind])


def test_an_answer_that_repeats_the_questions_words_around_its_fact_is_supported():
    worded = "When did Watt finish the development of his improvements to Newcomen's engine?"
    said = "Watt finished the development of his improvements to Newcomen's engine in 1775 [1]."
    assert judge(said, "The engine work was completed in 1775.", worded).supported  # names and words of the question
    assert not judge(said, "The engine work was completed in 1780.", worded).supported
    assert not judge(said, "The engine work was completed in 1775.").supported  # without the question: unsupported
    block = "Watt's improvements were completed in 1775, after ten years of work on the engine."
    question = "When did Watt finish his improvements to the engine?"
    assert judge("Watt finished his improvements to the engine in 1775 [1].", block, question).supported
    assert not judge("Watt finished his improvements to the engine in 1780 [1].", block, question).supported
    assert not judge("Watt finished his improvements to the engine in Glasgow [1].", block, question).supported
    from chatbot.rag.vacuous import adds_nothing

    echo = "Watt finished his improvements to the engine [1]."  # the question told back: the answer checks catch it
    assert adds_nothing(echo, question, [block])
    assert not adds_nothing("Watt finished his improvements to the engine in 1775 [1].", question, [block])


def test_list_numbering_is_not_a_claimed_number():
    block = "Create a folder adapters/<domain>/ with the PEFT files. Add a domain.toml manifest."
    answer = "1. Create a folder adapters/<domain>/ with the PEFT files [1].\n2. Add a domain.toml manifest [1]."
    assert unfounded_specifics(answer, [block]) == []
    assert judge("2. Add a domain.toml manifest [1].", block).supported


def test_markdown_emphasis_does_not_make_the_opening_word_a_name():
    block = "Revenue rose to $5.1 billion in the third quarter."
    assert unfounded_specifics("**Revenue** rose to $5.1 billion [1].", [block]) == []
    assert unfounded_specifics("_Revenue_ rose to $5.1 billion [1].", [block]) == []
    assert unfounded_specifics("**Revenue** at Acme rose to $5.1 billion [1].", [block]) == ["Acme"]  # still checked


def test_names_match_with_or_without_their_diacritics_and_possessives():
    block = "Maria Skłodowska-Curie studied in Śródmieście. Newton’s Philosophiæ Naturalis was printed in 1687."
    answer = "Sklodowska-Curie studied in Srodmiescie [1]. Newton's Philosophiae Naturalis appeared in 1687 [1]."
    assert unfounded_specifics(answer, [block]) == []
    assert judge("Sklodowska-Curie studied in Srodmiescie [1].", block).supported
    assert unfounded_specifics("Sklodowska-Curie studied in Krakow.", [block]) == ["Krakow"]


def test_an_emphasised_label_is_not_a_name_but_the_text_after_it_is_checked():
    block = "Drop files into the knowledge folder and the app indexes them within seconds."
    assert unfounded_specifics("**Refresh Knowledge:** drop files into the knowledge folder [1].", [block]) == []
    assert unfounded_specifics("__Quick Tip__: drop files into the knowledge folder [1].", [block]) == []
    assert judge("**Refresh Knowledge:** drop files into the knowledge folder [1].", block).supported
    # only a label ending in a colon is exempt, and only the label: a name after it is still checked
    assert unfounded_specifics("**Refresh Library** drop files in Dropbox [1].", [block]) == ["Library", "Dropbox"]
    assert unfounded_specifics("**Refresh:** drop files into Dropbox [1].", [block]) == ["Dropbox"]


def test_names_and_numbers_the_question_itself_holds_are_not_made_up():
    block = "Revenue of the Acme store rose to $5.1 billion in the second quarter."
    question = "What was Acme's revenue in New York City in FY2022?"
    answer = "Acme's revenue in New York City in FY2022 rose to $5.1 billion [1]."
    assert unfounded_specifics(answer, [block]) == ["New", "York", "City", "FY2022"]  # without the question
    assert unfounded_specifics(answer, [block], question) == []
    invented = "Acme's revenue in Boston was $7 billion [1]."
    assert unfounded_specifics(invented, [block], question) == ["$7 billion", "Boston"]
