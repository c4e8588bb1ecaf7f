"""Feedback loop end to end: ask, give feedback as a reader would, train from it, compare on the held-out slice.

A simulated reader with the reference answers judges each answer of the base model over SQuAD 2.0
articles (``../shared/data/squad2``): thumbs up when it contains a reference answer, otherwise a
correction (the sentence of the gold paragraph that holds the answer), and a "wrong source" mark on
every cited block from another article. ``chatbot train --from-feedback`` then builds a new
adapter from that feedback, and ``chatbot eval`` compares base and new on the held-out feedback.

    .venv/bin/python benchmarks/feedback_loop.py --questions 30 --out feedback-loop
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run import cpu_flags  # noqa: E402
from chatbot.app.service import Chatbot  # noqa: E402
from chatbot.config import load_settings  # noqa: E402
from chatbot.evaluation.command import EvalRequest, evaluate  # noqa: E402
from chatbot.evaluation.datasets import read_squad  # noqa: E402
from chatbot.training.grounding import evidence_sentence  # noqa: E402
from chatbot.training.run import TrainRequest, train_domain  # noqa: E402
from chatbot.training.trainer import TrainConfig  # noqa: E402

SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad2" / "dev-v2.0.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--squad", type=Path, default=SQUAD)
    parser.add_argument("--out", type=Path, default=Path("feedback-loop"))
    parser.add_argument("--epochs", type=float, default=3.0)
    args = parser.parse_args()
    if not args.squad.is_file():
        sys.exit(f"{args.squad} not found (the shared data sets)")
    print(f"CPU flags: {cpu_flags()}", flush=True)
    knowledge = args.out / "knowledge"
    items = [item for item in read_squad(args.squad, knowledge, articles=3) if item.answerable][: args.questions]
    settings = load_settings(
        knowledge_dir=knowledge,
        data_dir=args.out / "data",
        adapters_dir=args.out / "adapters",
        cache_dir=Path(".chatbot/cache").resolve(),
        max_new_tokens=96,
    )
    bot = Chatbot(settings)
    bot.load()
    bot.sync()
    conversation = bot.chats.create("reader", title="feedback loop")
    verdicts = {"up": 0, "corrected": 0, "wrong_source": 0}
    started = time.perf_counter()
    for number, item in enumerate(items, 1):
        answer = bot.ask(item.question)
        _info, turn = bot.remember("reader", conversation.id, answer)
        gold_file = item.gold_sources[0]
        wrong = [source.n for source in answer.sources if source.source != gold_file]
        right = not answer.abstained and any(gold.lower() in answer.answer.lower() for gold in item.answers)
        if right:
            bot.chats.set_feedback("reader", turn.id, verdict="up", wrong_sources=wrong)
            verdicts["up"] += 1
        else:
            correction = evidence_sentence(item.gold_passages[0], item.answers[0]) or item.answers[0]
            bot.chats.set_feedback("reader", turn.id, verdict="down", correction=correction, wrong_sources=wrong)
            verdicts["corrected"] += 1
        verdicts["wrong_source"] += bool(wrong)
        print(f"[{number}/{len(items)}] {'up  ' if right else 'down'} {item.question[:70]}", flush=True)
    asked_s = time.perf_counter() - started

    started = time.perf_counter()
    request = TrainRequest(
        domain="wiki",
        from_feedback=True,
        feedback_adapter="base",
        min_feedback=10,
        display_name="Wiki reader",
        description="Trained from a reader's feedback on base answers.",
    )
    folder, result = train_domain(settings, request, TrainConfig(epochs=args.epochs, batch_size=4, seed=0))
    trained_s = time.perf_counter() - started
    record = json.loads((folder / "training.json").read_text())

    held_out = settings.data_dir / "training" / f"{folder.name}-heldout.jsonl"
    comparison = evaluate(
        settings,
        EvalRequest(questions=held_out, knowledge=knowledge, adapters=["base", folder.name], out=args.out / "eval"),
        show_progress=False,
    )
    cells = comparison["summary"]["cells"]
    print(
        json.dumps(
            {
                "cpu_flags": cpu_flags(),
                "questions": len(items),
                "verdicts": verdicts,
                "ask_seconds": round(asked_s, 1),
                "feedback": record["data"]["feedback"],
                "train_seconds": round(trained_s, 1),
                "train_metrics": {
                    k: record["metrics"][k] for k in ("steps", "validation_perplexity", "base_validation_perplexity")
                },
                "held_out": {
                    cell: {k: row[k] for k in ("questions", "answer_contains", "answer_f1", "citation_precision")}
                    for cell, row in cells.items()
                },
                "adapter": str(folder),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
