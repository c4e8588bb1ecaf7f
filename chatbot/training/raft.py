"""RAFT-style examples: questions answered over retrieved context that mixes gold and distractors.

For each question the prompt is exactly the chain's: the domain system prompt, the numbered
context blocks and the question. The blocks are the retriever's top-k with the gold chunk(s)
placed among them; in a share of examples only distractors are given and the target is the
decline. The target answer carries ``[n]`` markers of the gold blocks, so the adapter learns to
use and cite the context rather than to memorise facts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_chroma import Chroma
from langchain_core.documents import Document

from chatbot.qa import QAItem
from chatbot.rag.prompting import RAG_PROMPT, format_blocks
from chatbot.text import MIN_CONTENT_WORDS, content_words, sentences, support
from chatbot.training.examples import Messages

DECLINE = "I don't know. The context blocks do not answer this question."


@dataclass
class RaftReport:
    """How the examples were built; ``skipped`` maps a question to the reason."""

    examples: int = 0
    with_gold: int = 0
    distractors_only: int = 0
    skipped: dict[str, str] | None = None


def cite(answer: str, gold: Sequence[tuple[int, str]]) -> str:
    """Append to each sentence of ``answer`` the marker of the gold block that supports it best."""
    out = []
    for sentence, separator in sentences(answer):
        text = sentence.rstrip()
        if len(content_words(text)) >= MIN_CONTENT_WORDS and text[-1:] != ":":
            number = max(gold, key=lambda pair: support(text, pair[1]))[0]
            tail = text[-1] if text[-1] in ".!?" else ""
            text = f"{text[:-1] if tail else text} [{number}]{tail}"
        out.append(text + sentence[len(sentence.rstrip()) :] + separator)
    return "".join(out).strip()


def gold_chunks(store: Chroma, item: QAItem, files: Sequence[str], per_file: int = 1) -> list[Document]:
    """The chunk of each gold file closest to the reference answer (plus question)."""
    query = f"{item.question}\n{item.answers[0]}"
    chunks = []
    for source in files:
        chunks.extend(store.similarity_search(query, k=per_file, filter={"source": source}))
    return chunks


def rag_example(system_prompt: str, blocks: Sequence[Document], question: str, target: str) -> Messages:
    """The chain's own prompt for these blocks, followed by the target answer."""
    prompt = RAG_PROMPT.format_messages(system_prompt=system_prompt, context=format_blocks(blocks), question=question)
    roles = {"system": "system", "human": "user"}
    messages = [{"role": roles[m.type], "content": str(m.content)} for m in prompt]
    return [*messages, {"role": "assistant", "content": target}]


def build_raft_examples(
    store: Chroma,
    items: Sequence[QAItem],
    indexed_files: Sequence[str],
    system_prompt: str,
    top_k: int = 4,
    distractor_only_share: float = 0.2,
    seed: int = 0,
) -> tuple[list[Messages], RaftReport]:
    """Chat examples for :func:`chatbot.training.trainer.train_adapter`; see the module docstring."""
    rng = random.Random(seed)
    report = RaftReport(skipped={})
    examples: list[Messages] = []
    for item in items:
        if not item.answerable:  # an unanswerable question teaches the decline over what retrieval finds
            blocks = store.similarity_search(item.question, k=top_k)
            examples.append(rag_example(system_prompt, blocks, item.question, DECLINE))
            report.distractors_only += 1
            continue
        files = item.gold_files(indexed_files)
        if not files:
            report.skipped[item.question] = f"gold source {', '.join(item.gold_sources)} is not in the knowledge base"
            continue
        gold = gold_chunks(store, item, files)[:top_k]
        gold_ids = {doc.id for doc in gold}
        distractors = [
            doc
            for doc in store.similarity_search(item.question, k=top_k * 3)
            if doc.id not in gold_ids and doc.metadata.get("source") not in files
        ]
        if rng.random() < distractor_only_share and len(distractors) >= top_k:
            blocks, target = distractors[:top_k], DECLINE
            report.distractors_only += 1
        else:
            blocks = gold + distractors[: top_k - len(gold)]
            rng.shuffle(blocks)
            numbered = [(n, doc.page_content) for n, doc in enumerate(blocks, 1) if doc.id in gold_ids]
            target = cite(item.answers[0], numbered)
            report.with_gold += 1
        examples.append(rag_example(system_prompt, blocks, item.question, target))
    report.examples = len(examples)
    return examples, report
