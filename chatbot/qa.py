"""Question/answer files for training (RAFT) and evaluation, read into one shape.

Two layouts: JSONL with ``question``, ``answers`` (a list; empty means unanswerable, a single
``answer`` string is accepted too), optional ``gold_sources`` (file names or globs),
``gold_passages``, ``outdated_answers`` (what an older version of the documents said: an answer
stating one is stale) and ``conversation`` (items that share one are asked in file order, each
with the earlier ones as its history); and the SEC 10-Q CSV (``Question``, ``Answer``, ``Source Docs`` glob).
"""

from __future__ import annotations

import csv
import fnmatch
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

_SOURCE_NOTES = re.compile(r"\s*\(SOURCE:[^)]*\)|\n*\s*SOURCE\(S\):.*$", re.S)


@dataclass
class QAItem:
    """One question with its reference answers and where the answer lives."""

    question: str
    answers: list[str] = field(default_factory=list)
    gold_sources: list[str] = field(default_factory=list)  # file names or globs, relative to knowledge/
    gold_passages: list[str] = field(default_factory=list)
    id: str = ""
    outdated: list[str] = field(default_factory=list)  # answers of an older version of the documents
    conversation: str = ""  # items sharing one are asked in file order, as one conversation

    @property
    def answerable(self) -> bool:
        return bool(self.answers)

    def gold_files(self, files: Iterable[str]) -> list[str]:
        """The knowledge files that match this item's gold sources (by name or glob)."""
        found = []
        for path in files:
            name = path.rsplit("/", 1)[-1]
            if any(fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(path, pattern) for pattern in self.gold_sources):
                found.append(path)
        return sorted(found)


def clean_answer(text: str) -> str:
    """Drop the ``(SOURCE: file)`` notes of the SEC answers: citations are [n] markers here."""
    return _SOURCE_NOTES.sub("", text).strip()


def _read_jsonl(path: Path) -> list[QAItem]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            question = str(row["question"]).strip()
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a question record ({exc})") from exc
        answers = row.get("answers", [row["answer"]] if "answer" in row else [])
        items.append(
            QAItem(
                question=question,
                answers=[str(answer) for answer in answers],
                gold_sources=[str(s) for s in row.get("gold_sources", [])],
                gold_passages=[str(p) for p in row.get("gold_passages", [])],
                id=str(row.get("id", number)),
                outdated=[str(a) for a in row.get("outdated_answers", [])],
                conversation=str(row.get("conversation") or ""),
            )
        )
    return items


def _read_sec_csv(path: Path) -> list[QAItem]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"Question", "Answer", "Source Docs"} <= set(rows[0]):
        raise ValueError(f"{path}: expected the columns Question, Answer, Source Docs")
    return [
        QAItem(
            question=row["Question"].strip(),
            answers=[clean_answer(row["Answer"])],
            gold_sources=[glob.strip() for glob in row["Source Docs"].split(",") if glob.strip()],
            id=str(number),
        )
        for number, row in enumerate(rows, 1)
    ]


def read_qa(path: Path) -> list[QAItem]:
    """Read a question file by its extension (``.jsonl`` or the SEC ``.csv``)."""
    if path.suffix == ".csv":
        return _read_sec_csv(path)
    if path.suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    raise ValueError(f"{path}: unknown question file type (expected .jsonl or .csv)")


def write_qa_jsonl(path: Path, items: Iterable[QAItem]) -> None:
    """Write items in the JSONL layout :func:`read_qa` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(asdict(item), ensure_ascii=False) + "\n" for item in items)
    path.write_text("".join(lines), encoding="utf-8")


def as_conversations(items: Sequence[QAItem], size: int) -> list[QAItem]:
    """``items`` regrouped into conversations of ``size`` questions on different topics.

    Items are dealt round-robin from their gold sources (a topic each), so the questions of one
    conversation are about different files wherever the file has enough topics; ids are kept.
    """
    topics: dict[str, list[QAItem]] = {}
    for item in items:
        topics.setdefault(" ".join(item.gold_sources), []).append(item)
    queues = sorted(topics.values(), key=len, reverse=True)
    dealt: list[QAItem] = []
    while any(queues):
        for queue in queues:
            if queue:
                dealt.append(queue.pop(0))
    return [replace(item, conversation=f"c{number // size + 1}") for number, item in enumerate(dealt)]
