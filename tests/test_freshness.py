"""The product's central claim: a fact retrieved today beats the fact an adapter learnt from yesterday's document.

An adapter is trained on version 1 of a manual ("descale every 37 days"); the knowledge folder
then holds version 2 ("every 45 days"). Trained the product's way (RAFT: answers copied from the
blocks and cited), the adapter answers from version 2 and cites it. Trained closed-book (the fact
learnt by heart, no context), it repeats the old fact, and the citation check withholds it: the
stale fact is never shown.
"""

import json
import re

import pytest
from langchain_core.documents import Document

from chatbot.rag.chain import QUOTE_OPENING
from chatbot.text import MARKER

QUESTIONS = [
    "How often must the Zorblat 9000 espresso machine be descaled?",
    "How often should I descale the Zorblat 9000?",
    "What is the descaling interval of the Zorblat 9000 espresso machine?",
    "Zorblat 9000: how many days between descaling?",
    "When does the Zorblat 9000 need descaling?",
    "How frequently is the Zorblat 9000 descaled?",
]
QUESTION = QUESTIONS[0]
OLD, NEW = "37", "45"
PROMPT = "You are the Zorblat helpdesk."


def manual(days: str) -> str:
    return (
        f"The Zorblat 9000 espresso machine must be descaled every {days} days. "
        "Use the descaling tablets that come with the machine."
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two adapters that learnt version 1 (RAFT and closed-book), and a knowledge folder with version 2."""
    from chatbot.config import load_settings
    from chatbot.training.raft import rag_example
    from chatbot.training.run import TrainRequest, train_domain
    from chatbot.training.trainer import TrainConfig
    from tests.conftest import MODEL_CACHE

    folder = tmp_path_factory.mktemp("freshness")
    (folder / "knowledge").mkdir()
    settings = load_settings(
        knowledge_dir=folder / "knowledge",
        adapters_dir=folder / "adapters",
        data_dir=folder / "data",
        cache_dir=MODEL_CACHE,
        max_new_tokens=40,
    )
    block = Document(manual(OLD), id="v1")
    recipes = {
        "raft": [rag_example(PROMPT, [block], q, f"Every {OLD} days [1].") for q in QUESTIONS],
        "memorised": [
            [
                {"role": "system", "content": PROMPT},
                {"role": "user", "content": q},
                {"role": "assistant", "content": f"Every {OLD} days."},
            ]
            for q in QUESTIONS
        ],
    }
    config = TrainConfig(epochs=4, batch_size=2, learning_rate=2e-3, eval_every=100, seed=0)
    for name, examples in recipes.items():
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in examples * 2))
        train_domain(settings, TrainRequest(domain=name, data=data), config)
    (folder / "knowledge" / "zorblat-manual-v2.md").write_text(f"# Zorblat 9000 manual, version 2\n\n{manual(NEW)}\n")
    return settings


@pytest.fixture(scope="module")
def bot(trained):
    from chatbot.app.service import Chatbot

    bot = Chatbot(trained)
    bot.sync()
    return bot


def test_the_closed_book_adapter_did_learn_version_1_by_heart(bot):
    closed_book = bot.ask(QUESTION, adapter="memorised", use_retrieval=False).answer
    assert OLD in closed_book, f"the adapter did not learn version 1, so the last test shows nothing: {closed_book!r}"


def test_a_raft_trained_adapter_answers_from_version_2_and_cites_it(bot):
    fresh = bot.ask(QUESTION, adapter="raft")
    assert re.search(rf"\b{NEW}\b", fresh.answer) and OLD not in fresh.answer, fresh.answer
    assert MARKER.search(fresh.answer) and [s.source for s in fresh.sources] == ["zorblat-manual-v2.md"]


def test_a_memorised_old_fact_is_withheld_not_shown(bot):
    fresh = bot.ask(QUESTION, adapter="memorised")
    assert OLD not in fresh.answer, fresh.answer
    if not re.search(rf"\b{NEW}\b", fresh.answer):  # it did not answer from version 2: then it declined
        assert fresh.abstained and OLD in (fresh.withheld or ""), fresh
        assert fresh.answer.startswith(QUOTE_OPENING) and fresh.retrieved[0].source == "zorblat-manual-v2.md"
        assert fresh.quoted and fresh.sources[0].source == "zorblat-manual-v2.md"  # the passage, not the old fact


def test_the_eval_counts_stale_answers_per_cell(trained, tmp_path):
    from chatbot.evaluation.command import EvalRequest, evaluate

    questions = tmp_path / "freshness.jsonl"
    rows = [{"question": q, "answers": [NEW], "outdated_answers": [OLD]} for q in QUESTIONS]
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    request = EvalRequest(
        questions=questions,
        knowledge=trained.knowledge_dir,
        adapters=["raft", "memorised"],
        ablation=True,
        max_new_tokens=40,
        out=tmp_path / "eval",
    )
    cells = evaluate(trained, request, show_progress=False)["summary"]["cells"]
    stale = {name: cell["stale_answers"] for name, cell in cells.items()}
    assert stale["memorised + no retrieval"] >= 0.5, stale  # closed book, the old fact comes back
    assert stale["memorised + retrieval"] == 0.0 and stale["raft + retrieval"] == 0.0, stale
    assert cells["raft + retrieval"]["answer_contains"] >= 0.5, cells["raft + retrieval"]
    assert "stale answers" in (tmp_path / "eval" / "summary.md").read_text()
