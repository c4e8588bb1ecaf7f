"""Run the questions through each ablation cell and score every answer."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatbot.evaluation.metrics import (
    best_f1,
    contains_answer,
    first_hit_rank,
    is_gold_chunk,
    mean,
    recall_at_k,
    reciprocal_rank,
)
from chatbot.knowledge.chunking import top_folder
from chatbot.qa import QAItem
from chatbot.rag.chain import CONTEXT_DUMP, is_decline
from chatbot.rag.conversation import Turn
from chatbot.rag.vacuous import repeats_earlier
from chatbot.text import strip_markers

if TYPE_CHECKING:
    from chatbot.app.service import Chatbot

RETRIEVAL_DEPTH = 10  # chunks fetched for recall@k and MRR, beyond the answer's top_k


@dataclass(frozen=True)
class Cell:
    """One ablation cell: an adapter, with or without retrieval."""

    adapter: str
    use_retrieval: bool

    @property
    def name(self) -> str:
        return f"{self.adapter} + {'retrieval' if self.use_retrieval else 'no retrieval'}"


def cells(adapters: Sequence[str], ablation: bool) -> list[Cell]:
    """(adapter x retrieval on/off) with ``ablation``, else every adapter with retrieval."""
    return [Cell(a, r) for a in adapters for r in ((False, True) if ablation else (True,))]


def retrieval_record(
    bot: Chatbot, item: QAItem, scope: dict | None, files: Sequence[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Where the first gold chunk ranks among the ``RETRIEVAL_DEPTH`` best chunks, and their texts by id.

    The answer's ``top_k`` blocks are the first of these, so their texts serve the citation scoring.
    """
    documents = bot.chain.retriever.invoke(item.question, k=RETRIEVAL_DEPTH, **({"filter": scope} if scope else {}))
    gold_files = item.gold_files(files)
    hits = [
        is_gold_chunk(doc.page_content, str(doc.metadata.get("source")), gold_files, item.gold_passages)
        for doc in documents
    ]
    chunks = {str(doc.metadata.get("chunk_id")): doc.page_content for doc in documents}
    record = {
        "hits": hits,
        "first_gold_rank": first_hit_rank(hits),
        "gold_files": gold_files,
        "sources": [str(doc.metadata.get("source")) for doc in documents],
        "scores": [round(float(doc.metadata.get("score", 0.0)), 4) for doc in documents],  # what the floor saw
    }
    return record, chunks


def score_answer(
    bot: Chatbot,
    item: QAItem,
    cell: Cell,
    files: Sequence[str],
    chunks: dict[str, str],
    history: Sequence[Turn] = (),
) -> dict:
    """Ask one question in one cell (after ``history``, the earlier turns of its conversation); the
    record holds the answer and every per-question metric."""
    started = time.perf_counter()
    answer = bot.ask(
        item.question, adapter=cell.adapter, use_retrieval=cell.use_retrieval, history=history, temperature=0.0
    )
    seconds = time.perf_counter() - started
    gold_files = item.gold_files(files)
    citations = [
        {
            "n": source.n,
            "source": source.source,
            "cited_by": source.cited_by,
            "supported": source.supported,
            "gold": is_gold_chunk(
                chunks.get(source.chunk_id or "", source.snippet), source.source, gold_files, item.gold_passages
            ),
        }
        for source in answer.sources
        if source.cited_by != "quote"  # a declined answer's quote is the app's, not a citation the model made
    ]
    declined = answer.abstained or is_decline(answer.answer)
    model_answer = "" if answer.quoted else answer.answer  # a quote is the passage's text, not the model's
    shown_gold = (not declined or answer.quoted) and any(  # the answer or quote cites a gold block
        is_gold_chunk(chunks.get(source.chunk_id or "", source.snippet), source.source, gold_files, item.gold_passages)
        for source in answer.sources
    )
    gold_in_blocks = any(
        is_gold_chunk(chunks.get(block.chunk_id or "", block.snippet), block.source, gold_files, item.gold_passages)
        for block in answer.retrieved
    )
    return {
        "id": item.id,
        "cell": cell.name,
        "adapter": cell.adapter,
        "use_retrieval": cell.use_retrieval,
        "question": item.question,
        "answerable": item.answerable,
        "gold_answers": item.answers,
        "answer": answer.answer,
        "declined": declined,
        "decline_reason": answer.decline_reason,
        "withheld": answer.withheld,
        "context_dump": answer.decline_reason == CONTEXT_DUMP,
        "f1": best_f1(model_answer, item.answers) if item.answerable else None,
        "contains": contains_answer(model_answer, item.answers) if item.answerable else None,
        "quoted": answer.quoted,
        "reply": answer.reply,  # as shown: the answer with its evidence line, or the quote instead
        "gold_to_user": contains_answer(answer.reply, item.answers) if item.answerable else None,
        "gold_in_answer_or_quote": contains_answer(answer.answer, item.answers) if item.answerable else None,
        "gold_passage_shown": shown_gold if item.answerable and (gold_files or item.gold_passages) else None,
        "stale": contains_answer(answer.answer, item.outdated) if item.outdated else None,
        "retrieved": [source.source for source in answer.retrieved],
        "citations": citations,
        "seconds": round(seconds, 3),
        "completion_tokens": answer.usage.get("completion_tokens", 0),
        "gold_in_blocks": gold_in_blocks,  # a block the answer was given holds the gold passage
        "answerability": answer.answerability,
        "signals": answer.signals,
        "conversation": item.conversation or None,
        "turn": len(history),
        "search_query": answer.search_query,
        "repeated": not declined and repeats_earlier_reply(answer.answer, item.question, history),
    }


REPEAT_OVERLAP = 0.6  # looser than the chain's own check (rag/vacuous.py, 0.9): the report sees what it lets by


def repeats_earlier_reply(reply: str, question: str, history: Sequence[Turn]) -> bool:
    """Whether ``reply`` (an answer or a quote) says again what an earlier reply of the conversation
    (not a decline) said, to another question: the chain's repeat check at ``REPEAT_OVERLAP``."""
    earlier = [(turn.question, strip_markers(turn.answer)) for turn in history if not is_decline(turn.answer)]
    return repeats_earlier(strip_markers(reply), question, earlier, overlap=REPEAT_OVERLAP)


def scope_misses(scope: dict[str, Any] | None, files: Sequence[str]) -> list[str]:
    """The folders a folder-scoped adapter retrieves from when none of them holds one of ``files``.

    Such an adapter's retrieval cells would find nothing and decline every question (a ``support``
    adapter scoped to ``user-guide`` run on SQuAD); empty when the scope reaches a file or is not a
    folder scope (a raw metadata filter cannot be checked without the index).
    """
    wanted = (scope or {}).get("folder")
    if isinstance(wanted, dict):  # several folders: {"$in": [...]}
        wanted = wanted.get("$in", [])
    folders = [wanted] if isinstance(wanted, str) else list(wanted or [])
    present = {top_folder(name) for name in files}
    return [] if present & set(folders) else folders


def run_eval(
    bot: Chatbot,
    items: Sequence[QAItem],
    chosen: Sequence[Cell],
    files: Sequence[str],
    progress: Callable[[int], None] | None = None,
    retrieval_only: bool = False,
) -> tuple[list[dict], dict[str, dict]]:
    """Score every item in every cell (``files``: the indexed files, sorted); returns the
    per-question records and the retrieval records."""
    retrieval: dict[str, dict] = {}
    records: list[dict] = []
    histories: dict[tuple[str, str], list[Turn]] = {}  # (cell, conversation) -> its turns so far
    for item in items:
        scope = None
        for cell in chosen:
            if cell.use_retrieval:
                scope = bot.adapters.get(cell.adapter).scope
                break
        retrieval[item.id], chunks = retrieval_record(bot, item, scope, files)
        if not retrieval_only:
            for cell in chosen:
                history = histories.setdefault((cell.name, item.conversation), []) if item.conversation else []
                record = score_answer(bot, item, cell, files, chunks, list(history))
                records.append(record)
                if item.conversation:
                    history.append(Turn(item.question, record["answer"]))
                if progress:
                    progress(1)
        elif progress:
            progress(len(chosen))
    return records, retrieval


def _reason_kind(reason: str | None) -> str:
    """A decline reason without its particulars (the names after a colon, the figures in brackets)."""
    return (reason or "the model declined").split(":")[0].split(" (")[0]


def summarize(records: Sequence[dict], retrieval: dict[str, dict], items: Sequence[QAItem], top_k: int) -> dict:
    """Per-cell figures (and retrieval figures over the answerable items)."""
    answerable_ids = {item.id for item in items if item.answerable and (item.gold_sources or item.gold_passages)}
    ranked = [retrieval[i]["hits"] for i in answerable_ids if i in retrieval]
    summary: dict[str, Any] = {
        "retrieval": {
            "questions": len(ranked),
            "recall@1": mean([recall_at_k(h, 1) for h in ranked]),
            f"recall@{top_k}": mean([recall_at_k(h, top_k) for h in ranked]),
            f"recall@{RETRIEVAL_DEPTH}": mean([recall_at_k(h, RETRIEVAL_DEPTH) for h in ranked]),
            "mrr": mean([reciprocal_rank(h) for h in ranked]),
        },
        "cells": {},
    }
    for cell in dict.fromkeys(record["cell"] for record in records):
        rows = [r for r in records if r["cell"] == cell]
        answerable = [r for r in rows if r["answerable"]]
        unanswerable = [r for r in rows if not r["answerable"]]
        cited = [c for r in rows for c in r["citations"]]
        shown = [r for r in rows if not r["declined"]]
        followups = sum(1 for r in rows if r.get("turn"))
        summary["cells"][cell] = {
            "questions": len(rows),
            "answer_f1": mean([r["f1"] for r in answerable]),
            "answer_contains": mean([float(r["contains"]) for r in answerable]),
            "gold_to_user": mean([float(r.get("gold_to_user", r["contains"])) for r in answerable]),
            "gold_in_answer_or_quote": mean(
                [float(r.get("gold_in_answer_or_quote", r.get("gold_to_user", r["contains"]))) for r in answerable]
            ),
            "gold_passage_shown": mean(
                [float(r["gold_passage_shown"]) for r in answerable if r.get("gold_passage_shown") is not None]
            ),
            "quoted": mean([float(r.get("quoted", False)) for r in rows]),
            "citation_precision": mean([float(c["gold"]) for c in cited]),
            "citation_coverage": mean([float(any(c["gold"] for c in r["citations"])) for r in answerable]),
            "supported_citations": mean([float(bool(c["supported"])) for c in cited]),
            "model_markers": mean([float(c["cited_by"] == "model") for c in cited]),
            "context_dumps": mean([float(r.get("context_dump", False)) for r in rows]),
            "stale_answers": mean([float(r["stale"]) for r in rows if r.get("stale") is not None]),
            "declined_unanswerable": mean([float(r["declined"]) for r in unanswerable]),
            "declined_answerable": mean([float(r["declined"]) for r in answerable]),
            "wrong_shown": mean([float(not (r["answerable"] and r["contains"])) for r in shown]),
            "seconds_per_question": mean([r["seconds"] for r in rows]),
            "decline_reasons": dict(Counter(_reason_kind(r.get("decline_reason")) for r in rows if r["declined"])),
            # conversations only: the questions asked after others, and the replies that repeat an earlier one
            "followups": followups or None,
            "repeated_answers": sum(1 for r in rows if r.get("repeated")) if followups else None,
        }
    return summary
