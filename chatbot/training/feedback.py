"""Training examples from what users said about answers (``chatbot train --from-feedback``).

Every example uses the chain's own prompt over blocks taken from the knowledge base *as it is
now*, so a fact that changed since the answer was given is trained from its new passage, never
from the old answer's memory. Per kind of feedback (the first that applies):

- **corrected** (a correction text): the correction is the target, cited to the blocks that
  hold its words; a correction that no passage supports is skipped (add the fact to the
  knowledge folder first: the adapter learns behaviour, retrieval supplies facts).
- **re-cite** ("wrong source" marks on some citations): the answer cited only to its other
  blocks; a sentence none of them supports is left out.
- **decline** (every citation marked wrong): the fixed decline over the blocks it was given.
- **approved** (thumbs up): the answer, re-cited to its blocks where they still exist unchanged.
- a thumbs down alone says what not to say, not what to say: skipped.

A fixed share of the usable records (chosen by a hash of the question, so re-running keeps the
split and a question asked twice stays on one side) is held out for ``chatbot eval``, never trained on.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_chroma import Chroma
from langchain_core.documents import Document

from chatbot.chats import FeedbackRecord
from chatbot.qa import QAItem
from chatbot.text import content_words, sentences, strip_markers, support
from chatbot.training.examples import Messages
from chatbot.training.raft import DECLINE, cite, rag_example

MIN_CORRECTION_SUPPORT = 0.5  # share of a correction sentence's content words its best block must hold
KINDS = ("corrected", "re-cite", "decline", "approved")


@dataclass
class FeedbackExamples:
    """The examples, how many each kind gave, why records were skipped, and the held-out questions."""

    examples: list[Messages] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    held_out: list[QAItem] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "feedback_examples": len(self.examples),
            "by_kind": {kind: self.kinds[kind] for kind in KINDS},
            "skipped": dict(self.skipped),
            "held_out": len(self.held_out),
        }


def kind_of(record: FeedbackRecord) -> str | None:
    """Which example a record makes (None: it teaches nothing to copy)."""
    feedback, answer = record.feedback, record.answer
    if feedback.correction:
        return "corrected"
    if feedback.wrong_sources:
        cited = {source.n for source in answer.sources}
        return "decline" if cited <= set(feedback.wrong_sources) else "re-cite"
    if feedback.verdict == "up":
        return "approved"
    return None


def held_out(record: FeedbackRecord, share: float) -> bool:
    """Whether a record belongs to the eval slice (stable across runs and databases).

    The slice is chosen by the question's words, so a question asked twice (in one conversation or
    by two people) is on one side only: the eval never scores a question the adapter trained on.
    """
    question = " ".join(record.answer.question.casefold().split())
    digest = hashlib.sha256(question.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def _chunks(store: Chroma, ids: Sequence[str | None]) -> list[Document]:
    wanted = [i for i in ids if i]
    return store.get_by_ids(wanted) if wanted else []


def _cited_to(text: str, blocks: Sequence[Document], allowed: set[str] | None = None, drop: bool = False) -> str | None:
    """``text`` without its old markers, each sentence cited to its best block.

    A sentence no block supports makes the whole text unusable (None), or with ``drop`` is left
    out (None when nothing is left).
    """
    pairs = [(n, doc.page_content) for n, doc in enumerate(blocks, 1) if allowed is None or doc.id in allowed]
    if not pairs:
        return None
    kept = []
    for sentence, _separator in sentences(strip_markers(text).strip()):
        claims = len(content_words(sentence)) >= 3
        if claims and max(support(sentence, block) for _n, block in pairs) < MIN_CORRECTION_SUPPORT:
            if not drop:
                return None
            continue
        kept.append(sentence.strip())
    plain = " ".join(part for part in kept if part)
    return cite(plain, pairs) if plain else None


def feedback_examples(
    store: Chroma,
    records: Sequence[FeedbackRecord],
    system_prompt: str,
    top_k: int = 4,
    held_out_share: float = 0.2,
    seed: int = 0,
) -> FeedbackExamples:
    """Chat examples (and held-out questions) from feedback records; see the module docstring."""
    rng = random.Random(seed)
    built = FeedbackExamples()
    for record in records:
        kind = kind_of(record)
        if kind is None:
            built.skipped["thumbs down without a correction"] += 1
            continue
        answer, feedback = record.answer, record.feedback
        if not answer.used_retrieval:
            built.skipped["answered without the knowledge base"] += 1
            continue
        wrong = set(feedback.wrong_sources)
        if kind in ("corrected", "approved") and held_out(record, held_out_share):
            target = feedback.correction if kind == "corrected" else strip_markers(answer.answer)
            files = sorted({s.source for s in answer.sources if s.n not in wrong})
            built.held_out.append(QAItem(answer.question, [target], files, id=f"feedback-{record.turn_id}"))
            continue
        then = _chunks(store, [s.chunk_id for s in answer.retrieved])  # the blocks it had, where unchanged
        if kind == "corrected":
            fresh = store.similarity_search(answer.question, k=top_k)
            kept = [doc for doc in then if doc.id in {s.chunk_id for s in answer.sources if s.n not in wrong}]
            blocks = list({doc.id: doc for doc in [*kept, *fresh]}.values())[:top_k]
            rng.shuffle(blocks)
            target = _cited_to(feedback.correction or "", blocks)
            if target is None:
                built.skipped["correction not found in any passage"] += 1
                continue
        elif len(then) < len(answer.retrieved):
            built.skipped["its passages changed or were deleted since"] += 1
            continue
        elif kind == "decline" or (kind == "approved" and answer.abstained):
            blocks, target = then, DECLINE
        else:
            by_number = {s.n: s.chunk_id for s in answer.sources}
            allowed = {chunk for n, chunk in by_number.items() if n not in wrong and chunk}
            blocks = then
            target = _cited_to(answer.answer, blocks, allowed, drop=kind == "re-cite")
            if target is None:
                built.skipped["answer not supported by its remaining passages"] += 1
                continue
        built.examples.append(rag_example(system_prompt, blocks, answer.question, target))
        built.kinds[kind] += 1
    return built
