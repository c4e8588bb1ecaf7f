"""Text helpers shared by retrieval, prompting, the citation check, training and the metrics.

Sentences, ``[n]`` markers, content words and how much of a sentence a block supports: plain
Python, no model, so every layer may use them.
"""

from __future__ import annotations

import re

MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")  # [1] or [2, 3]
LIST_NUMBER = r"^[ \t]*(?:\d{1,2}|[a-z])[.)]"  # a line's list number: "1.", "2)", "b." (use with (?m))
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


def content_words(text: str) -> set[str]:
    """The lower-cased words of ``text`` that carry meaning (no stopwords, no single letters)."""
    return {word for word in _WORD.findall(text.lower()) if word not in _STOPWORDS and len(word) > 1}


def support(sentence: str, block: str) -> float:
    """Share of the sentence's content words that appear in the block (0..1)."""
    words = content_words(sentence)
    if not words:
        return 0.0
    return len(words & content_words(block)) / len(words)


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
