"""The sentences of the retrieved passages that best answer a question: the evidence every reply shows.

The embedded model cannot be trusted to say *when* a passage answers, but retrieval usually finds
the passage, so the reply carries it: the sentence that scores highest is every answer's
``evidence``, and a declined answer quotes it verbatim, with its block number, instead of a bare
"I don't know" (:meth:`chatbot.rag.chain.RagChain._quote`).

A sentence's score is the cosine between the question's and the sentence's embeddings (the
retrieval model's own) plus half the share of the question's content words it holds. Measured in
docs/evaluation.md ("Evidence sentences"): the kind of thing asked for (a year for "when"), the
block's rank, idf-weighted or stemmed overlap and the previous sentence's score added nothing
beyond noise on the tuning set, so they are not used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatbot.text import content_words, sentences, strip_markers

Embed = Callable[[list[str]], list[list[float]]]  # texts -> normalised vectors (embed_documents)

MIN_CHARS, MAX_CHARS = 20, 400  # a quote is a sentence, never a heading or a whole block
LABEL_WORDS = 8  # an unpunctuated line shorter than this is a heading or label, not a sentence
MAX_SENTENCES = 60  # per question: the first sentences of the blocks in rank order, bounded
COSINE, OVERLAP = 1.0, 0.5
SECOND_MARGIN = 0.1  # a second sentence is quoted when it scores this close to the best (docs/evaluation.md)


@dataclass(frozen=True)
class Quote:
    """One evidence sentence: its text as it stands in block ``n`` (1-based), and its score."""

    n: int
    text: str
    score: float


WRAPPED_LINE = 50  # a line at least this long, not ending a sentence, was wrapped (a heading is shorter)
_NEW_BLOCK = re.compile(r"\s*(?:[#>|*+-]\s|\d+[.)]\s)")  # a heading, list item, table row or quote starts


def unwrap(text: str) -> str:
    """``text`` with its paragraphs' hard line breaks made spaces, so a sentence is never cut at one.

    A break is joined when the line before it is long (a wrapped paragraph's lines are; a heading
    or a short label is not) and the next line starts no heading, list item or table row.
    """
    lines = text.split("\n")
    out = [lines[0]]
    for line in lines[1:]:
        previous = out[-1].rstrip()
        if line.strip() and len(previous) >= WRAPPED_LINE and not _NEW_BLOCK.match(line):
            out[-1] = previous + " " + line.strip()
        else:
            out.append(line)
    return "\n".join(out)


def quotable(text: str) -> bool:
    """Whether ``text`` can be quoted: a sentence of bounded length with two content words, never a
    question (a FAQ's heading restates what was asked) nor a short label without a full stop."""
    if not MIN_CHARS <= len(text) <= MAX_CHARS or len(content_words(text)) < 2 or text.endswith("?"):
        return False
    return text.endswith((".", "!", ")", "\u201d", '"', ":", ";")) or len(text.split()) >= LABEL_WORDS


def candidate_sentences(blocks: Sequence[str]) -> list[tuple[int, str]]:
    """(block number, sentence) of every quotable sentence, blocks in rank order, at most ``MAX_SENTENCES``."""
    found: list[tuple[int, str]] = []
    for number, block in enumerate(blocks, 1):
        for sentence, _ in sentences(unwrap(block)):
            text = " ".join(strip_markers(sentence).split()).lstrip("#>-*| ").strip()
            if quotable(text):
                found.append((number, text))
                if len(found) >= MAX_SENTENCES:
                    return found
    return found


def score_sentences(question: str, candidates: list[tuple[int, str]], embed: Embed) -> list[Quote]:
    """Every candidate scored, best first."""
    if not candidates:
        return []
    vectors = embed([question, *(text for _, text in candidates)])
    asked = content_words(question)
    scored = []
    for (number, text), vector in zip(candidates, vectors[1:], strict=True):
        cosine = sum(a * b for a, b in zip(vectors[0], vector, strict=True))
        overlap = len(asked & content_words(text)) / len(asked) if asked else 0.0
        score = COSINE * cosine + OVERLAP * overlap
        scored.append(Quote(number, text, round(score, 4)))
    return sorted(scored, key=lambda quote: quote.score, reverse=True)


def best_quotes(question: str, blocks: Sequence[str], embed: Embed, count: int = 1) -> list[Quote]:
    """The ``count`` best evidence sentences of ``blocks`` for ``question`` (none without a candidate)."""
    return score_sentences(question, candidate_sentences(blocks), embed)[:count]


def shown_quotes(ranked: Sequence[Quote], margin: float = SECOND_MARGIN) -> list[Quote]:
    """What a reply quotes from ``ranked`` (best first): the best sentence, and the second too when
    it scores within ``margin`` of it (the picker cannot tell them apart; 0: never), best first
    they were ranked."""
    shown = list(ranked[:1])
    if margin > 0 and len(ranked) > 1 and ranked[0].score - ranked[1].score <= margin:
        shown.append(ranked[1])
    return shown
