"""Feedback becomes training data: each kind of verdict gives its example over today's knowledge base."""

import json
import re
import time

import pytest

from chatbot.chats import ChatStore
from chatbot.rag.answer import Answer, SourceRef
from chatbot.text import MARKER
from chatbot.training.feedback import feedback_examples, held_out
from chatbot.training.raft import DECLINE

PROMPT = "You are a helpdesk."
QUESTION = "How do I refresh the knowledge base?"


def first_sentence(text: str) -> str:
    """A sentence of a block that is plain prose (no heading), to stand in for an answer copied from it."""
    for line in text.splitlines():
        line = line.strip()
        if len(line.split()) >= 8 and not line.startswith(("#", "|", "-", "`")):
            return line.split(". ")[0].rstrip(".") + "."
    raise AssertionError(f"no prose sentence in {text!r}")


@pytest.fixture
def kb(make_bot, user_guide):
    bot = make_bot()
    bot.sync()
    return bot


def answered(bot, question: str, cite: list[int], text: str | None = None) -> Answer:
    """An answer as the chain would record it: the retrieved blocks, some of them cited."""
    docs = bot.store.similarity_search(question, k=4)
    retrieved = [SourceRef.from_document(n, doc) for n, doc in enumerate(docs, 1)]
    if text is None:
        text = " ".join(f"{first_sentence(docs[n - 1].page_content)[:-1]} [{n}]." for n in cite)
    return Answer(question, text, "support", sources=[r for r in retrieved if r.n in cite], retrieved=retrieved)


def saved(bot, answer: Answer, **feedback) -> None:
    conversation = bot.chats.create("ann")
    turn = bot.remember("ann", conversation.id, answer)[1]
    bot.chats.set_feedback("ann", turn.id, **feedback)


def cited_blocks(example) -> tuple[str, dict[int, str]]:
    """The target answer and the numbered blocks of the prompt it cites."""
    prompt, target = example[-2]["content"], example[-1]["content"]
    cited = {int(n) for match in MARKER.finditer(target) for n in match.group(1).split(",")}
    blocks = dict(re.findall(r"^\[(\d+)\] (.*?)(?=\n\n\[\d+\] |\n\nQuestion: )", prompt, re.S | re.M))
    return target, {n: blocks[str(n)] for n in cited}


def test_each_kind_of_feedback_gives_its_example_and_the_rest_are_skipped_with_a_reason(kb):
    approved = answered(kb, QUESTION, cite=[1])
    saved(kb, approved, verdict="up")
    two = answered(kb, "Which file types can I index?", cite=[1, 2])
    saved(kb, two, wrong_sources=[2])  # re-cite to block 1 only
    saved(kb, answered(kb, "How do I switch the domain adapter?", cite=[1]), wrong_sources=[1])  # decline
    saved(kb, answered(kb, "Can I use a GGUF model?", cite=[1]), verdict="down")  # nothing to copy
    sentence = first_sentence(kb.store.similarity_search("How do I delete a document?", k=1)[0].page_content)
    saved(kb, answered(kb, "How do I delete a document?", cite=[1], text="Wrong [1]."), correction=sentence)
    invented = "The Zorblat 9000 must be descaled every 37 days by a certified technician."
    saved(kb, answered(kb, "How often is the Zorblat descaled?", cite=[1]), correction=invented)

    records = list(kb.chats.feedback())
    built = feedback_examples(kb.store, records, PROMPT, held_out_share=0.0)
    assert dict(built.kinds) == {"approved": 1, "re-cite": 1, "decline": 1, "corrected": 1}
    assert dict(built.skipped) == {"thumbs down without a correction": 1, "correction not found in any passage": 1}
    by_question = {example[-2]["content"].rsplit("\n", 1)[-1]: example for example in built.examples}
    assert all(example[0]["content"].startswith(PROMPT) for example in built.examples)

    target, blocks = cited_blocks(next(e for q, e in by_question.items() if QUESTION in q))
    assert MARKER.sub("", target).split() == MARKER.sub("", approved.answer).split()  # the same words
    assert len(blocks) == 1 and first_sentence(blocks.popitem()[1])[:-1] in target  # cited to the block it came from

    target, blocks = cited_blocks(next(e for q, e in by_question.items() if "file types" in q))
    assert len(blocks) == 1  # the block marked wrong is cited no more
    (block,) = blocks.values()
    kept = two.answer.split(" [1]")[0]
    assert kept in " ".join(block.split()) and target == f"{kept} [1]."  # the sentence cited to [2] is left out

    assert next(e for q, e in by_question.items() if "domain adapter" in q)[-1]["content"] == DECLINE
    target, blocks = cited_blocks(next(e for q, e in by_question.items() if "delete a document" in q))
    assert target.startswith(sentence[:-1]) and blocks  # the correction is the target, cited


def test_a_passage_changed_since_the_answer_is_not_trained_from(kb, user_guide):
    answer = answered(kb, QUESTION, cite=[1])
    saved(kb, answer, verdict="up")
    path = user_guide / answer.sources[0].source
    assert "knowledge base" in answer.sources[0].snippet
    path.write_text(path.read_text().replace("knowledge base", "document store"))  # the cited passage changes
    kb.sync()
    built = feedback_examples(kb.store, list(kb.chats.feedback()), PROMPT, held_out_share=0.0)
    assert built.examples == [] and dict(built.skipped) == {"its passages changed or were deleted since": 1}


def test_held_out_feedback_is_never_trained_on(kb):
    for question in (QUESTION, "Which file types can I index?", "How do I switch the domain adapter?"):
        saved(kb, answered(kb, question, cite=[1]), verdict="up")
    records = list(kb.chats.feedback())
    everything = feedback_examples(kb.store, records, PROMPT, held_out_share=1.0)
    assert everything.examples == [] and len(everything.held_out) == 3
    assert {item.question for item in everything.held_out} == {r.answer.question for r in records}
    assert all(item.answers and item.gold_sources for item in everything.held_out)
    again = feedback_examples(kb.store, records, PROMPT, held_out_share=0.5)
    assert again.held_out == feedback_examples(kb.store, records, PROMPT, held_out_share=0.5).held_out  # stable
    assert len(again.examples) + len(again.held_out) == 3


def test_train_from_feedback_refuses_too_little_and_lands_beside_the_old_adapter(kb, make_settings, tmp_path):
    from chatbot.training.run import TrainRequest, train_domain
    from chatbot.training.trainer import TrainConfig

    settings = make_settings(adapters_dir=tmp_path / "adapters")
    for question in (QUESTION, "Which file types can I index?", "How do I switch the domain adapter?"):
        saved(kb, answered(kb, question, cite=[1]), verdict="up")
    saved(kb, answered(kb, "Can I use a GGUF model?", cite=[1]), verdict="down")
    request = TrainRequest(domain="support", from_feedback=True, min_feedback=50)
    with pytest.raises(ValueError, match=r"only \d training examples from 4 answers with feedback on 'support'.*"):
        train_domain(settings, request, TrainConfig(max_steps=1))

    request = TrainRequest(domain="support", from_feedback=True, min_feedback=1)
    folder, _ = train_domain(settings, request, TrainConfig(max_steps=1, batch_size=1))
    assert folder.name == f"support-{time.strftime('%Y-%m-%d')}"
    record = json.loads((folder / "training.json").read_text())
    feedback = record["data"]["feedback"]
    assert record["data"]["recipe"] == "feedback" and feedback["adapter"] == "support"
    assert feedback["by_kind"]["approved"] + feedback["held_out"] == 3
    assert feedback["skipped"] == {"thumbs down without a correction": 1}
    held_out = settings.data_dir / "training" / f"{folder.name}-heldout.jsonl"
    assert len(held_out.read_text().splitlines()) == feedback["held_out"]
    again, _ = train_domain(settings, request, TrainConfig(max_steps=1, batch_size=1))
    assert again.name == f"{folder.name}-2" and folder.is_dir()  # the earlier one is kept
    assert ChatStore(settings.data_dir / "chats.sqlite").feedback_counts()["support"]["up"] == 3


def test_the_train_command_compares_old_and_new_on_the_held_out_feedback(kb, make_settings, tmp_path):
    from typer.testing import CliRunner

    from chatbot.cli import app

    settings = make_settings(adapters_dir=tmp_path / "adapters")
    for question in (QUESTION, "Which file types can I index?"):
        saved(kb, answered(kb, question, cite=[1]), verdict="up")  # held out (all of them, below)
    saved(kb, answered(kb, "How do I switch the domain adapter?", cite=[1]), wrong_sources=[1])  # trained on
    env = {
        "CHATBOT_KNOWLEDGE_DIR": str(settings.knowledge_dir),
        "CHATBOT_DATA_DIR": str(settings.data_dir),
        "CHATBOT_ADAPTERS_DIR": str(settings.adapters_dir),
        "CHATBOT_CACHE_DIR": str(settings.models_cache_dir),
        "CHATBOT_MAX_NEW_TOKENS": "24",
    }
    args = ["train", "--domain", "support", "--from-feedback", "--held-out", "1.0", "--min-feedback", "1"]
    result = CliRunner().invoke(app, [*args, "--max-steps", "1", "--batch-size", "1", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["folder"].endswith(f"support-{time.strftime('%Y-%m-%d')}")
    cells = report["held_out_eval"]["summary"]["cells"]
    (cell,) = cells.values()  # no older "support" to compare with here: the new adapter alone
    assert cell["questions"] == 2


def test_a_question_asked_twice_is_on_one_side_of_the_split(kb):
    for question in (QUESTION, QUESTION, f"  {QUESTION.upper()} "):
        saved(kb, answered(kb, question, cite=[1]), verdict="up")
    records = list(kb.chats.feedback())
    assert len({(r.conversation_id, r.turn_id) for r in records}) == 3
    sides = [{held_out(record, share / 1000) for record in records} for share in range(1, 1000)]
    assert all(len(side) == 1 for side in sides)  # never trained on in one record and scored in another
    assert {True, False} == set().union(*sides)  # the share does move it
