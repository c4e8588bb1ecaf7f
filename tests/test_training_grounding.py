"""Grounding examples from SQuAD 2.0: the short answer first, cited to the right block; declines; no eval article."""

import json
import re

import pytest

from chatbot.text import support
from chatbot.training.grounding import evidence_sentence, grounding_examples, short_first, squad_knowledge
from chatbot.training.raft import DECLINE

PROMPT = "You are a careful reader."
TOWNS = [
    ("Brelmont", "1742", "the river Oska", "copper", "Aldis Varrow", "granite"),
    ("Castrell", "1815", "the river Tamel", "wool", "Mira Selk", "limestone"),
    ("Dunhaven", "1903", "the river Pell", "glass", "Oren Quill", "basalt"),
    ("Quibblestone", "1688", "the river Zarn", "salt", "Ivo Penrick", "marble"),  # the last three: the eval's
    ("Rookfall", "1777", "the river Vey", "timber", "Lena Dask", "slate"),
    ("Sable Cross", "1850", "the river Ume", "iron", "Tobin Hale", "sandstone"),
]
EVAL_TOWNS = [town[0] for town in TOWNS[-3:]]


def squad_file(path):
    """Four small articles in SQuAD 2.0's layout, each with answerable and unanswerable questions."""
    data = []
    for town, year, river, trade, founder, stone in TOWNS:
        paragraphs = [
            (
                f"{town} is a market town on {river}. It was founded in {year} by {founder}, a surveyor "
                f"from the coast. The first houses stood on the north bank.",
                [(f"When was {town} founded?", year), (f"Who founded {town}?", founder)],
                [f"When was {town} abandoned?", f"Who destroyed {town}?"],
            ),
            (
                f"The economy of {town} grew on the {trade} trade. Merchants from {town} shipped {trade} "
                f"down {river} every spring, and the guild hall still keeps their ledgers.",
                [(f"What trade made {town} rich?", trade), (f"Which river did {town} ship goods on?", river)],
                [f"What trade did {town} ban?"],
            ),
            (
                f"The bridge of {town} was built of {stone} after a flood. {founder} paid for the bridge "
                f"with money from the {trade} merchants, and it still carries the road to the coast.",
                [
                    (f"What is the bridge of {town} made of?", stone),
                    (f"Why was the bridge of {town} built?", "after a flood"),
                ],
                [f"Who designed the bridge of {town}?"],
            ),
        ]
        data.append(
            {
                "title": town,
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {"id": f"{town}-a{i}", "question": q, "answers": [{"text": a, "answer_start": 0}]}
                            for i, (q, a) in enumerate(answerable)
                        ]
                        + [
                            {"id": f"{town}-u{i}", "question": q, "answers": [], "is_impossible": True}
                            for i, q in enumerate(unanswerable)
                        ],
                    }
                    for context, answerable, unanswerable in paragraphs
                ],
            }
        )
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path


def blocks_of(prompt: str) -> dict[int, str]:
    return {
        int(n): text for n, text in re.findall(r"^\[(\d+)\] (.*?)(?=\n\n\[\d+\] |\n\nQuestion: )", prompt, re.S | re.M)
    }


@pytest.fixture
def grounded(tmp_path, make_bot):
    items, articles = squad_knowledge(squad_file(tmp_path / "squad.json"), tmp_path / "squad-kb")
    bot = make_bot(knowledge_dir=tmp_path / "squad-kb", top_k=3, chunk_size=60, chunk_overlap=0)
    bot.sync()
    return bot, items, articles


def test_the_short_answer_comes_first_and_both_sentences_cite_the_block():
    evidence = evidence_sentence("It rains. Brelmont was founded in 1742 by Aldis Varrow. It is small.", "1742")
    assert evidence == "Brelmont was founded in 1742 by Aldis Varrow."
    assert short_first("1742", evidence, 2) == "1742 [2]. Brelmont was founded in 1742 by Aldis Varrow [2]."
    assert short_first("copper.", "Copper", 1) == "Copper [1]."
    assert evidence_sentence("Nothing here.", "1742") is None


def test_the_eval_articles_are_never_read(grounded, tmp_path):
    bot, items, articles = grounded
    assert articles == 3 and sorted(p.name for p in (tmp_path / "squad-kb").iterdir()) == [
        "Brelmont.md",
        "Castrell.md",
        "Dunhaven.md",
    ]
    assert not any(town in item.question for item in items for town in EVAL_TOWNS)


def test_examples_cite_the_block_that_holds_the_answer_and_decline_otherwise(grounded):
    bot, items, _ = grounded
    by_question = {item.question: item for item in items}
    examples, report = grounding_examples(
        bot.store, items, PROMPT, count=16, top_k=3, unanswerable_share=0.25, without_gold_share=0.125
    )
    assert len(examples) == report.examples == 16
    assert report.declined_unanswerable == 4 and report.declined_without_gold == 2 and report.answered == 10
    seen = {"answered": 0, "unanswerable": 0, "without gold": 0}
    for example in examples:
        assert [m["role"] for m in example] == ["system", "user", "assistant"]
        assert example[0]["content"].startswith(PROMPT)
        question = example[1]["content"].rsplit("Question: ", 1)[-1].strip()
        item, target, blocks = by_question[question], example[2]["content"], blocks_of(example[1]["content"])
        assert len(blocks) == 3 and not any(town in example[1]["content"] for town in EVAL_TOWNS)
        if not item.answerable:
            assert target == DECLINE
            seen["unanswerable"] += 1
        elif target == DECLINE:  # its gold block was left out, and no other block states the answer
            assert not any(item.answers[0].casefold() in block.casefold() for block in blocks.values())
            seen["without gold"] += 1
        else:
            short, n = re.match(r"^(.+?) \[(\d)\]\. ", target).groups()
            assert short.casefold() == item.answers[0].casefold()
            evidence = evidence_sentence(item.gold_passages[0], item.answers[0])
            assert target.endswith(f" [{n}].") and target.count(f"[{n}]") == 2
            assert item.answers[0] in blocks[int(n)] and support(evidence, blocks[int(n)]) >= 0.8  # the right block
            seen["answered"] += 1
    assert seen == {"answered": 10, "unanswerable": 4, "without gold": 2}


def test_train_adds_grounding_and_records_the_recipe(make_settings, tmp_path):
    from chatbot.training.run import TrainRequest, train_domain
    from chatbot.training.trainer import TrainConfig

    settings = make_settings(adapters_dir=tmp_path / "adapters")
    squad = squad_file(tmp_path / "squad.json")
    request = TrainRequest(
        domain="reader", grounding=squad, grounding_examples=8, grounding_declines=0.5, system_prompt=PROMPT
    )
    folder, _ = train_domain(settings, request, TrainConfig(max_steps=1, batch_size=2, eval_every=1))
    data = json.loads((folder / "training.json").read_text())["data"]
    assert data["recipe"] == "grounding" and data["grounding"]["examples"] == 8
    assert data["grounding"]["articles"] == 3 and data["grounding"]["source"] == "squad.json"  # 6 less the eval's 3
    # half decline: four fifths of those unanswerable questions, one fifth answerable ones without their block
    assert (data["grounding"]["declined_unanswerable"], data["grounding"]["declined_without_gold"]) == (3, 1)
    saved = (settings.data_dir / "training" / "reader-examples.jsonl").read_text().splitlines()
    assert len(saved) == 8 and all(json.loads(line)["messages"][0]["content"].startswith(PROMPT) for line in saved)
