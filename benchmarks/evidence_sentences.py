"""How often the evidence sentence holds the answer: SQuAD 2.0 questions, whole paragraphs as blocks.

    .venv/bin/python benchmarks/evidence_sentences.py --squad ../shared/data/squad2/dev-v2.0.json [--questions 150]

For each answerable question, the paragraphs of its articles are ranked by the embedding model
(the top 4 are the blocks, as retrieval would hand them over) and their sentences scored by
``chatbot.rag.evidence``. Prints, for the held-out set (the evaluation's last 3 articles) and a
tuning set (the 3 articles before them), the share of questions whose best sentence, and whose
best two, hold a gold answer, for the scorers: the embedding model's cosine, question-word
overlap, both, and both with the evidence scorer's LoRA merged into the embedding model (the
shipped scorer; ``chatbot/training/evidence_scorer.py``, trained on the other articles); and how
often the reply's quote holds it when the second sentence is quoted only while it scores within a
margin of the best (``chatbot.rag.evidence.shown_quotes``), with the sentences that costs. Beside
them, passage recall@4, and how well each scorer's best sentence score tells the answerable
questions from the unanswerable ones of the same articles (ROC AUC, as many unanswerable questions
as answerable). The CPU's flags are printed too.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from run import cpu_flags  # benchmarks/run.py, next to this script


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def questions(articles: list[dict], count: int, seed: int, answerable: bool = True) -> list[tuple[str, list[str]]]:
    items = [
        (qa["question"].strip(), sorted({a["text"] for a in qa["answers"]}))
        for article in articles
        for p in article["paragraphs"]
        for qa in p["qas"]
        if bool(qa.get("is_impossible")) != answerable
    ]
    random.Random(seed).shuffle(items)
    return items[:count]


def auc(positives: list[float], negatives: list[float]) -> float:
    """P(a random positive scores above a random negative), ties counting half."""
    if not positives or not negatives:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


MARGINS = (0.05, 0.1, 0.2)  # the second sentence is quoted when it scores within this of the best


def measure(paragraphs, items, unanswerable, embed, scorers) -> dict[str, float]:
    """``scorers``: name -> (question, candidates) -> quotes best first; the paragraphs are always
    ranked by the plain embedding model, as retrieval ranks them."""
    from chatbot.rag import evidence

    vectors = embed(paragraphs)

    def blocks_for(question: str) -> list[str]:
        query = embed([question])[0]
        similarity = [sum(a * b for a, b in zip(query, vector, strict=True)) for vector in vectors]
        ranked = sorted(range(len(paragraphs)), key=lambda i: -similarity[i])
        return [paragraphs[i] for i in ranked[:4]]

    hits = {name: [0, 0] for name in scorers}
    adaptive = {name: {margin: [0, 0] for margin in MARGINS} for name in scorers}
    best = {name: ([], []) for name in scorers}
    recall = 0
    for question, answers in items:
        blocks = blocks_for(question)
        gold = [normalise(answer) for answer in answers]
        recall += any(g in normalise(block) for g in gold for block in blocks)
        candidates = evidence.candidate_sentences(blocks)
        for name, scorer in scorers.items():
            quotes = scorer(question, candidates)
            best[name][0].append(quotes[0].score if quotes else 0.0)
            for k in (1, 2):
                text = normalise(" ".join(quote.text for quote in quotes[:k]))
                hits[name][k - 1] += any(g in text for g in gold)
            for margin in MARGINS:
                shown = evidence.shown_quotes(quotes, margin)
                adaptive[name][margin][0] += any(g in normalise(" ".join(q.text for q in shown)) for g in gold)
                adaptive[name][margin][1] += len(shown)
    for question, _ in unanswerable:
        candidates = evidence.candidate_sentences(blocks_for(question))
        for name, scorer in scorers.items():
            quotes = scorer(question, candidates)
            best[name][1].append(quotes[0].score if quotes else 0.0)
    figures = {"passage recall@4": recall / len(items)}
    for name, (one, two) in hits.items():
        figures[f"{name}: best 1"] = one / len(items)
        figures[f"{name}: best 2"] = two / len(items)
        for margin, (held, count) in adaptive[name].items():
            figures[f"{name}: 2nd within {margin} ({count / len(items):.2f} sentences)"] = held / len(items)
        figures[f"{name}: answerable AUC"] = auc(*best[name])
    return figures


def cached(embedder) -> Callable[[list[str]], list[list[float]]]:  # noqa: ANN001 - a LangChain Embeddings
    """``embedder.embed_documents``, each text embedded once."""
    cache: dict[str, list[float]] = {}

    def embed(texts: list[str]) -> list[list[float]]:
        missing = [text for text in dict.fromkeys(texts) if text not in cache]
        if missing:
            cache.update(zip(missing, embedder.embed_documents(missing), strict=True))
        return [cache[text] for text in texts]

    return embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, required=True)
    parser.add_argument("--questions", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora", type=Path, default=None, help="the evidence scorer's LoRA (default: the shipped)")
    args = parser.parse_args()
    from chatbot.models.embeddings import EVIDENCE_LORA, LazyEmbeddings
    from chatbot.rag import evidence

    args.lora = args.lora or EVIDENCE_LORA

    def weighted(weights: tuple[float, float], embed):  # noqa: ANN001, ANN202
        def score(question: str, candidates: list[tuple[int, str]]) -> list:
            saved = (evidence.COSINE, evidence.OVERLAP)
            evidence.COSINE, evidence.OVERLAP = weights
            try:
                return evidence.score_sentences(question, candidates, embed)
            finally:
                evidence.COSINE, evidence.OVERLAP = saved

        return score

    embed = cached(LazyEmbeddings("embedded", "cpu", "float32"))
    shipped = (evidence.COSINE, evidence.OVERLAP)
    scorers = {
        "cosine": weighted((1.0, 0.0), embed),
        "overlap": weighted((0.0, 1.0), embed),
        "cosine + 0.5 x overlap": weighted(shipped, embed),
    }
    if args.lora.is_file():
        tuned = cached(LazyEmbeddings("embedded", "cpu", "float32", args.lora))
        scorers["scorer LoRA: cosine + 0.5 x overlap (shipped)"] = weighted(shipped, tuned)
    data = json.loads(args.squad.read_text(encoding="utf-8"))["data"]
    sets = {"held-out (eval's last 3 articles)": data[-3:], "tuning (the 3 before)": data[-6:-3]}
    print(f"CPU flags: {cpu_flags()}")
    print(f"{args.questions} answerable questions a set, as many unanswerable for the AUC")
    for label, articles in sets.items():
        paragraphs = [p["context"].strip() for article in articles for p in article["paragraphs"]]
        items = questions(articles, args.questions, args.seed)
        unanswerable = questions(articles, args.questions, args.seed, answerable=False)
        print(f"\n{label}: {len(paragraphs)} paragraphs, {len(items)} questions")
        for name, value in measure(paragraphs, items, unanswerable, embed, scorers).items():
            print(f"  {name:<52} {value:.3f}")


if __name__ == "__main__":
    main()
