"""The evaluation metrics, each a small pure function (definitions in docs/evaluation.md)."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

from chatbot.text import support

_ARTICLES = re.compile(r"\b(a|an|the)\b")
PASSAGE_MATCH = 0.8  # share of a chunk's content words found in the gold passage for it to count


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces. Unicode
    punctuation goes too (SQuAD's script drops ASCII only): a quote's curly marks would otherwise
    hide a gold answer at its edge."""
    text = "".join(
        ch for ch in text.lower() if ch not in string.punctuation and not unicodedata.category(ch).startswith("P")
    )
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 between a prediction and one reference answer."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not predicted or not expected:
        return float(predicted == expected)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def best_f1(prediction: str, answers: Sequence[str]) -> float:
    return max((token_f1(prediction, answer) for answer in answers), default=0.0)


def contains_answer(prediction: str, answers: Sequence[str]) -> bool:
    """Normalised exact containment: some reference answer appears, normalised, in the prediction."""
    text = f" {normalize_answer(prediction)} "
    return any(normalize_answer(answer) and f" {normalize_answer(answer)} " in text for answer in answers)


def is_gold_chunk(text: str, source: str, gold_files: Sequence[str], gold_passages: Sequence[str]) -> bool:
    """A chunk is gold when it comes from a gold passage (if the item has passages) or else a gold file."""
    if gold_passages:
        return any(support(text, passage) >= PASSAGE_MATCH for passage in gold_passages)
    return source in gold_files


def first_hit_rank(hits: Sequence[bool]) -> int | None:
    """1-based rank of the first gold chunk, None when none was retrieved."""
    return next((rank for rank, hit in enumerate(hits, 1) if hit), None)


def recall_at_k(hits: Sequence[bool], k: int) -> float:
    """1.0 when a gold chunk is among the first ``k`` retrieved (one relevant unit per question)."""
    return float(any(hits[:k]))


def reciprocal_rank(hits: Sequence[bool]) -> float:
    rank = first_hit_rank(hits)
    return 1.0 / rank if rank else 0.0


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
