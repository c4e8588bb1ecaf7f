"""Questions a new user could ask, drawn from what is indexed: its section headings, or file names."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath

MIN_TOPIC, MAX_TOPIC = 4, 80
ABOUT = "What do my documents say about"


def _topic_question(heading: str) -> str | None:
    text = " ".join(heading.split()).strip(" #:-")
    if not MIN_TOPIC <= len(text) <= MAX_TOPIC or not re.search(r"[A-Za-z]{3}", text):
        return None
    if text.endswith("?"):
        return text  # a heading that is a question already
    topic = text[0].lower() + text[1:] if text[1:2].islower() else text  # "The manifest", not "SEC filings"
    return f"{ABOUT} {topic}?"


def _file_question(source: str) -> str | None:
    stem = re.sub(r"^[\d\W_]+", "", PurePosixPath(source).stem)
    words = " ".join(re.sub(r"[-_.]+", " ", stem).split())
    return f"What is in {words}?" if len(words) >= MIN_TOPIC else None


def suggested_questions(metadatas: Iterable[Mapping[str, object]], limit: int = 4) -> list[str]:
    """Up to ``limit`` questions, one file after another (files in name order, sections in order).

    A chunk's ``section`` ("Guide > How do I refresh?") gives its last heading; a file with none
    gives its name. Headings that are questions come first within a file.
    """
    by_file: dict[str, list[str]] = {}
    for meta in metadatas:
        source = str(meta.get("source") or "")
        if not source:
            continue
        section = str(meta.get("section") or "").split(" > ")[-1]
        question = _topic_question(section) if section else None
        found = by_file.setdefault(source, [])
        if question and question not in found:
            found.append(question)
    queues = []
    for source in sorted(by_file):
        asked = sorted(by_file[source], key=lambda q: q.startswith(ABOUT))  # headings that ask come first
        if not asked and (fallback := _file_question(source)):
            asked = [fallback]
        queues.append(asked)
    chosen: list[str] = []
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                question = queue.pop(0)
                if question not in chosen:
                    chosen.append(question)
    return chosen
