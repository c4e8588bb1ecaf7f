"""How often answers cite a block in the [n] format: an adapter versus the base model.

    .venv/bin/python benchmarks/finance_citations.py ../shared/data/sec10q --companies INTC,NVDA --limit 20

Indexes the chosen companies' 10-Q filings (held out from the finance adapter's training), asks
their questions from ``qna_data.csv`` with retrieval, greedy, once with each model, and counts
answers whose markers the model wrote itself (``model_citations`` > 0), and answers with any
citation after attribution. The full evaluation (recall, F1, abstention...) is ``chatbot eval``'s job.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
from pathlib import Path

from tqdm.auto import tqdm

from chatbot.app.service import Chatbot
from chatbot.config import load_settings
from chatbot.qa import read_qa

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sec10q", type=Path, help="the sec10q folder (docs/ and qna_data.csv)")
    parser.add_argument("--companies", default="INTC,NVDA")
    parser.add_argument("--adapter", default="finance")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "finance-citations.json")
    args = parser.parse_args()
    companies = args.companies.split(",")
    knowledge = REPO / ".chatbot" / f"sec10q-{'-'.join(companies).lower()}"
    knowledge.mkdir(parents=True, exist_ok=True)
    for path in sorted((args.sec10q / "docs").glob("*.pdf")):
        if any(path.stem.endswith(company) for company in companies):
            shutil.copy2(path, knowledge / path.name)
    settings = load_settings(
        knowledge_dir=knowledge,
        data_dir=REPO / ".chatbot" / f"bench-{knowledge.name}",
        cache_dir=REPO / ".chatbot" / "cache",
        adapters_dir=REPO / "adapters",
        max_new_tokens=args.max_new_tokens,
    )
    bot = Chatbot(settings)
    bot.sync(show_progress=True)
    pattern = re.compile("|".join(companies))
    items = [item for item in read_qa(args.sec10q / "qna_data.csv") if pattern.search(" ".join(item.gold_sources))]
    items = items[: args.limit]
    records = []
    for item in tqdm(items, desc="questions", unit="q"):
        for adapter in ("base", args.adapter):
            answer = bot.ask(item.question, adapter=adapter)
            records.append(
                {
                    "question": item.question,
                    "adapter": adapter,
                    "answer": answer.answer,
                    "model_citations": answer.model_citations,
                    "cited_sources": [source.source for source in answer.sources],
                    "abstained": answer.abstained,
                    "seconds": answer.timings.get("total_s"),
                }
            )
    summary = {}
    for adapter in ("base", args.adapter):
        rows = [r for r in records if r["adapter"] == adapter]
        summary[adapter] = {
            "questions": len(rows),
            "model_wrote_a_marker": round(sum(r["model_citations"] > 0 for r in rows) / len(rows), 3),
            "any_citation_after_attribution": round(sum(bool(r["cited_sources"]) for r in rows) / len(rows), 3),
            "declined": round(sum(r["abstained"] for r in rows) / len(rows), 3),
            "median_seconds": round(statistics.median(r["seconds"] for r in rows), 2),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "records": records}, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
