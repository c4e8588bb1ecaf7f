"""Tables and JSON in the knowledge folder: a chunk per record against rows packed into chunks.

    .venv/bin/python benchmarks/structured_files.py [--squad ../shared/data/squad2/dev-v2.0.json]
        [--answers] [--rows 120] [--out bench-results/structured.json]

A product catalogue of 120 rows (``--rows``; made here from a seed) as ``.csv`` and as ``.json``,
asked "How much does the <product> cost?" for (the first 120) rows: how often the chain's
retrieval (relevance floor included) puts that row's block first, retrieves it at all, or
retrieves nothing; and the seconds of each first sync. ``--answers``
also answers every question with the base model (answer holds the price, declined). With
``--squad``, the eval's three SQuAD 2.0 articles as a CSV of sentences, a CSV of paragraphs and a
JSON export of paragraphs, asked 300 of their answerable questions: recall@1 and recall@4 of a
block that holds a gold answer. Each set is indexed twice in one run: as shipped (each CSV row,
each JSON object that fits a chunk, its own chunk) and packed (the same text split into
``chunk_size`` chunks regardless of records, as before records existed).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.figures import cpu_summary, publish  # noqa: E402
from chatbot.app.service import Chatbot  # noqa: E402
from chatbot.config import load_settings  # noqa: E402
from chatbot.evaluation.metrics import contains_answer  # noqa: E402
from chatbot.knowledge import loaders  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PLACES = "Alpine Harbor Summit Canyon Prairie Glacier Desert Coastal Forest Meadow Ridge River Storm Sunset".split()
KINDS = "Jacket Parka Boot Sneaker Tent Backpack Lantern Stove Hammock Vest Glove Beanie Poncho Kayak".split()


def catalogue(folder: Path, count: int = 120) -> list[dict]:
    """Seeded products as ``catalogue.csv`` and ``catalogue.json`` in two folders; the first 120 price questions."""
    rng = random.Random(7)
    pool = [f"{place} {kind}" for place in PLACES for kind in KINDS]
    names = rng.sample(pool, min(count, len(pool)))
    names += [f"{pool[number % len(pool)]} {number // len(pool) + 1}" for number in range(count - len(names))]
    rows = [
        {
            "sku": f"SKU-{1000 + number}",
            "name": name,
            "price_usd": f"{rng.randint(15, 600)}.{rng.choice(['00', '50', '99'])}",
            "stock": rng.randint(0, 80),
            "warehouse": rng.choice(["Denver", "Austin", "Seattle", "Boston"]),
        }
        for number, name in enumerate(names)
    ]
    (folder / "csv").mkdir(parents=True)
    (folder / "json").mkdir()
    with (folder / "csv" / "catalogue.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / "json" / "catalogue.json").write_text(json.dumps({"store": "Outfitters", "products": rows}, indent=1))
    return [
        {"question": f"How much does the {row['name']} cost?", "key": row["sku"], "answers": [row["price_usd"]]}
        for row in rows[:120]
    ]


def squad_files(path: Path, folder: Path, count: int = 300) -> list[dict]:
    """The last three articles of a SQuAD file as three structured layouts; ``count`` answerable questions."""
    articles = json.loads(path.read_text(encoding="utf-8"))["data"][-3:]
    export = [
        {
            "title": article["title"].replace("_", " "),
            "paragraphs": [p["context"].strip() for p in article["paragraphs"]],
        }
        for article in articles
    ]
    for name in ("sentences", "paragraphs", "export"):
        (folder / name).mkdir(parents=True)
    sentences, paragraphs = [["article", "paragraph", "sentence", "text"]], [["article", "paragraph", "text"]]
    for article in export:
        for number, text in enumerate(article["paragraphs"], 1):
            paragraphs.append([article["title"], number, text])
            for line, sentence in enumerate(re.split(r"(?<=[.!?])\s+(?=[A-Z])", text), 1):
                sentences.append([article["title"], number, line, sentence])
    for name, rows in (("sentences", sentences), ("paragraphs", paragraphs)):
        with (folder / name / f"{name}.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    (folder / "export" / "articles.json").write_text(
        json.dumps({"source": "wiki export", "articles": export}, indent=1)
    )
    questions = [
        {"question": qa["question"].strip(), "answers": sorted({answer["text"] for answer in qa["answers"]})}
        for article in articles
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
        if not qa.get("is_impossible")
    ]
    random.Random(0).shuffle(questions)
    return questions[:count]


@contextmanager
def packed() -> Iterator[None]:
    """The loaders' pages without their records: the chunker then packs rows into chunks."""
    saved = dict(loaders.LOADERS)

    def without_records(load: Callable) -> Callable:
        return lambda path, limits: [loaders.Page(page.text, page.number) for page in load(path, limits)]

    loaders.LOADERS.update({suffix: without_records(load) for suffix, load in saved.items()})
    try:
        yield
    finally:
        loaders.LOADERS.update(saved)


def indexed(knowledge: Path, work: Path) -> tuple[Chatbot, float]:
    """A bot over ``knowledge`` with a fresh index in ``work``, and the seconds its sync took."""
    bot = Chatbot(
        load_settings(
            knowledge_dir=knowledge,
            data_dir=work,
            cache_dir=REPO / ".chatbot" / "cache",
            adapters_dir=work / "no-adapters",
        )
    )
    return bot, bot.sync().seconds


def holds(block: str, key: str) -> bool:
    return re.search(rf"\b{re.escape(key)}\b", block) is not None  # SKU-1000, not SKU-10000


def catalogue_figures(bot: Chatbot, questions: list[dict], answers: bool) -> dict[str, float]:
    first, found, nothing, right, declined = [], [], [], [], []
    for item in questions:
        blocks = bot.chain.retrieve(item["question"])
        nothing.append(not blocks)
        first.append(bool(blocks) and holds(blocks[0].page_content, item["key"]))
        found.append(any(holds(block.page_content, item["key"]) for block in blocks))
        if answers:
            answer = bot.ask(item["question"], max_new_tokens=64)
            right.append(not answer.abstained and contains_answer(answer.answer, item["answers"]))
            declined.append(answer.abstained)
    figures = {"row first": mean(first), "row retrieved": mean(found), "nothing retrieved": mean(nothing)}
    if answers:
        figures |= {"answer holds the price": mean(right), "declined": mean(declined)}
    return {name: round(value, 3) for name, value in figures.items()}


def recall_figures(bot: Chatbot, questions: list[dict]) -> dict[str, float]:
    hits = [
        [contains_answer(block.page_content, item["answers"]) for block in bot.chain.retrieve(item["question"])]
        for item in questions
    ]
    return {
        "recall@1": round(mean(any(row[:1]) for row in hits), 3),
        "recall@4": round(mean(any(row[:4]) for row in hits), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, help="SQuAD 2.0 file (e.g. ../shared/data/squad2/dev-v2.0.json)")
    parser.add_argument("--answers", action="store_true", help="also answer the catalogue's questions")
    parser.add_argument("--rows", type=int, default=120, help="products in the catalogue")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "structured.json")
    args = parser.parse_args()
    print(cpu_summary(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="structured-bench-"))
    sets: list[tuple[str, Path, list[dict], bool]] = []
    items = catalogue(work / "catalogue", args.rows)
    sets += [(f"catalogue {kind}", work / "catalogue" / kind, items, True) for kind in ("csv", "json")]
    if args.squad:
        items = squad_files(args.squad, work / "squad")
        sets += [
            (f"squad {kind}", work / "squad" / kind, items, False) for kind in ("sentences", "paragraphs", "export")
        ]
    figures: dict[str, object] = {"cpu": cpu_summary()}
    for name, knowledge, questions, is_catalogue in sets:
        for layout in ("records", "packed"):
            with packed() if layout == "packed" else nullcontext():
                bot, seconds = indexed(knowledge, work / f"data-{name.replace(' ', '-')}-{layout}")
            chunks = bot.status().chunks
            measured = (
                catalogue_figures(bot, questions, args.answers) if is_catalogue else recall_figures(bot, questions)
            )
            figures[f"{name}, {layout}"] = {"chunks": chunks, "sync s": round(seconds, 1), **measured}
            print(f"{name}, {layout}: {figures[f'{name}, {layout}']}", flush=True)
            bot.close()
    publish(figures, args.out)


if __name__ == "__main__":
    main()
