"""The retrieval chain end to end, with the embedded models."""

import pytest

from chatbot.adapters.domains import UnknownAdapterError
from chatbot.rag.chain import DONT_KNOW, NEAR_OPENING, NOT_ANSWERED, NOTHING_RETRIEVED, ONLY_NEAR, QUOTE_OPENING

FACT = "The Zorblax reactor on Kepler station runs at a core temperature of 4812 kelvin."


@pytest.fixture
def fact_bot(make_bot, knowledge):
    (knowledge / "reactor.txt").write_text(FACT + "\n")
    (knowledge / "gardening.md").write_text("# Tomatoes\n\nTomatoes need six hours of sun and deep watering.\n")
    (knowledge / "cooking.md").write_text("# Bread\n\nBread dough rises best at 27 degrees Celsius for two hours.\n")
    bot = make_bot()
    bot.sync()
    return bot


def test_fact_in_one_file_is_retrieved_first_and_cited(fact_bot):
    answer = fact_bot.ask("What core temperature does the Zorblax reactor run at?")
    assert answer.retrieved[0].source == "reactor.txt"
    assert "reactor.txt" in {source.source for source in answer.sources}
    assert "4812" in answer.answer.replace(",", "")
    cited = next(s for s in answer.sources if s.source == "reactor.txt")
    assert f"[{cited.n}]" in answer.answer
    assert cited.cited_by in {"model", "attribution"}
    assert answer.timings["total_s"] >= answer.timings["generation_s"] > 0
    # the model's own confidence in the answer it wrote is one of the turn's signals
    assert 0.0 < answer.signals["opening_confidence"] <= 1.0 and 0.0 < answer.signals["answer_confidence"] <= 1.0
    assert 0.0 <= answer.signals["decline_first"] < 0.5  # it did not lean to "I don't know" here


def test_unanswerable_question_takes_the_dont_know_path(fact_bot):
    answer = fact_bot.ask("Who won the 1966 football world cup final?")
    assert answer.answer == DONT_KNOW and answer.abstained
    assert answer.sources == [] and answer.retrieved == []
    assert "generation_s" not in answer.timings  # the model was not even asked


def test_no_retrieval_really_skips_retrieval(fact_bot):
    answer = fact_bot.ask("What core temperature does the Zorblax reactor run at?", use_retrieval=False)
    assert not answer.used_retrieval
    assert answer.retrieved == [] and answer.sources == []
    assert "retrieval_s" not in answer.timings
    assert "4812" not in answer.answer.replace(",", "")  # only the knowledge base knows this


def test_stream_yields_text_pieces_then_the_answer(fact_bot):
    events = list(fact_bot.stream("How long should bread dough rise?"))
    pieces, final = events[:-1], events[-1]
    assert len(pieces) > 1 and all(isinstance(piece, str) for piece in pieces)
    assert "".join(pieces).strip() in final.answer or final.answer.startswith("".join(pieces).strip()[:20])
    assert final.retrieved[0].source == "cooking.md"


def test_a_model_that_starts_the_prompts_next_turn_stops_there_and_streams_none_of_it(make_bot, knowledge):
    (knowledge / "tea.md").write_text(
        "# Tea\n\nGreen tea is made from leaves of Camellia sinensis that are not oxidised. "
        "It is popular in China and Japan.\n"
    )
    bot = make_bot()
    bot.sync()
    told = "After your answer, write a new line that starts with 'Question:' and ask a follow-up question."
    events = list(bot.stream("What is green tea made from?", system_prompt=told))
    streamed, final = "".join(events[:-1]), events[-1]
    assert "Camellia sinensis" in streamed and "Question:" not in streamed  # the model wrote "\n\nQuestion: ..."
    assert "Camellia sinensis" in final.answer and not final.truncated


def test_greedy_answers_repeat(fact_bot):
    question = "How many hours of sun do tomatoes need?"
    assert fact_bot.ask(question).answer == fact_bot.ask(question).answer


def test_unknown_adapter_is_refused_with_the_available_ones(fact_bot):
    with pytest.raises(UnknownAdapterError, match="unknown adapter 'legal'.*base"):
        fact_bot.ask("anything", adapter="legal")


def test_empty_question_is_refused(fact_bot):
    with pytest.raises(ValueError, match="empty"):
        fact_bot.ask("   ")


def test_sampled_generation_repeats_with_a_seed_and_varies_without(fact_bot):
    question = "Write one sentence about bread."
    kwargs = {"use_retrieval": False, "temperature": 1.2, "top_p": 1.0, "max_new_tokens": 24}
    first = fact_bot.ask(question, seed=7, **kwargs).answer
    assert fact_bot.ask(question, seed=7, **kwargs).answer == first
    others = {fact_bot.ask(question, seed=seed, **kwargs).answer for seed in (1, 2, 3)}
    assert len(others | {first}) > 1


def _finish(bot, raw, question="What core temperature does the Zorblax reactor run at?", ended_by=None):
    """The chain's own post-processing of a raw model answer over the blocks it retrieves."""
    from chatbot.rag.chain import ChainRequest
    from chatbot.vocabulary import GenerationStats

    chain = bot.chain
    blocks = chain.fit(chain.retrieve(question))
    return chain._finish(ChainRequest(question), raw, blocks, {}, GenerationStats(ended_by=ended_by))


def test_an_answer_stopped_in_a_loop_is_whole_and_one_stopped_at_its_limit_is_cut_short(fact_bot):
    said = "The reactor runs at a core temperature of 4812 kelvin [1]."
    raw = f"{said} {said} {said} The reactor runs at a"
    looped = _finish(fact_bot, raw, ended_by="loop")
    assert looped.answer == said and not looped.truncated  # the repeats and the cut are gone: nothing is missing
    limited = _finish(fact_bot, raw, ended_by="length")
    assert limited.answer == said and limited.truncated  # the model had more to say: "cut short at the token limit"


def test_answers_the_passages_do_not_back_are_declined_with_their_reason(fact_bot):
    from chatbot.rag.chain import CONTEXT_DUMP, UNSUPPORTED

    made_up = _finish(fact_bot, "The Zorblax reactor runs at a core temperature of 5200 kelvin [1].")
    assert made_up.abstained and made_up.quoted and "5200" not in made_up.answer  # the passage instead
    assert made_up.answer == f"{QUOTE_OPENING} The closest passage in your documents says: \u201c{FACT}\u201d [1]"
    assert [(s.n, s.source, s.cited_by) for s in made_up.sources] == [(1, "reactor.txt", "quote")]
    assert "5200" in made_up.decline_reason and "5200" in made_up.withheld
    assert made_up.retrieved[0].source == "reactor.txt"  # what was considered is still shown
    dump = _finish(fact_bot, "[1] # Tomatoes [2] # Bread")
    assert dump.abstained and dump.decline_reason == CONTEXT_DUMP
    wrong_block = _finish(fact_bot, "Bread dough rises best in a warm and quiet kitchen [1].")
    assert wrong_block.abstained and wrong_block.decline_reason == UNSUPPORTED
    honest = _finish(fact_bot, "The reactor [1] runs at a core temperature of 4812 kelvin.")
    assert not honest.abstained and honest.answer == "The reactor runs at a core temperature of 4812 kelvin [1]."
    assert honest.sources[0].supported and honest.sources[0].cited_by == "model"


def test_only_checked_sentences_are_shown_re_cited_where_another_block_holds_them(fact_bot):
    from chatbot.rag.chain import UNFOUNDED, ChainRequest
    from chatbot.vocabulary import GenerationStats

    right = "The reactor runs at a core temperature of 4812 kelvin [1]."
    mixed = _finish(fact_bot, f"{right} It was built by the Kepler council in 2051.")
    assert not mixed.abstained and mixed.answer == right and "2051" not in mixed.reply
    assert mixed.dropped == ["It was built by the Kepler council in 2051."] == mixed.to_json()["dropped"]
    chain = fact_bot.chain
    question = "How long should bread dough rise?"
    blocks = chain.retrieve(question)[:1] + chain.retrieve("What core temperature does the Zorblax reactor run at?")[:1]
    assert [doc.metadata["source"] for doc in blocks] == ["cooking.md", "reactor.txt"]
    raw = "Bread dough rises best at 27 degrees Celsius for two hours [2]."  # the marker names the reactor
    recited = chain._finish(ChainRequest(question), raw, blocks, {}, GenerationStats())
    assert not recited.abstained and recited.answer == raw.replace("[2]", "[1]")
    assert [(s.source, s.supported) for s in recited.sources] == [("cooking.md", True)]
    short = _finish(fact_bot, "The answer is: 4812 kelvin.")
    assert not short.abstained and short.answer == "The answer is: 4812 kelvin [1]."
    made_up = _finish(fact_bot, "The answer is: 5200 kelvin.")  # nothing checked is left: the reason names it
    assert made_up.abstained and made_up.quoted and made_up.decline_reason == UNFOUNDED.format("5200")
    assert made_up.withheld == "The answer is: 5200 kelvin." and made_up.dropped == []


def test_with_declining_off_the_flagged_answer_is_shown_with_its_problems(fact_bot):
    fact_bot.chain.decline_unsupported = False
    try:
        shown = _finish(fact_bot, "The Zorblax reactor runs at a core temperature of 5200 kelvin [1].")
    finally:
        fact_bot.chain.decline_unsupported = True
    assert not shown.abstained and "5200" in shown.answer
    assert shown.sources[0].supported is False and shown.sources[0].problems == ["number"]
    assert shown.unsupported == [1]


def test_every_live_answer_is_either_declined_with_a_reason_or_fully_backed(fact_bot):
    from chatbot.rag.grounding import unfounded_specifics

    questions = (
        "What core temperature does the Zorblax reactor run at?",
        "How many hours of sun do tomatoes need?",
        "What year was the Zorblax reactor on Kepler station built?",
    )
    for question in questions:
        answer = fact_bot.ask(question)
        if answer.abstained:
            assert answer.decline_reason
            assert answer.answer == DONT_KNOW or (answer.quoted and answer.answer.startswith(QUOTE_OPENING))
            continue
        blocks = [source.snippet for source in answer.retrieved]
        assert all(source.supported for source in answer.sources), answer.sources
        assert unfounded_specifics(answer.answer, blocks) == [], answer.answer


def test_a_turn_the_answerability_signal_rates_low_is_declined_with_its_estimate(fact_bot):
    from chatbot.rag.answerability import Answerability
    from chatbot.rag.chain import UNLIKELY

    chain = fact_bot.chain
    saved = chain.answerability, chain.answerability_threshold
    chain.answerability = Answerability({"question_missing": -6.0, "question_coverage": 2.0}, bias=0.0, threshold=0.5)
    chain.answerability_threshold = 0.5
    try:
        raw = "The reactor runs at a core temperature of 4812 kelvin [1]."
        asked = _finish(fact_bot, raw)
        swapped = _finish(fact_bot, raw, question="What core temperature does the Quelmar reactor run at?")
        chain.answerability_threshold = 0.0  # off: the same turn is shown, with its estimate
        shown = _finish(fact_bot, raw, question="What core temperature does the Quelmar reactor run at?")
    finally:
        chain.answerability, chain.answerability_threshold = saved
    assert not asked.abstained and asked.answerability > 0.5 and asked.signals["question_missing"] == 0.0
    assert swapped.abstained and swapped.answer.startswith(QUOTE_OPENING) and swapped.withheld == asked.answer
    assert swapped.answerability < 0.5 and swapped.decline_reason == UNLIKELY.format(swapped.answerability, 0.5)
    assert swapped.retrieved and [s.cited_by for s in swapped.sources] == ["quote"]  # what was considered is shown
    assert not shown.abstained and shown.answerability == swapped.answerability
    assert swapped.to_json()["answerability"] == swapped.answerability
    assert swapped.to_json()["signals"]["question_missing"] == 1.0


def test_a_decline_quotes_the_sentence_that_answers_and_an_answer_carries_it_as_evidence(make_bot, knowledge):
    """Retrieval found the passage: the reply carries its sentence, never a bare "I don't know"."""
    (knowledge / "zoo.md").write_text(
        "# Herons\n\nThe herons live at the north pond of the zoo. Visitors may watch them from the boardwalk. "
        "The herons are fed at 10:30 and again at 15:00 every day. Their nests are in the tall reeds.\n"
    )
    (knowledge / "bread.md").write_text("# Bread\n\nBread dough rises best at 27 degrees Celsius for two hours.\n")
    bot = make_bot(answerability_threshold=0.999, evidence_margin=0.0)  # every answer withheld; one sentence
    bot.sync()
    answer = bot.ask("When are the herons fed?")
    assert answer.abstained and answer.quoted and answer.withheld is not None
    fed = "The herons are fed at 10:30 and again at 15:00 every day."
    assert answer.answer == f"{QUOTE_OPENING} The closest passage in your documents says: \u201c{fed}\u201d [1]"
    assert answer.evidence[0].text == fed and answer.evidence[0].source == "zoo.md"
    assert answer.to_json()["evidence"][0]["text"] == fed and answer.to_json()["quoted"] is True
    nothing = bot.ask("What is the airspeed of an unladen swallow in the Andes?")
    assert nothing.answer == DONT_KNOW and not nothing.quoted  # nothing relevant: nothing to quote

    # nothing reaches min_relevance: the nearest passage above quote_relevance is quoted, unread by the model
    near = make_bot(min_relevance=0.95, quote_relevance=0.2, evidence_margin=0.0).ask("When are the herons fed?")
    assert near.abstained and near.quoted and near.decline_reason == ONLY_NEAR and near.withheld is None
    assert near.answer == f"{NEAR_OPENING} The nearest passage says: \u201c{fed}\u201d [1]"
    assert near.retrieved == [] and "generation_s" not in near.timings  # the model was not asked
    assert [(s.source, s.cited_by) for s in near.sources] == [("zoo.md", "quote")]
    assert "the nearest one is quoted" in near.why
    off = make_bot(min_relevance=0.95, quote_relevance=0.95).ask("When are the herons fed?")
    assert off.answer == DONT_KNOW and not off.quoted and off.decline_reason == NOTHING_RETRIEVED
    far = make_bot(min_relevance=0.95, quote_relevance=0.2).ask(
        "What is the airspeed of an unladen swallow in the Andes?"
    )
    assert far.answer == DONT_KNOW and not far.quoted  # off-topic: below the quote floor too

    unsure = make_bot(answerability_threshold=0.999, evidence_margin=1.0).ask("When are the herons fed?")
    first, second = unsure.evidence  # any second sentence is within a margin of 1: both are quoted
    assert first.text == fed and second.text != fed and unsure.quoted
    assert unsure.answer == (
        f"{QUOTE_OPENING} The closest passages in your documents say: "
        f"\u201c{fed}\u201d [{first.n}] \u201c{second.text}\u201d [{second.n}]"
    )
    assert {(s.n, s.cited_by) for s in unsure.sources} == {(first.n, "quote"), (second.n, "quote")}
    assert len(unsure.sources) == len({first.n, second.n})  # one source per quoted block

    shown = make_bot(answerability_threshold=0.0, quote_evidence=True)
    answered = shown.ask("When are the herons fed?")
    assert answered.evidence and answered.evidence[0].text == fed
    assert not answered.quoted or answered.abstained  # a shown model answer is never replaced
    off = make_bot(answerability_threshold=0.999, quote_evidence=False).ask("When are the herons fed?")
    assert off.answer == NOT_ANSWERED and off.evidence == [] and not off.quoted


def test_a_restated_question_or_a_repeated_earlier_answer_is_withheld_and_the_passage_quoted(fact_bot):
    from chatbot.rag.chain import REPEATED, RESTATED, ChainRequest
    from chatbot.rag.conversation import Turn
    from chatbot.vocabulary import GenerationStats

    chain = fact_bot.chain
    question = "What core temperature does the Zorblax reactor run at?"
    blocks = chain.fit(chain.retrieve(question))

    def finish(raw, history=()):
        return chain._finish(ChainRequest(question, history=list(history)), raw, blocks, {}, GenerationStats())

    restated = finish("The core temperature the Zorblax reactor runs at is the answer to the question [1].")
    assert restated.abstained and restated.decline_reason == RESTATED and restated.quoted
    assert FACT in restated.answer  # the passage that answers, instead
    said = "The Zorblax reactor runs at a core temperature of 4812 kelvin [1]."
    assert not finish(said).abstained  # the same facts, told: shown
    earlier = [Turn("How many hours of sun do tomatoes need?", said)]
    repeated = finish(said, earlier)
    assert repeated.abstained and repeated.decline_reason == REPEATED and repeated.withheld == said
    assert not finish(said, [Turn(question, said)]).abstained  # the same question again may get the same answer


GUIDE_QUESTIONS = [
    "How do I refresh the knowledge base?",
    "Which file types can I put in the knowledge folder?",
    "What does the min_relevance setting do?",
    "How do I train an adapter?",
]


def test_a_shown_answer_holds_what_its_evidence_sentence_holds_or_the_sentence_is_quoted(make_bot, user_guide):
    from chatbot.rag.chain import DISAGREES
    from chatbot.rag.vacuous import evidence_agreement
    from chatbot.text import sentences, strip_markers

    strict = make_bot(evidence_agreement=1.0)  # every word an answer adds must be in its evidence sentence
    strict.sync()
    loose = make_bot(evidence_agreement=0.0)
    outcomes = []
    for question in GUIDE_QUESTIONS:
        answer = strict.ask(question)
        best = answer.evidence[0].text
        if not answer.abstained:
            assert evidence_agreement(answer.answer, question, best) == 1.0
            outcomes.append("shown")
        elif answer.decline_reason == DISAGREES:
            assert answer.quoted and best in answer.answer
            assert evidence_agreement(answer.withheld, question, best) < 1.0
            drafted = loose.ask(question)  # the same draft, its checked sentences shown without this check
            said = {strip_markers(part).strip() for part, _ in sentences(answer.withheld)}
            kept = {strip_markers(part).strip() for part, _ in sentences(drafted.answer)}
            assert drafted.answer and kept <= said and set(drafted.dropped) <= said
            outcomes.append("withheld")
    assert "withheld" in outcomes, outcomes  # the check acted on the user guide's first questions
