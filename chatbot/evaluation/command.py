"""``chatbot eval``: index the knowledge folder apart from the user's, run the cells, write reports."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chatbot.config import Settings
from chatbot.evaluation.datasets import load_questions
from chatbot.evaluation.report import write_reports
from chatbot.evaluation.runner import cells, run_eval, scope_misses, summarize
from chatbot.qa import as_conversations


@dataclass
class EvalRequest:
    """What to evaluate; see ``chatbot eval --help``."""

    questions: Path
    knowledge: Path | None = None
    adapters: list[str] = field(default_factory=lambda: ["base"])
    ablation: bool = False
    limit: int | None = None
    only: list[str] = field(default_factory=list)
    articles: int = 3
    skip_articles: int = 0  # SQuAD: leave out that many last articles first (calibration: the eval's 3)
    out: Path = Path("eval-results")
    max_new_tokens: int = 128
    retrieval_only: bool = False
    seed: int = 0
    conversations: int = 0  # > 1: ask the questions as conversations of that many (qa.as_conversations)


def eval_settings(settings: Settings, knowledge: Path, max_new_tokens: int, seed: int) -> Settings:
    """The user's settings with the eval's own knowledge folder and index (kept between runs).

    The index is kept per folder and per way of embedding it, so comparing embedding settings
    never reuses vectors made the other way.
    """
    recipe = (
        knowledge.resolve(),
        settings.embedding_model,
        settings.embedding_dtype,
        settings.chunk_size,
        settings.chunk_overlap,
    )
    key = hashlib.sha1(repr(recipe).encode()).hexdigest()[:12]
    return settings.model_copy(
        update={
            "knowledge_dir": knowledge,
            "data_dir": settings.data_dir / "eval-index" / key,
            "cache_dir": settings.models_cache_dir,
            "chroma_url": None,
            "record_db_url": None,
            "database_url": None,  # the eval's own index, never the shared database's
            "max_new_tokens": max_new_tokens,
            "temperature": 0.0,
            "seed": seed,
        }
    )


def evaluate(settings: Settings, request: EvalRequest, show_progress: bool = True) -> dict[str, Any]:
    """Run the eval; returns the summary with the report paths."""
    import torch
    from tqdm import tqdm

    from chatbot.app.service import Chatbot

    torch.manual_seed(request.seed)
    items, knowledge = load_questions(
        request.questions,
        request.knowledge,
        request.out,
        request.limit,
        request.only,
        request.articles,
        request.seed,
        request.skip_articles,
    )
    if not items:
        raise ValueError(f"no questions selected from {request.questions}")
    if request.conversations > 1:
        items = as_conversations(items, request.conversations)
    bot = Chatbot(eval_settings(settings, knowledge, request.max_new_tokens, request.seed))
    if not request.retrieval_only:
        bot.load()
    report = bot.sync(show_progress=show_progress)
    chosen = cells(request.adapters, request.ablation)
    bot.adapters.refresh()  # an adapter written since this process loaded the model (train, then eval)
    files = sorted(bot.knowledge.files())
    for cell in chosen:
        domain = bot.adapters.get(cell.adapter)  # an unknown adapter fails now, not after an hour
        missed = scope_misses(domain.scope, files) if cell.use_retrieval else []
        if missed:
            raise ValueError(
                f"adapter {cell.adapter!r} retrieves only from the folder(s) {', '.join(missed)} of its "
                f"knowledge_scope, and {knowledge} has no file there: every answer would be a decline. "
                "Evaluate it on a folder that has them, or on a copy of the adapter without [knowledge_scope]."
            )
    started = time.perf_counter()
    with tqdm(total=len(items) * len(chosen), desc="eval", unit="answer", disable=not show_progress) as bar:
        records, retrieval = run_eval(bot, items, chosen, files, bar.update, request.retrieval_only)
    summary = summarize(records, retrieval, items, bot.settings.top_k)
    config = {
        **{key: str(value) if isinstance(value, Path) else value for key, value in asdict(request).items()},
        "knowledge_dir": str(knowledge),
        "documents": report.unchanged + len(report.added) + len(report.updated),
        "questions_answerable": sum(item.answerable for item in items),
        "questions_unanswerable": sum(not item.answerable for item in items),
        "top_k": bot.settings.top_k,
        "min_relevance": bot.settings.min_relevance,
        "retrieval_mode": bot.settings.retrieval_mode,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if request.retrieval_only:  # one record per question, so each retrieval can still be looked at
        records = [
            {"id": item.id, "question": item.question, "answerable": item.answerable, "gold_answers": item.answers}
            for item in items
        ]
    for record in records:
        record["retrieval"] = {k: v for k, v in retrieval.get(record["id"], {}).items() if k != "gold_files"}
    title = f"{request.questions.name}: {len(items)} questions"
    paths = write_reports(request.out, title, config, summary, records)
    return {"config": config, "summary": summary, "reports": {k: str(v) for k, v in paths.items()}}
