"""Knowledge-sync benchmark: ingest a folder of PDFs and compare with pure embedding.

    .venv/bin/python benchmarks/ingest.py ../shared/data/sec10q/docs [--out bench-results/ingest.json]

Prints pages parsed, pages/s and chunks/s of a first sync into a fresh index; in the same run
the raw sentence-transformers throughput on the same chunk texts (the ratio is the sync's
overhead over pure embedding); a no-op re-sync; and the time from dropping a new file into the
watched folder to it being retrievable.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pypdfium2 as pdfium
from figures import publish  # benchmarks/figures.py, next to this script

from chatbot.app.service import Chatbot
from chatbot.config import load_settings

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("docs", type=Path, help="folder of documents to ingest (e.g. ../shared/data/sec10q/docs)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "ingest.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    knowledge = work / "knowledge"
    shutil.copytree(args.docs, knowledge)
    settings = load_settings(
        knowledge_dir=knowledge, data_dir=work / "data", cache_dir=REPO / ".chatbot" / "cache", adapters_dir=work / "a"
    )
    bot = Chatbot(settings)
    bot.embeddings.embed_query("warm up")  # load the model outside the timed part, as for pure embedding

    total_pages = sum(len(pdfium.PdfDocument(path)) for path in sorted(knowledge.glob("*.pdf")))
    report = bot.sync(show_progress=True)
    first = report.seconds
    status = bot.status()
    pages = sum(record.pages or 0 for record in status.files)
    texts = bot.store.get(include=["documents"])["documents"]

    model = bot.embeddings.model._client  # the same SentenceTransformer, called directly
    started = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    pure = time.perf_counter() - started

    noop = bot.sync().seconds

    bot.watch(debounce_s=0.5)
    (knowledge / "dropped.md").write_text("The zeppelin hangar opens at dawn on Tuesdays.")
    dropped = time.perf_counter()
    while not any(
        d.metadata["source"] == "dropped.md" for d in bot.chain.retrieve("When does the zeppelin hangar open?")
    ):
        time.sleep(0.05)
    drop_to_retrievable = time.perf_counter() - dropped
    bot.close()

    results = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, {platform.python_version()}",
        "files": len(status.files),
        "errors": status.errors,
        "pages_parsed": pages,
        "pages_total": total_pages,
        "chunks": len(texts),
        "first_sync_s": round(first, 2),
        "pages_per_s": round(pages / first, 2),
        "chunks_per_s": round(len(texts) / first, 2),
        "pure_embedding_s": round(pure, 2),
        "pure_chunks_per_s": round(len(texts) / pure, 2),
        "sync_over_pure_embedding": round(first / pure, 3),
        "noop_resync_s": round(noop, 3),
        "drop_to_retrievable_s": round(drop_to_retrievable, 2),
    }
    publish(results, args.out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
