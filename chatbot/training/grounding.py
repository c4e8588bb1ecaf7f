"""Grounding examples from SQuAD 2.0: answer from the blocks, short answer first, cite, or decline.

The behaviour every domain needs (the facts come from the numbered blocks, each claim is cited,
a question the blocks do not answer is declined with one fixed sentence) is taught on a public
reading-comprehension set, mixed into a domain's own examples, so the domain's voice stays its
own. SQuAD 2.0's articles become a knowledge folder indexed like the user's, so the blocks of an
example are what the retriever really returns (same-article paragraphs are the hard
distractors). The eval's articles (the last ones of the file) are never read.

- an answerable question: the retrieved blocks with the block holding the answer among them;
  the target is the short answer, then the sentence that states it, both cited to that block;
- an unanswerable question (SQuAD 2.0 wrote them to look answerable from the same article):
  the retrieved blocks, target the decline;
- a share of answerable questions with their gold block removed: the decline too.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_chroma import Chroma
from langchain_core.documents import Document

from chatbot.qa import QAItem
from chatbot.text import sentences, support
from chatbot.training.examples import Messages
from chatbot.training.raft import DECLINE, rag_example

EVAL_ARTICLES = 3  # the last articles of a SQuAD file are the eval's (``chatbot eval --articles 3``)


@dataclass
class GroundingReport:
    """What the grounding examples are made of, for ``training.json``."""

    source: str = ""
    articles: int = 0
    questions: int = 0
    answered: int = 0
    declined_unanswerable: int = 0
    declined_without_gold: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def examples(self) -> int:
        return self.answered + self.declined_unanswerable + self.declined_without_gold

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "articles": self.articles,
            "questions": self.questions,
            "examples": self.examples,
            "answered": self.answered,
            "declined_unanswerable": self.declined_unanswerable,
            "declined_without_gold": self.declined_without_gold,
            "skipped": dict(self.skipped),
        }


def evidence_sentence(passage: str, answer: str) -> str | None:
    """The sentence of ``passage`` that contains ``answer`` (case-insensitive), or None."""
    wanted = answer.casefold()
    for sentence, _separator in sentences(passage):
        if wanted in sentence.casefold():
            return sentence.strip()
    return None


def short_first(answer: str, evidence: str, n: int) -> str:
    """The target of an answerable question: ``"<Answer> [n]. <evidence> [n]."``."""
    short = answer.strip().rstrip(".,;:")
    short = short[:1].upper() + short[1:]
    body = re.sub(r"[.!?]+$", "", evidence.strip())
    if body.casefold() == short.casefold():
        return f"{short} [{n}]."
    return f"{short} [{n}]. {body} [{n}]."


def _gold_block(chunks: Sequence[Document], evidence: str, answer: str) -> Document | None:
    """The chunk of the gold file that holds the evidence sentence (and the answer)."""
    holding = [doc for doc in chunks if answer.casefold() in doc.page_content.casefold()]
    if not holding:
        return None
    score, best = max(((support(evidence, doc.page_content), doc) for doc in holding), key=lambda pair: pair[0])
    return best if score >= 0.8 else None


def _file_chunks(store: Chroma, source: str) -> list[Document]:
    found = store.get(where={"source": source}, include=["documents", "metadatas"])
    return [
        Document(page_content=text, metadata=meta or {}, id=chunk_id)
        for chunk_id, text, meta in zip(found["ids"], found["documents"], found["metadatas"], strict=True)
    ]


def grounding_examples(
    store: Chroma,
    items: Sequence[QAItem],
    system_prompt: str,
    count: int,
    top_k: int = 4,
    *,
    unanswerable_share: float,
    without_gold_share: float,
    seed: int = 0,
) -> tuple[list[Messages], GroundingReport]:
    """Up to ``count`` examples over ``store`` (which indexed the items' articles); see the module docstring.

    ``unanswerable_share`` of the examples are unanswerable questions, ``without_gold_share`` are
    answerable ones with their gold block left out; both targets are the decline.
    """
    rng = random.Random(seed)
    answerable = [item for item in items if item.answerable and item.gold_passages]
    unanswerable = [item for item in items if not item.answerable]
    rng.shuffle(answerable)
    rng.shuffle(unanswerable)
    report = GroundingReport(questions=len(items))
    examples: list[Messages] = []
    for item in unanswerable[: round(count * unanswerable_share)]:
        blocks = store.similarity_search(item.question, k=top_k)
        examples.append(rag_example(system_prompt, blocks, item.question, DECLINE))
        report.declined_unanswerable += 1
    chunks_of: dict[str, list[Document]] = {}
    wanted = count - len(examples)
    without_gold = round(count * without_gold_share)
    for item in answerable:
        if report.answered + report.declined_without_gold >= wanted:
            break
        answer = min(item.answers, key=len)
        evidence = evidence_sentence(item.gold_passages[0], answer)
        if evidence is None:
            report.skipped["answer not inside one sentence"] += 1
            continue
        source = item.gold_sources[0]
        if source not in chunks_of:
            chunks_of[source] = _file_chunks(store, source)
        gold = _gold_block(chunks_of[source], evidence, answer)
        if gold is None:
            report.skipped["no block holds the evidence"] += 1
            continue
        distractors = [doc for doc in store.similarity_search(item.question, k=top_k + 2) if doc.id != gold.id]
        if report.declined_without_gold < without_gold:
            blocks = distractors[:top_k]
            if any(answer.casefold() in doc.page_content.casefold() for doc in blocks):
                continue  # another block states it too: not a decline example
            examples.append(rag_example(system_prompt, blocks, item.question, DECLINE))
            report.declined_without_gold += 1
            continue
        blocks = [gold, *distractors[: top_k - 1]]
        rng.shuffle(blocks)
        n = next(number for number, doc in enumerate(blocks, 1) if doc.id == gold.id)
        examples.append(rag_example(system_prompt, blocks, item.question, short_first(answer, evidence, n)))
        report.answered += 1
    rng.shuffle(examples)
    return examples, report


def squad_knowledge(squad: Path, folder: Path, held_out: int = EVAL_ARTICLES) -> tuple[list[QAItem], int]:
    """Every article of ``squad`` but the last ``held_out`` written to ``folder``; their questions and count."""
    from chatbot.evaluation.datasets import read_squad

    items = read_squad(squad, folder, articles=None, skip_last=held_out)
    articles = len({source for item in items for source in item.gold_sources})
    if not articles:
        raise ValueError(f"{squad} has no articles left after the eval's last {held_out}")
    return items, articles
