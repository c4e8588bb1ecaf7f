"""Conversations: follow-ups searched with their history, OpenAI message lists, chat-page rendering."""

from dataclasses import replace

import pytest

from chatbot.rag.answer import Answer, SourceRef
from chatbot.rag.chain import DONT_KNOW
from chatbot.rag.conversation import Turn, history_messages, joined_query, refers_back, usable_rewrite
from chatbot.server.openai_schema import ChatMessage, split_conversation
from chatbot.ui.render import (
    answer_markdown,
    document_url,
    highlighted,
    link_citations,
    sources_markdown,
    sources_title,
)

BIKE_QUESTION = "How far does the e-bike battery last on a full charge?"


@pytest.fixture
def two_topics(knowledge):
    (knowledge / "bikes.md").write_text(
        "# E-bike\n\nThe e-bike battery lasts 80 km on a full charge. In winter the e-bike range drops to 55 km.\n"
    )
    (knowledge / "garden.md").write_text(
        "# Greenhouse\n\nThe greenhouse tomatoes are watered every morning at six. "
        "In winter they are watered at eight.\n"
    )
    return knowledge


def test_a_follow_up_is_searched_with_the_previous_question(make_bot, two_topics):
    bot = make_bot(max_new_tokens=24)
    bot.sync()
    first = bot.ask(BIKE_QUESTION)
    assert first.search_query is None and first.retrieved[0].source == "bikes.md"
    history = [Turn(first.question, first.answer)]
    follow_up = bot.ask("And in winter?", history=history)
    assert follow_up.search_query == f"{BIKE_QUESTION} And in winter?"
    assert follow_up.retrieved[0].source == "bikes.md"
    alone = bot.ask("And in winter?")  # on its own the follow-up finds nothing relevant
    assert alone.search_query is None and "bikes.md" not in [s.source for s in alone.retrieved[:1]]
    off = make_bot(max_new_tokens=24, followup_query="off").ask("And in winter?", history=history)
    assert off.search_query is None and off.retrieved == alone.retrieved
    # the model also sees the earlier exchange (same search, without the history in the prompt)
    unseen = make_bot(max_new_tokens=24, history_turns=0).ask("And in winter?", history=history)
    assert unseen.retrieved == follow_up.retrieved
    assert follow_up.usage["prompt_tokens"] > unseen.usage["prompt_tokens"] + 10


def test_a_new_topic_is_searched_alone_and_the_embedded_model_sees_earlier_questions_only(make_bot, two_topics):
    bot = make_bot(max_new_tokens=24)
    bot.sync()
    first = bot.ask(BIKE_QUESTION)
    history = [Turn(first.question, first.answer)]
    garden = "When are the greenhouse tomatoes watered?"
    new_topic = bot.ask(garden, history=history)
    assert new_topic.search_query is None and new_topic.retrieved == bot.ask(garden).retrieved
    assert new_topic.retrieved[0].source == "garden.md"
    joined = make_bot(max_new_tokens=24, followup_query="history").ask(garden, history=history)
    assert joined.search_query == f"{BIKE_QUESTION} {garden}"  # the old rule, kept as a setting
    # auto: the embedded model sees the earlier question, not its answer (it copied earlier answers)
    assert bot.history_answers is False
    full = make_bot(max_new_tokens=24, history_content="full")
    assert full.history_answers is True
    assert bot.evidence_agreement == 0.5 and full.evidence_agreement == 0.5  # both the embedded model
    assert make_bot(base_model="/models/any-folder").evidence_agreement == 0.0  # a larger model paraphrases
    with_answers = full.ask(garden, history=history)
    assert with_answers.usage["prompt_tokens"] > new_topic.usage["prompt_tokens"] + 5


@pytest.mark.parametrize(
    "question",
    [
        "And in winter?",
        "What about its battery?",
        "How long do they last?",
        "Why?",
        "and the next quarter",
        "Is the same true for the greenhouse?",
        "Which of those is cheaper?",
    ],
)
def test_a_question_that_leans_on_the_previous_one_refers_back(question):
    assert refers_back(question)


@pytest.mark.parametrize(
    "question",
    [
        "When are the greenhouse tomatoes watered?",
        "What does the min_relevance setting do?",
        "How do I install the app?",
        "Where is the chat page?",
        "Which file types can I put in the knowledge folder?",
        "What is the setting that controls the chunk size?",
    ],
)
def test_a_question_that_stands_alone_does_not_refer_back(question):
    assert not refers_back(question)


def test_history_helpers():
    history = [Turn("q1", "a1 [1]."), Turn("q2", "a2 [1, 2] and more [3].")]
    messages = history_messages(history, turns=1)
    assert [m.type for m in messages] == ["human", "ai"]
    assert messages[1].content == "a2 and more."  # markers of old blocks are dropped
    assert history_messages(history, turns=0) == []
    questions_only = history_messages(history, turns=2, answers=False)
    assert [(m.type, m.content) for m in questions_only] == [("human", "q1"), ("human", "q2")]
    assert joined_query(history, "q3") == "q2 q3"
    assert usable_rewrite(' "What was the range in winter?" ', "And in winter?") == "What was the range in winter?"
    assert usable_rewrite("line one\nline two", "q") is None
    assert usable_rewrite("", "q") is None


def test_openai_messages_become_system_history_and_question():
    messages = [
        ChatMessage(role="system", content="Be terse."),
        ChatMessage(role="user", content="q1"),
        ChatMessage(role="assistant", content="a1"),
        ChatMessage(role="user", content="q2"),
    ]
    assert split_conversation(messages) == ("Be terse.", [Turn("q1", "a1")], "q2")
    assert split_conversation(messages[:3])[2] is None  # the last message must be the user's
    assert split_conversation([ChatMessage(role="user", content="q")]) == (None, [], "q")


def _source(n: int, source: str, page: int | None = None, quote: str | None = None, snippet: str = "") -> SourceRef:
    return SourceRef(n=n, source=source, page=page, snippet=snippet or (quote or "text"), score=0.5, quote=quote)


def test_citation_links_and_highlights():
    pdf = _source(1, "reports/q3 2023.pdf", page=7)
    note = _source(2, "notes.md", quote="The code is 4711 for the gate.")
    assert document_url(pdf) == "/files/reports/q3%202023.pdf#page=7"
    assert document_url(note) == "/files/notes.md#:~:text=The%20code%20is%204711%20for%20the"
    linked = link_citations("Sales rose [1]. The code is 4711 [2, 9].", [pdf, note])
    assert linked == f"Sales rose [[1]]({document_url(pdf)}). The code is 4711 [[2]]({document_url(note)})[9]."
    hostile = _source(
        3, "x.md", quote="<script>alert(1)</script> is here.", snippet="Before. <script>alert(1)</script> is here."
    )
    assert highlighted(hostile) == "Before. <mark>&lt;script&gt;alert(1)&lt;/script&gt; is here.</mark>"


def test_a_source_says_where_it_is_page_slide_or_row():
    deck = _source(1, "talks/q3.pptx", page=4)
    deck.section = "Prices"
    row = _source(2, "stock.csv")
    row.section = "row 12"
    panel = sources_markdown(Answer("q", "A [1]. B [2].", "base", sources=[deck, row], retrieved=[deck, row]))
    assert " · slide 4 · Prices" in panel and " · row 12" in panel and "page" not in panel
    assert _source(3, "q3.pdf", page=7).place == "page 7" and row.place is None


def test_sources_panel_lists_cited_first_and_the_rest_as_secondary():
    cited, other = _source(1, "a.md", quote="A fact."), _source(2, "b.md")
    answer = Answer("q", "A fact [1].", "finance", sources=[cited], retrieved=[cited, other], timings={"total_s": 1.23})
    panel = sources_markdown(answer)
    assert panel.index("a.md") < panel.index("Also retrieved, not cited (1)") < panel.index("b.md")
    assert "answered by **Analyst**" in answer_markdown(
        answer, "Analyst"
    ) and "1 of 2 sources cited" in answer_markdown(answer, "Analyst")
    off = Answer("q", "text", "base", used_retrieval=False)
    assert sources_markdown(off) == "_Retrieval was off for this answer._"
    assert "cut short" not in answer_markdown(answer, "Analyst")
    answer.truncated = True  # the model was stopped at its token limit: the page says so
    assert "cut short at the token limit" in answer_markdown(answer, "Analyst")
    assert Answer.from_json(answer.to_json()).truncated  # and a saved answer keeps it
    assert "Left out" not in panel
    answer.dropped = ["The keeper <b>sings</b> opera."]  # a sentence no block supports: listed apart, escaped
    panel = sources_markdown(answer)
    assert "Left out of the answer: no passage supports them (1)" in panel and "&lt;b&gt;sings" in panel
    assert Answer.from_json(answer.to_json()).dropped == answer.dropped


def test_unsupported_citations_are_flagged_on_the_page():
    good = SourceRef(n=1, source="a.md", page=None, snippet="x", score=0.5, support=1.0, supported=True)
    bad = SourceRef(n=2, source="b.md", page=None, snippet="y", score=0.4, support=0.2, supported=False)
    bad.problems = ["number"]
    answer = Answer("q", "One [1]. Two [2].", "base", sources=[good, bad], retrieved=[good, bad])
    assert answer.unsupported == [2] and answer.to_json()["unsupported_citations"] == [2]
    assert "unsupported citation [2]" in answer_markdown(answer, "Base model")
    panel = sources_markdown(answer)
    assert panel.count("not supported by this block") == 1 and "a number it states is not in the block" in panel


def test_a_declined_answer_shows_why_the_withheld_text_and_the_passages_considered():
    considered = [_source(1, "a.md", snippet="Zlatograd is a town."), _source(2, "b.md", snippet="<b>Bold</b> claim")]
    answer = Answer(
        "How many people live in Zlatograd?",
        DONT_KNOW,
        "base",
        retrieved=considered,
        abstained=True,
        decline_reason="the answer states numbers or names that no passage holds: 25,000",
        withheld="About 25,000 people <i>live</i> there.",
    )
    line = answer_markdown(answer, "Base model")
    assert "declined: the draft answer named \u201825,000\u2019, which no passage contains" in line
    assert "2 passages considered" in line
    panel = sources_markdown(answer)
    assert "The withheld answer" in panel and "&lt;i&gt;live&lt;/i&gt;" in panel and "<i>" not in panel
    assert panel.index("a.md") < panel.index("b.md") and "&lt;b&gt;Bold" in panel
    assert sources_title(answer) == "Sources (declined · 2 passages considered)"
    payload = answer.to_json()
    assert payload["abstained"] and payload["decline_reason"].startswith("the answer states")
    assert payload["withheld"].startswith("About 25,000")


def test_a_nearest_passage_quote_shows_its_block_not_nothing_relevant():
    from chatbot.rag.chain import NEAR_QUOTED, ONLY_NEAR

    sentence = "Only safetensors weights are loaded."
    quoted = replace(_source(1, "adapters.md", quote=sentence), cited_by="quote")
    answer = Answer(
        "Can I use .bin adapter weights?",
        NEAR_QUOTED.format(f"\u201c{sentence}\u201d [1]"),
        "base",
        sources=[quoted],
        abstained=True,
        decline_reason=ONLY_NEAR,
        quoted=True,
    )
    panel = sources_markdown(answer)
    assert "adapters.md" in panel and "Nothing in the knowledge base was relevant" not in panel
    assert "the nearest one is quoted" in panel
    assert sources_title(answer) == "Sources (the nearest passage, quoted · 1)"
    assert f"[[1]]({document_url(quoted)})" in answer_markdown(answer, "Base model")  # its [1] links the file
    bare = Answer("What is the weather?", DONT_KNOW, "base", abstained=True, decline_reason="no passage")
    assert sources_markdown(bare) == "_Nothing in the knowledge base was relevant._"


def test_a_checked_answer_shows_its_evidence_sentence_under_it_once():
    from chatbot.rag.answer import EVIDENCE_LINE, Evidence, answer_of_reply

    fed = "The herons are fed at 10:30 and again at 15:00 every day."
    evidence = [Evidence(2, "zoo.md", None, None, fed, 1.2)]
    blocks = [_source(1, "bread.md"), _source(2, "zoo.md", snippet=fed)]
    answer = Answer("When are the herons fed?", "At 10:30 [2].", "base", [blocks[1]], blocks, evidence=evidence)
    assert answer.reply == f"At 10:30 [2].\n\nFrom your documents: \u201c{fed}\u201d [2]"
    assert answer_of_reply(answer.reply) == answer.answer  # what a conversation's history keeps
    pond = "The herons live at the north pond."
    two = [*evidence, Evidence(1, "bread.md", None, None, pond, 1.15)]  # the picker was unsure: both shown
    both = Answer("When are the herons fed?", "At 10:30 [2].", "base", [blocks[1]], blocks, evidence=two)
    assert both.reply == "At 10:30 [2].\n\n" + EVIDENCE_LINE.format(f"\u201c{fed}\u201d [2] \u201c{pond}\u201d [1]")
    assert answer_of_reply(both.reply) == both.answer
    said = Answer("q", f"{fed} [2]", "base", [blocks[1]], blocks, evidence=two)  # only what it does not say
    assert said.reply == f"{fed} [2]\n\nFrom your documents: \u201c{pond}\u201d [1]"
    assert answer.to_json()["reply"] == answer.reply
    copied = Answer("q", f"{fed} [2]", "base", [blocks[1]], blocks, evidence=evidence)
    assert copied.reply == copied.answer  # the answer already says the sentence: not twice
    declined = Answer("q", "I don't know.", "base", [], blocks, abstained=True, evidence=evidence)
    assert declined.reply == declined.answer
    assert Answer("q", "At 10:30.", "base").reply == "At 10:30."  # no evidence (no retrieval)
    linked = answer_markdown(Answer("q", "At 10:30.", "base", [], blocks, evidence=evidence), "Base")
    assert "From your documents:" in linked and "[[2]](/files/zoo.md" in linked  # its block, though not cited
