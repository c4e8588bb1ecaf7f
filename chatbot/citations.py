"""Find the [n] citation markers in an answer, and attribute uncited sentences to blocks.

Small models often answer correctly from the context yet forget the markers. Sentences with
no marker whose content words are mostly found in one block get that block's marker
appended; such citations are labelled ``attribution`` so they are never mistaken for the
model's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")  # [1] or [2, 3]
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\b[A-Z]\.)\s+|\n+")  # not after "U.S."
_WORD = re.compile(r"[a-z0-9]+(?:['.-][a-z0-9]+)*")
_STOPWORDS = frozenset(
    """a an and are as at be but by can do does for from has have how i if in into is it its of
    on or so that the their then there these this to was were what when where which who will
    with you your yours we our us not no yes than also any all each more most other such
    only own same too very just should would could may might must shall""".split()
)
MIN_CONTENT_WORDS = 3
MIN_SUPPORT = 0.6


def sentences(text: str) -> list[tuple[str, str]]:
    """``text`` as (sentence, following separator) pairs; joining them gives ``text`` back."""
    return list(zip(_SENTENCE_END.split(text), [*_SENTENCE_END.findall(text), ""], strict=True))


def strip_markers(text: str) -> str:
    """``text`` without its ``[n]`` markers (and the space before each)."""
    return re.sub(r"\s*" + MARKER.pattern, "", text)


def cited_numbers(text: str, block_count: int) -> list[int]:
    """Valid block numbers cited in ``text``, in order of first appearance."""
    seen: list[int] = []
    for match in MARKER.finditer(text):
        for part in match.group(1).split(","):
            number = int(part)
            if 1 <= number <= block_count and number not in seen:
                seen.append(number)
    return seen


def content_words(text: str) -> set[str]:
    return {word for word in _WORD.findall(text.lower()) if word not in _STOPWORDS and len(word) > 1}


def support(sentence: str, block: str) -> float:
    """Share of the sentence's content words that appear in the block (0..1)."""
    words = content_words(sentence)
    if not words:
        return 0.0
    return len(words & content_words(block)) / len(words)


def attribute(
    answer: str, blocks: Sequence[str], accept: Callable[[str, str], bool] | None = None
) -> tuple[str, list[int]]:
    """Append ``[n]`` to each uncited sentence that block n supports; return text and numbers added.

    ``accept(sentence, block)`` is the citation check: a marker it would reject is never added.
    """
    if not blocks:
        return answer, []
    added: list[int] = []
    out: list[str] = []
    for sentence, separator in sentences(answer):
        if sentence.strip() and not MARKER.search(sentence) and len(content_words(sentence)) >= MIN_CONTENT_WORDS:
            scores = [support(sentence, block) for block in blocks]
            best = max(range(len(blocks)), key=scores.__getitem__)
            if scores[best] >= MIN_SUPPORT and (accept is None or accept(sentence, blocks[best])):
                stripped = sentence.rstrip()
                tail = stripped[-1] if stripped[-1:] in ".!?" else ""
                body = stripped[:-1] if tail else stripped
                sentence = f"{body} [{best + 1}]{tail}" + sentence[len(stripped) :]
                if best + 1 not in added:
                    added.append(best + 1)
        out.append(sentence + separator)
    return "".join(out), added


def collapse_repeats(text: str) -> str:
    """Drop sentences that repeat an earlier one word for word (tiny models loop)."""
    seen: set[str] = set()
    out: list[str] = []
    for sentence, separator in sentences(text):
        key = " ".join(sentence.lower().split())
        if key and key in seen:
            continue
        seen.add(key)
        out.append(sentence + separator)
    return "".join(out).strip()


def claims_by_block(text: str, block_count: int) -> dict[int, list[str]]:
    """The answer sentences that cite each block number."""
    claims: dict[int, list[str]] = {}
    for sentence, _separator in sentences(text):
        for number in cited_numbers(sentence, block_count):
            claims.setdefault(number, []).append(MARKER.sub("", sentence).strip())
    return claims


def supporting_passage(claims: Sequence[str], block: str) -> str | None:
    """The sentence of ``block`` that shares the most content words with ``claims`` (None if none)."""
    wanted = set().union(*(content_words(claim) for claim in claims)) if claims else set()
    best, best_overlap = None, 0
    for sentence, _separator in sentences(block):
        if sentence.lstrip().startswith("#"):  # a Markdown heading is not evidence
            continue
        overlap = len(content_words(sentence) & wanted)
        if overlap > best_overlap:
            best, best_overlap = " ".join(sentence.split()), overlap
    return best
