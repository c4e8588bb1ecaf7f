"""Question sets for the eval: the generic JSONL, the SEC 10-Q CSV, and SQuAD 2.0.

SQuAD brings its own knowledge: each chosen article becomes one Markdown file of its
paragraphs, and each question's gold passage is its paragraph.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from chatbot.evaluation.passage_gold import add_passage_gold
from chatbot.qa import QAItem, read_qa


def is_squad(path: Path) -> bool:
    if path.suffix != ".json":
        return False
    with path.open(encoding="utf-8") as handle:
        head = handle.read(200)
    return '"data"' in head and '"version"' in head


def _file_name(title: str) -> str:
    return re.sub(r"[^\w-]+", "_", title).strip("_") + ".md"


def read_squad(
    path: Path,
    knowledge_dir: Path,
    articles: int | None = 3,
    limit: int | None = None,
    seed: int = 0,
    skip_last: int = 0,
) -> list[QAItem]:
    """The last ``articles`` articles (None: all) of a SQuAD 2.0 file as knowledge files, and their questions.

    ``skip_last`` leaves out that many articles at the end first (training skips the eval's).
    With ``limit``, that many questions are drawn (seeded), half answerable and half not where
    the articles have enough of each.
    """
    everything = json.loads(path.read_text(encoding="utf-8"))["data"]
    end = len(everything) - skip_last
    start = 0 if articles is None else max(end - articles, 0)
    data = everything[start : max(end, 0)]
    knowledge_dir.mkdir(parents=True, exist_ok=True)
    answerable: list[QAItem] = []
    unanswerable: list[QAItem] = []
    for article in data:
        name = _file_name(article["title"])
        title = article["title"].replace("_", " ")
        paragraphs = [paragraph["context"].strip() for paragraph in article["paragraphs"]]
        (knowledge_dir / name).write_text(f"# {title}\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8")
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else sorted({a["text"] for a in qa["answers"]})
                item = QAItem(
                    question=qa["question"].strip(),
                    answers=answers,
                    gold_sources=[name],
                    gold_passages=[paragraph["context"].strip()] if answers else [],
                    id=qa["id"],
                )
                (answerable if answers else unanswerable).append(item)
    if limit is None:
        return answerable + unanswerable
    rng = random.Random(seed)
    rng.shuffle(answerable)
    rng.shuffle(unanswerable)
    half = min(limit // 2, len(unanswerable))
    chosen = unanswerable[:half] + answerable[: limit - half]
    rng.shuffle(chosen)
    return chosen


def load_questions(
    path: Path,
    knowledge_dir: Path | None,
    out_dir: Path,
    limit: int | None = None,
    only: list[str] | None = None,
    articles: int = 3,
    seed: int = 0,
    skip_articles: int = 0,
) -> tuple[list[QAItem], Path]:
    """The questions of ``path`` and the knowledge folder they are asked over.

    ``only`` keeps items whose gold sources mention one of the strings (e.g. ``INTC,NVDA`` for
    the SEC rows held out from training). SQuAD writes its knowledge under ``out_dir``, from the
    ``articles`` before the last ``skip_articles`` (the eval's are the last 3). Items that
    name only files get the page holding their answer as passage-level gold (``passage_gold``).
    """
    if is_squad(path):
        folder = knowledge_dir or out_dir / "squad-knowledge"
        return read_squad(path, folder, articles, limit, seed, skip_last=skip_articles), folder
    if knowledge_dir is None:
        raise ValueError("--knowledge is needed for this question file")
    items = read_qa(path)
    if only:
        items = [item for item in items if any(key in " ".join(item.gold_sources) for key in only)]
    items = items[:limit] if limit else items
    return add_passage_gold(items, knowledge_dir), knowledge_dir
