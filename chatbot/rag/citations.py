"""Find the [n] citation markers in an answer, and attribute uncited sentences to blocks.

Small models often answer correctly from the context yet forget the markers. Sentences with
no marker whose content words are mostly found in one block get that block's marker
appended; such citations are labelled ``attribution`` so they are never mistaken for the
model's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from chatbot.text import MARKER, MIN_CONTENT_WORDS, MIN_SUPPORT, content_words, sentences, support

_SPACED_MARKER = re.compile(r"\s*" + MARKER.pattern)


def cited_numbers(text: str, block_count: int) -> list[int]:
    """Valid block numbers cited in ``text``, in order of first appearance."""
    seen: list[int] = []
    for match in MARKER.finditer(text):
        for part in match.group(1).split(","):
            number = int(part)
            if 1 <= number <= block_count and number not in seen:
                seen.append(number)
    return seen


def drop_unknown_markers(text: str, block_count: int) -> str:
    """``text`` without the marker numbers that name no block (``[5]`` of four blocks, any marker
    without blocks): a citation the reader cannot follow."""

    def known(match: re.Match[str]) -> str:
        numbers = [part.strip() for part in match.group(1).split(",") if 1 <= int(part) <= block_count]
        if not numbers:
            return ""
        spaces = match.group(0)[: match.group(0).index("[")]
        return f"{spaces}[{', '.join(numbers)}]"

    return _SPACED_MARKER.sub(known, text)


def with_marker(sentence: str, numbers: Sequence[int]) -> str:
    """``sentence`` (without markers) with ``[n, m]`` before its final stop; trailing space kept."""
    stripped = sentence.rstrip()
    tail = stripped[-1] if stripped[-1:] in ".!?" else ""
    body = stripped[:-1] if tail else stripped
    return f"{body} [{', '.join(map(str, numbers))}]{tail}" + sentence[len(stripped) :]


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
                sentence = with_marker(sentence, [best + 1])
                if best + 1 not in added:
                    added.append(best + 1)
        out.append(sentence + separator)
    return "".join(out), added


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
