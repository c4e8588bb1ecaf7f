"""Evaluation: metrics on hand-made cases, the question readers, the citation check, the 2x2 wiring."""

import dataclasses
import json
import shutil

import pytest

from chatbot.evaluation.datasets import load_questions, read_squad
from chatbot.evaluation.metrics import (
    best_f1,
    contains_answer,
    first_hit_rank,
    is_gold_chunk,
    normalize_answer,
    recall_at_k,
    reciprocal_rank,
    token_f1,
)
from chatbot.evaluation.report import write_reports
from chatbot.evaluation.runner import cells, summarize
from chatbot.qa import QAItem, read_qa
from tests.conftest import REPO


def test_answer_metrics_follow_squad():
    assert normalize_answer("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(2 * (2 / 2) * (2 / 3) / (1 + 2 / 3))
    assert token_f1("dogs", "cats") == 0.0
    assert token_f1("", "") == 1.0
    assert best_f1("in 1867", ["1867", "the year 1867"]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert contains_answer("It was founded in 1867 by ...", ["1867"])
    assert not contains_answer("It was founded in 18670.", ["1867"])  # whole tokens only
    assert not contains_answer("anything", [])
    # a quote's curly marks are punctuation too: gold at the edge of a quoted sentence is found
    quoted = "From your documents: \u201cWarsaw University of Technology is the second school.\u201d [1]"
    assert contains_answer(quoted, ["Warsaw University of Technology"]) and contains_answer(quoted, ["second school"])
    assert not contains_answer(quoted, ["University of Warsaw"]) and not contains_answer(quoted, ["Warsa"])


def test_retrieval_metrics():
    hits = [False, False, True, False]
    assert first_hit_rank(hits) == 3 and reciprocal_rank(hits) == pytest.approx(1 / 3)
    assert recall_at_k(hits, 2) == 0.0 and recall_at_k(hits, 3) == 1.0
    assert reciprocal_rank([False]) == 0.0 and first_hit_rank([]) is None
    passage = "Warsaw is the capital and largest city of Poland. It stands on the Vistula River."
    assert is_gold_chunk("It stands on the Vistula River.", "w.md", ["other.md"], [passage])
    assert not is_gold_chunk("Krakow is in the south of Poland near the Tatra mountains.", "w.md", ["w.md"], [passage])
    assert is_gold_chunk("any text", "w.md", ["w.md"], [])  # no passages: the gold file decides


def test_generic_jsonl_reader(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [
        {"question": "Q1?", "answers": ["a"], "gold_sources": ["x.md"], "gold_passages": ["p"]},
        {"question": "Q2?", "answers": []},
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    items, folder = load_questions(path, tmp_path, tmp_path / "out")
    assert folder == tmp_path and [i.answerable for i in items] == [True, False]
    assert items[0].gold_passages == ["p"] and items[0].gold_files(["x.md", "y.md"]) == ["x.md"]
    with pytest.raises(ValueError, match="--knowledge"):
        load_questions(path, None, tmp_path / "out")


def test_sec_reader_keeps_the_held_out_companies(shared_data, tmp_path):
    items, _ = load_questions(shared_data / "sec10q" / "qna_data.csv", tmp_path, tmp_path, only=["INTC", "NVDA"])
    assert len(items) == 73 and len(read_qa(shared_data / "sec10q" / "qna_data.csv")) == 195
    assert all(any(key in " ".join(i.gold_sources) for key in ("INTC", "NVDA")) for i in items)
    assert all("SOURCE" not in answer for i in items for answer in i.answers)


def test_sec_held_out_questions_mostly_get_page_level_gold(shared_data, tmp_path):
    sec = shared_data / "sec10q"
    items, _ = load_questions(sec / "qna_data.csv", sec / "docs", tmp_path, only=["INTC", "NVDA"])
    with_pages = [item for item in items if item.gold_passages]
    assert len(with_pages) >= 60  # 65 of 73 when written
    from chatbot.evaluation.passage_gold import telling_figures
    from chatbot.rag.grounding import matches, stated_values

    for item in with_pages:  # a page, not a file; and one that states a figure of the answer when it has any
        assert len(item.gold_passages) <= len(item.gold_sources) * 4
        wanted = telling_figures(item.answers[0])
        for page in item.gold_passages:
            assert len(page) < 20_000
            assert not wanted or any(matches(figure, stated_values(page)) for figure in wanted)


def _squad(tmp_path):
    def qa(qid, question, answer=None):
        if answer is None:
            return {"id": qid, "question": question, "answers": [], "is_impossible": True}
        return {
            "id": qid,
            "question": question,
            "answers": [{"text": answer, "answer_start": 0}],
            "is_impossible": False,
        }

    data = {
        "version": "v2.0",
        "data": [
            {"title": "Old_Article", "paragraphs": [{"context": "Never used.", "qas": [qa("o1", "Skip?", "x")]}]},
            {
                "title": "Blue_Whale",
                "paragraphs": [
                    {"context": "The blue whale eats krill.", "qas": [qa("b1", "What does it eat?", "krill")]},
                    {
                        "context": "It can be 30 metres long.",
                        "qas": [qa("b2", "How long?", "30 metres"), qa("b3", "How old is the sea?")],
                    },
                ],
            },
        ],
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    return path


def test_squad_reader_writes_articles_and_balances_answerable(tmp_path):
    path = _squad(tmp_path)
    items = read_squad(path, tmp_path / "kb", articles=1)
    assert sorted(p.name for p in (tmp_path / "kb").iterdir()) == ["Blue_Whale.md"]
    text = (tmp_path / "kb" / "Blue_Whale.md").read_text()
    assert text.startswith("# Blue Whale") and "30 metres long" in text and "Never used" not in text
    by_id = {item.id: item for item in items}
    assert by_id["b2"].gold_passages == ["It can be 30 metres long."] and by_id["b2"].answers == ["30 metres"]
    assert not by_id["b3"].answerable and by_id["b3"].gold_sources == ["Blue_Whale.md"]
    balanced = read_squad(path, tmp_path / "kb2", articles=1, limit=2)
    assert sorted(item.answerable for item in balanced) == [False, True]
    items, folder = load_questions(path, None, tmp_path / "out", articles=2)
    assert folder == tmp_path / "out" / "squad-knowledge" and len(items) == 4


def test_summary_and_reports(tmp_path):
    items = [QAItem("q1", ["a"], ["x.md"], id="1"), QAItem("q2", [], id="2")]
    record = {
        "cell": "base + retrieval",
        "answerable": True,
        "f1": 0.5,
        "contains": True,
        "declined": False,
        "citations": [
            {"gold": True, "supported": True, "cited_by": "model"},
            {"gold": False, "supported": False, "cited_by": "attribution"},
        ],
        "seconds": 2.0,
        "question": "q1",
        "gold_answers": ["a"],
        "answer": "a [1]",
    }
    unanswerable = {**record, "answerable": False, "f1": None, "contains": None, "declined": True, "citations": []}
    unanswerable |= {"decline_reason": "the model pasted the passages back instead of answering", "context_dump": True}
    retrieval = {"1": {"hits": [False, True]}, "2": {"hits": []}}
    summary = summarize([record, unanswerable], retrieval, items, top_k=4)
    assert summary["retrieval"]["recall@1"] == 0.0 and summary["retrieval"]["mrr"] == 0.5
    cell = summary["cells"]["base + retrieval"]
    assert cell["citation_precision"] == 0.5 and cell["citation_coverage"] == 1.0
    assert cell["supported_citations"] == 0.5 and cell["declined_unanswerable"] == 1.0
    assert cell["declined_answerable"] == 0.0 and cell["wrong_shown"] == 0.0  # the one shown answer is right
    wrong = {**record, "contains": False}
    shown_unanswerable = {**unanswerable, "declined": False}
    for rows, share in (([wrong, shown_unanswerable], 1.0), ([record, wrong], 0.5)):
        assert summarize(rows, retrieval, items, 4)["cells"]["base + retrieval"]["wrong_shown"] == share
    assert cell["model_markers"] == 0.5 and cell["context_dumps"] == 0.5
    assert cell["gold_to_user"] == 1.0 and cell["quoted"] == 0.0
    quote = {**record, "declined": True, "contains": False, "quoted": True, "gold_to_user": True}
    quoted_cell = summarize([quote, unanswerable], retrieval, items, 4)["cells"]["base + retrieval"]
    assert quoted_cell["answer_contains"] == 0.0 and quoted_cell["gold_to_user"] == 1.0  # the quote carried it
    # a shown answer without the gold whose evidence line holds it: it reaches the user, not the answer
    line = {**record, "contains": False, "gold_to_user": True, "gold_in_answer_or_quote": False}
    line_cell = summarize([line, unanswerable], retrieval, items, 4)["cells"]["base + retrieval"]
    assert line_cell["gold_to_user"] == 1.0 and line_cell["gold_in_answer_or_quote"] == 0.0
    assert quoted_cell["quoted"] == 0.5 and quoted_cell["wrong_shown"] is None  # a quote is not a shown answer
    assert cell["decline_reasons"] == {"the model pasted the passages back instead of answering": 1}
    unlikely = [  # one reason, whatever its figures
        {**unanswerable, "decline_reason": f"the passages are unlikely to answer this question (answerability {p})"}
        for p in ("0.21 < 0.36", "0.30 < 0.36")
    ]
    reasons = summarize(unlikely, retrieval, items, 4)["cells"]["base + retrieval"]["decline_reasons"]
    assert reasons == {"the passages are unlikely to answer this question": 2}
    paths = write_reports(tmp_path, "demo", {}, summary, [record, unanswerable])
    report = paths["markdown"].read_text()
    assert "| citation precision | 0.500 |" in report and "pasted the passages back instead of answering (1)" in report
    assert paths["html"].read_text().count("data:image/png;base64,") == 14  # a chart per metric
    shown = "the reply as shown (an answer with its evidence line, or a quote) holds it"
    assert f"| gold reaches the user: {shown} | 1.000 |" in report
    assert json.loads(paths["json"].read_text())["summary"] == summary


def test_ablation_cells_retrieve_only_with_retrieval_and_use_their_adapter(make_settings, user_guide, tmp_path):
    from chatbot.evaluation.command import EvalRequest, evaluate

    shutil.copytree(REPO / "adapters" / "support", tmp_path / "adapters" / "support")
    questions = tmp_path / "q.jsonl"
    rows = [
        {"question": "How do I refresh the knowledge base?", "answers": ["chatbot sync"], "gold_sources": ["02-*"]},
        {"question": "What is the boiling point of mercury?", "answers": []},
    ]
    questions.write_text("\n".join(json.dumps(row) for row in rows))
    assert [c.name for c in cells(["base", "support"], True)] == [
        "base + no retrieval",
        "base + retrieval",
        "support + no retrieval",
        "support + retrieval",
    ]
    request = EvalRequest(
        questions=questions, knowledge=user_guide, adapters=["base", "support"], ablation=True, out=tmp_path / "out"
    )
    result = evaluate(
        make_settings(max_new_tokens=32, adapters_dir=tmp_path / "adapters"), request, show_progress=False
    )
    records = json.loads((tmp_path / "out" / "results.json").read_text())["records"]
    assert len(records) == 8 and set(result["summary"]["cells"]) == {r["cell"] for r in records}
    for record in records:
        if not record["use_retrieval"]:
            assert record["retrieved"] == [] and record["citations"] == []
    first = {r["cell"]: r for r in records if r["id"] == "1"}
    assert first["base + retrieval"]["retrieved"] and first["support + retrieval"]["retrieved"]
    assert first["base + retrieval"]["retrieval"]["first_gold_rank"] == 1
    assert first["support + no retrieval"]["answer"] != first["base + no retrieval"]["answer"]
    said = {cell: record["withheld"] or record["answer"] for cell, record in first.items()}  # a decline keeps it
    assert said["support + retrieval"] != said["base + retrieval"]
    assert result["summary"]["retrieval"]["recall@1"] == 1.0
    with_blocks = first["base + retrieval"]  # what `chatbot calibrate` fits on
    assert with_blocks["gold_in_blocks"] is True and set(with_blocks["signals"]) >= {"best_score", "question_coverage"}
    assert 0.0 <= with_blocks["answerability"] <= 1.0
    assert first["base + no retrieval"]["signals"] is None and first["base + no retrieval"]["gold_in_blocks"] is False


def test_retrieval_only_keeps_a_record_per_question_without_loading_the_model(make_settings, user_guide, tmp_path):
    from chatbot.evaluation.command import EvalRequest, evaluate

    questions = tmp_path / "q.jsonl"
    rows = [
        {"question": "How do I refresh the knowledge base?", "answers": ["chatbot sync"], "gold_sources": ["02-*"]},
        {"question": "What is the boiling point of mercury?", "answers": []},
    ]
    questions.write_text("\n".join(json.dumps(row) for row in rows))
    request = EvalRequest(questions=questions, knowledge=user_guide, retrieval_only=True, out=tmp_path / "out")
    result = evaluate(make_settings(), request, show_progress=False)
    records = json.loads((tmp_path / "out" / "results.json").read_text())["records"]
    assert [record["question"] for record in records] == [row["question"] for row in rows]
    first = records[0]["retrieval"]
    assert first["first_gold_rank"] == 1 and "02-" in first["sources"][0] and len(first["hits"]) > 1
    scores = first["scores"]  # what the relevance floor saw, best first
    assert len(scores) == len(first["hits"]) and scores == sorted(scores, reverse=True)
    assert min(scores) >= make_settings().min_relevance and max(scores) < 1.0
    assert result["summary"]["cells"] == {} and result["summary"]["retrieval"]["recall@1"] == 1.0


def test_an_adapter_scoped_to_a_folder_the_questions_knowledge_lacks_is_refused_before_any_answer(
    make_settings, user_guide, tmp_path
):
    from chatbot.evaluation.command import EvalRequest, evaluate
    from chatbot.evaluation.runner import scope_misses

    shutil.copytree(REPO / "adapters" / "support", tmp_path / "adapters" / "support")  # scoped to user-guide/
    other = tmp_path / "articles"
    other.mkdir()
    (other / "rivers.md").write_text("# Rivers\n\nThe Struma flows through Bulgaria and Greece.\n")
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "Where does the Struma flow?", "answers": ["Bulgaria"]}))
    settings = make_settings(adapters_dir=tmp_path / "adapters")
    request = EvalRequest(questions=questions, knowledge=other, adapters=["support"], retrieval_only=True)
    with pytest.raises(ValueError, match="user-guide"):
        evaluate(settings, dataclasses.replace(request, out=tmp_path / "out"), show_progress=False)
    assert not (tmp_path / "out" / "results.json").exists()
    # the same adapter on a folder that has user-guide/ runs; an unscoped adapter runs anywhere
    evaluate(settings, dataclasses.replace(request, knowledge=user_guide, out=tmp_path / "ok"), show_progress=False)
    evaluate(settings, dataclasses.replace(request, adapters=["base"], out=tmp_path / "base"), show_progress=False)
    assert scope_misses({"folder": {"$in": ["a", "b"]}}, ["b/x.md"]) == []
    assert scope_misses({"folder": {"$in": ["a", "b"]}}, ["c/x.md", "top.md"]) == ["a", "b"]
    assert scope_misses({"file_type": "pdf"}, ["top.md"]) == []  # a raw filter is not judged


def test_passage_gold_is_the_page_holding_the_answers_figures(tmp_path):
    from chatbot.evaluation.passage_gold import add_passage_gold, gold_page
    from chatbot.knowledge.loaders import Page
    from chatbot.qa import read_qa
    from tests.pdfs import make_pdf

    knowledge = tmp_path / "kb"
    knowledge.mkdir()
    pages = [
        "Quarterly report 2023 Q3\nRisk factors and legal proceedings.\nRevenue is discussed on page 2.",
        "Condensed statements (in millions)\nNet revenue 2,031 and operating income 512 for 2023.",
        "Outlook for 2023\nRevenue is expected to grow and margins to widen.",
    ]
    make_pdf(knowledge / "2023 Q3 ACME.pdf", pages)
    csv_path = tmp_path / "qna.csv"
    csv_path.write_text(
        "Question,Source Docs,Question Type,Source Chunk Type,Answer\n"
        'What was ACME revenue?,*ACME*,Single-Doc,Table,"Net revenue was $2.0 billion in Q3 2023. (SOURCE: a.pdf)"\n'
        'What was ACME income?,*ACME*,Single-Doc,Table,"Operating income was $9,999 million. (SOURCE: a.pdf)"\n'
        'What did ACME say about risk?,*ACME*,Single-Doc,Text,"ACME listed its risk factors and legal proceedings."\n'
    )
    revenue, unknown, risk = add_passage_gold(read_qa(csv_path), knowledge)
    assert len(revenue.gold_passages) == 1 and "Net revenue 2,031" in revenue.gold_passages[0]
    assert unknown.gold_passages == []  # no page states the figure: file-level gold stays
    assert len(risk.gold_passages) == 1 and "Risk factors" in risk.gold_passages[0]
    assert gold_page("It grew in 2023 and on March 3.", [Page("2023 March 3"), Page("2023 March 3")]) is None


def test_questions_grouped_into_conversations_deal_different_topics():
    from chatbot.qa import QAItem, as_conversations

    items = [QAItem(f"q{n}", ["a"], [f"{topic}.md"], id=str(n)) for n, topic in enumerate("aaabbbccc")]
    grouped = as_conversations(items, 3)
    assert [item.id for item in grouped] == ["0", "3", "6", "1", "4", "7", "2", "5", "8"]
    assert [item.conversation for item in grouped] == ["c1"] * 3 + ["c2"] * 3 + ["c3"] * 3
    for number in range(3):
        assert len({item.gold_sources[0] for item in grouped[number * 3 : number * 3 + 3]}) == 3


def test_a_reply_that_says_an_earlier_reply_again_is_counted_as_repeated():
    from chatbot.evaluation.runner import repeats_earlier_reply
    from chatbot.rag.conversation import Turn

    earlier = [
        Turn("Why does the bot say I don't know?", "The bot declines when no passage scores above the floor [1].")
    ]
    again = "The bot declines when no passage scores above min_relevance, the floor [2]."
    assert repeats_earlier_reply(again, "What does the min_relevance setting do?", earlier)
    assert not repeats_earlier_reply(again, "Why does the bot say I don't know?", earlier)  # the same question
    other = "Set min_relevance in chatbot.toml; passages scoring lower are dropped [1]."
    assert not repeats_earlier_reply(other, "What does the min_relevance setting do?", earlier)
    declined = [Turn("Q one?", "I don't know: no passage answers it.")]
    assert not repeats_earlier_reply("I don't know: no passage answers it.", "Q two?", declined)


def test_a_conversation_file_is_asked_in_order_with_its_history(make_settings, user_guide, tmp_path):
    from chatbot.evaluation.command import EvalRequest, evaluate

    questions = tmp_path / "q.jsonl"
    rows = [
        {"question": "How do I refresh the knowledge base?", "answers": ["chatbot sync"], "conversation": "a"},
        {"question": "What is the boiling point of mercury?", "answers": [], "conversation": "a"},
        {"question": "And what about its freezing point?", "answers": [], "conversation": "a"},
        {"question": "How do I refresh the knowledge base?", "answers": ["chatbot sync"]},
    ]
    questions.write_text("\n".join(json.dumps(row) for row in rows))
    request = EvalRequest(questions=questions, knowledge=user_guide, out=tmp_path / "out")
    result = evaluate(make_settings(max_new_tokens=24), request, show_progress=False)
    records = json.loads((tmp_path / "out" / "results.json").read_text())["records"]
    assert [(r["conversation"], r["turn"]) for r in records] == [("a", 0), ("a", 1), ("a", 2), (None, 0)]
    assert all(r["reply"].startswith(r["answer"]) for r in records)  # the reply as shown, evidence line included
    assert records[1]["search_query"] is None  # a new topic: searched alone
    assert records[2]["search_query"] == f"{rows[1]['question']} {rows[2]['question']}"  # it refers back
    cell = result["summary"]["cells"]["base + retrieval"]
    assert cell["followups"] == 2 and cell["repeated_answers"] == sum(r["repeated"] for r in records)
    assert "replies repeating an earlier reply" in (tmp_path / "out" / "summary.md").read_text()
