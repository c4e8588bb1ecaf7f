"""Keyword search on PostgreSQL against SQLite FTS5: recall@4 on the same chunks and questions.

    python benchmarks/keyword_engines.py ../shared/data/squad2/dev-v2.0.json ../shared/data/sec10q/qna_data.csv

Each question set is indexed once (the eval's folder, hybrid retrieval); the same chunks then go
into a PostgreSQL keyword index (a server this script starts on loopback from Debian's package, or
``--database-url``). For each engine: keyword-only recall@1/4 (its own ranking of the chunks) and
hybrid recall@4 (fused with the same vector ranking, what users get with ``retrieval_mode = hybrid``),
over the answerable questions, with the time per keyword query.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.postgres starts the server

from figures import cpu_summary, publish  # benchmarks/figures.py, next to this script

from chatbot.app.service import Chatbot
from chatbot.config import load_settings
from chatbot.evaluation.command import eval_settings
from chatbot.evaluation.datasets import load_questions
from chatbot.evaluation.metrics import is_gold_chunk, recall_at_k
from chatbot.knowledge.keywords import KeywordIndex
from chatbot.rag.retrieval import ScoredRetriever


def measure(questions: Path, database_url: str, out: Path, limit: int | None, articles: int) -> dict[str, float]:
    docs = questions.parent / "docs"  # the SEC set's PDFs sit beside its CSV; SQuAD brings its own
    items, knowledge = load_questions(questions, docs if docs.is_dir() else None, out, limit, None, articles)
    items = [item for item in items if item.answerable]
    settings = eval_settings(load_settings(retrieval_mode="hybrid"), knowledge, 16, 0)
    bot = Chatbot(settings)
    bot.sync(show_progress=True)
    files = sorted(bot.knowledge.files())
    engines = {"fts5": bot.keywords, "postgres": KeywordIndex(database_url, f"bench-{questions.stem}")}
    engines["postgres"].reconcile(bot.store)
    figures: dict[str, float] = {"questions": len(items), "chunks": len(engines["fts5"].ids())}
    for name, index in engines.items():
        hybrid = ScoredRetriever(
            store=bot.store,
            top_k=4,
            min_relevance=settings.min_relevance,
            keywords=index,
            keyword_weight=settings.keyword_weight,
        )
        keyword_hits, hybrid_hits, seconds = [], [], []
        for item in items:
            gold = item.gold_files(files)

            def hit(text: str, metadata: dict, gold: list[str] = gold, item=item) -> bool:  # noqa: ANN001
                return is_gold_chunk(text, str(metadata.get("source")), gold, item.gold_passages)

            started = time.perf_counter()
            ids = index.search(item.question, 4)
            seconds.append(time.perf_counter() - started)
            found = bot.store.get(ids=ids, include=["documents", "metadatas"]) if ids else None
            by_id = (
                dict(zip(found["ids"], zip(found["documents"], found["metadatas"], strict=True), strict=True))
                if found
                else {}
            )
            keyword_hits.append([hit(*by_id[i]) for i in ids])
            hybrid_hits.append([hit(d.page_content, d.metadata) for d in hybrid.invoke(item.question, k=4)])
        figures[f"{name} keyword recall@1"] = round(statistics.mean(recall_at_k(h, 1) for h in keyword_hits), 3)
        figures[f"{name} keyword recall@4"] = round(statistics.mean(recall_at_k(h, 4) for h in keyword_hits), 3)
        figures[f"{name} hybrid recall@4"] = round(statistics.mean(recall_at_k(h, 4) for h in hybrid_hits), 3)
        figures[f"{name} ms per keyword query (median)"] = round(1000 * statistics.median(seconds), 2)
    bot.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("questions", type=Path, nargs="+", help="question sets (SQuAD JSON, SEC CSV, QA JSONL)")
    parser.add_argument("--database-url", help="a PostgreSQL database (default: a server started here)")
    parser.add_argument("--limit", type=int, default=None, help="questions per set")
    parser.add_argument("--articles", type=int, default=8, help="SQuAD articles indexed")
    parser.add_argument("--out", type=Path, default=Path("bench-results/keyword-engines"))
    args = parser.parse_args()
    print(cpu_summary())
    with contextlib.ExitStack() as stack:
        url = args.database_url
        if url is None:
            from tests.postgres import postgres_server

            url = stack.enter_context(postgres_server()).create()
        figures: dict[str, float] = {}
        for questions in args.questions:
            work = args.out / questions.stem  # kept: a second run reuses its index
            for key, value in measure(questions, url, work, args.limit, args.articles).items():
                figures[f"{questions.stem}: {key}"] = value
                print(f"{questions.stem}: {key}  {value}", flush=True)
    publish(figures, args.out / "figures.json")


if __name__ == "__main__":
    main()
