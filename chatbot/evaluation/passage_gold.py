"""Passage-level gold for question sets that name only files (the SEC 10-Q rows): for each gold
file, the page that holds the reference answer's figures, found by script.

A page is gold for a question when it states the most of the answer's figures (amounts,
percentages; years and day numbers say nothing about where an answer is) and at least
``MIN_FIGURES`` of them, or, for answers without such figures, when it holds at least
``MIN_WORD_SHARE`` of the answer's content words and more than any other page of the file.
Questions where no page qualifies keep file-level gold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from chatbot.knowledge.loaders import LoadError, Page, load_file
from chatbot.qa import QAItem
from chatbot.rag.grounding import Figure, figures, matches, stated_values
from chatbot.text import content_words

MIN_FIGURES = 1
MIN_WORD_SHARE = 0.5


def telling_figures(answer: str) -> list[Figure]:
    """The answer's figures that point at a page: not years, not day-of-month numbers."""

    def dateish(figure: Figure) -> bool:
        whole = figure.value.is_integer() and not figure.digits
        return whole and (figure.value <= 31 or 1900 <= figure.value <= 2100)

    return [figure for figure in figures(answer) if not dateish(figure)]


@dataclass(frozen=True)
class _Indexed:
    """A page with what ``gold_page`` compares, worked out once per file, not once per question."""

    page: Page
    values: set[float]
    words: set[str]

    @classmethod
    def of(cls, page: Page) -> _Indexed:
        return cls(page, stated_values(page.text), content_words(page.text))


def gold_page(answer: str, pages: Sequence[Page]) -> Page | None:
    """The page of one file that holds ``answer`` (None when none clearly does)."""
    return _best_page(answer, [_Indexed.of(page) for page in pages])


def _best_page(answer: str, indexed: Sequence[_Indexed]) -> Page | None:
    wanted = telling_figures(answer)
    if wanted:
        counts = [sum(matches(figure, page.values) for figure in wanted) for page in indexed]
        best = max(range(len(indexed)), key=counts.__getitem__, default=None)
        return indexed[best].page if best is not None and counts[best] >= MIN_FIGURES else None
    words = content_words(answer)
    if not words:
        return None
    shares = [len(words & page.words) / len(words) for page in indexed]
    best = max(range(len(indexed)), key=shares.__getitem__, default=None)
    if best is None or shares[best] < MIN_WORD_SHARE or shares.count(shares[best]) > 1:
        return None
    return indexed[best].page


def add_passage_gold(items: Sequence[QAItem], knowledge_dir: Path) -> list[QAItem]:
    """``items`` with ``gold_passages`` set to the gold page of each gold file, where one is found."""
    files = sorted(str(path.relative_to(knowledge_dir)) for path in knowledge_dir.rglob("*") if path.is_file())
    pages: dict[str, list[_Indexed]] = {}
    found = []
    for item in items:
        if item.gold_passages or not item.answerable:
            found.append(item)
            continue
        passages = []
        for name in item.gold_files(files):
            if name not in pages:
                try:
                    pages[name] = [_Indexed.of(page) for page in load_file(knowledge_dir / name)]
                except LoadError:
                    pages[name] = []
            page = _best_page(item.answers[0], pages[name])
            if page is not None:
                passages.append(page.text)
        found.append(replace(item, gold_passages=passages) if passages else item)
    return found
