"""How often the evidence sentence holds the answer: SQuAD 2.0 questions, whole paragraphs as blocks.

    .venv/bin/python benchmarks/evidence_sentences.py --squad ../shared/data/squad2/dev-v2.0.json [--questions 150]

For each answerable question, the paragraphs of its articles are ranked by the embedding model
(the top 4 are the blocks, as retrieval would hand them over) and their sentences scored by
``chatbot.rag.evidence``. Prints, for the held-out set (the evaluation's last 3 articles) and a
tuning set (the 3 articles before them), the share of questions whose best sentence, and whose
best two, hold a gold answer, for the scorers: the embedding model's cosine, question-word
overlap, both, and both with the evidence scorer's LoRA merged into the embedding model (the
shipped scorer; ``chatbot/training/evidence_scorer.py``, trained on the other articles), beside
passage recall@4. The CPU's flags are printed too.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from run import cpu_flags  # benchmarks/run.py, next to this script


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def questions(path: Path, articles: list[dict], count: int, seed: int) -> tuple[list[str], list[tuple[str, list[str]]]]:
    paragraphs = [p["context"].strip() for article in articles for p in article["paragraphs"]]
    items = [
        (qa["question"].strip(), sorted({a["text"] for a in qa["answers"]}))
        for article in articles
        for p in article["paragraphs"]
        for qa in p["qas"]
        if not qa.get("is_impossible")
    ]
    random.Random(seed).shuffle(items)
    return paragraphs, items[:count]


def measure(paragraphs, items, embed, scorers) -> dict[str, float]:
    """``scorers``: name -> ((cosine, overlap) weights, the embed function scoring sentences); the
    paragraphs are always ranked by the plain embedding model, as retrieval ranks them."""
    from chatbot.rag import evidence

    vectors = embed(paragraphs)
    hits = {name: [0, 0] for name in scorers}
    recall = 0
    for question, answers in items:
        query = embed([question])[0]
        similarity = [sum(a * b for a, b in zip(query, vector, strict=True)) for vector in vectors]
        ranked = sorted(range(len(paragraphs)), key=lambda i: -similarity[i])
        blocks = [paragraphs[i] for i in ranked[:4]]
        gold = [normalise(answer) for answer in answers]
        recall += any(g in normalise(block) for g in gold for block in blocks)
        candidates = evidence.candidate_sentences(blocks)
        for name, (weights, scorer) in scorers.items():
            saved = (evidence.COSINE, evidence.OVERLAP)
            evidence.COSINE, evidence.OVERLAP = weights
            try:
                quotes = evidence.score_sentences(question, candidates, scorer)
            finally:
                evidence.COSINE, evidence.OVERLAP = saved
            for k in (1, 2):
                text = normalise(" ".join(quote.text for quote in quotes[:k]))
                hits[name][k - 1] += any(g in text for g in gold)
    figures = {"passage recall@4": recall / len(items)}
    for name, (one, two) in hits.items():
        figures[f"{name}: best 1"] = one / len(items)
        figures[f"{name}: best 2"] = two / len(items)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, required=True)
    parser.add_argument("--questions", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora", type=Path, default=None, help="the evidence scorer's LoRA (default: the shipped)")
    args = parser.parse_args()
    if args.lora is None:
        from chatbot.models.embeddings import EVIDENCE_LORA

        args.lora = EVIDENCE_LORA

    from chatbot.models.embeddings import LazyEmbeddings
    from chatbot.rag import evidence

    def cached(embedder: LazyEmbeddings):  # noqa: ANN202
        cache: dict[str, list[float]] = {}

        def embed(texts: list[str]) -> list[list[float]]:
            missing = [text for text in dict.fromkeys(texts) if text not in cache]
            if missing:
                cache.update(zip(missing, embedder.embed_documents(missing), strict=True))
            return [cache[text] for text in texts]

        return embed

    embed = cached(LazyEmbeddings("embedded", "cpu", "float32"))
    tuned = cached(LazyEmbeddings("embedded", "cpu", "float32", args.lora)) if args.lora.is_file() else None
    shipped = (evidence.COSINE, evidence.OVERLAP)
    scorers = {
        "cosine": ((1.0, 0.0), embed),
        "overlap": ((0.0, 1.0), embed),
        "cosine + overlap": (shipped, embed),
        "cosine + overlap, equal weights": ((1.0, 1.0), embed),
    }
    if tuned is not None:
        scorers["scorer LoRA: cosine"] = ((1.0, 0.0), tuned)
        scorers["scorer LoRA: cosine + overlap (shipped)"] = (shipped, tuned)
    data = json.loads(args.squad.read_text(encoding="utf-8"))["data"]
    sets = {"held-out (eval's last 3 articles)": data[-3:], "tuning (the 3 before)": data[-6:-3]}
    print(f"CPU flags: {cpu_flags()}")
    print(f"weights (cosine, overlap) shipped: {shipped}; {args.questions} answerable questions a set")
    for label, articles in sets.items():
        paragraphs, items = questions(args.squad, articles, args.questions, args.seed)
        print(f"\n{label}: {len(paragraphs)} paragraphs, {len(items)} questions")
        for name, value in measure(paragraphs, items, embed, scorers).items():
            print(f"  {name:<44} {value:.3f}")


if __name__ == "__main__":
    main()
