"""Does a block support the sentence that cites it? A check that looks at what a sentence claims.

A cited sentence is unsupported when any of these hold (``Verdict.reasons`` names which):

- ``number``: a number, year, amount or percentage in it has no equal in the block. Values are
  compared, not strings: ``2,018`` = ``2018``, ``three`` = ``3``, ``12 percent`` = ``12%``,
  ``$2.0 billion`` = ``2,031`` in a block that says "in millions" (a figure written with
  fewer significant digits matches a block value that rounds to it; years and small integers
  must match exactly; a percentage matches one that rounds to it, 12% for 12.4%).
- ``name``: a capitalised word inside the sentence (a name, place, month, ticker) or a code of
  letters and digits (CD4, Q3) is not in the block: the sentence speaks of another entity.
- ``structure``: it is a heading or table row pasted back, not a sentence.
- ``echo``: it adds no word to the question's own (it restates or asks it).
- ``negation``: it negates what the block's closest sentence states.
- ``words``: under ``SUPPORTED`` of its content words are in the block.

Sentences with fewer than ``MIN_CONTENT_WORDS`` content words are judged on numbers, names and
structure only.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from chatbot.text import LIST_NUMBER, MIN_CONTENT_WORDS, content_words, sentences, strip_markers

SUPPORTED = 0.5  # share of a citing sentence's content words that its block must contain

_NUMBER = re.compile(
    r"(?<![\w.])[$€£]?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?"
    r"(?:\s*(%|percent\b|per cent\b|thousand\b|million\b|billion\b|trillion\b|bn\b|mn\b))?",
    re.I,
)
_SCALES = {"thousand": 1e3, "million": 1e6, "mn": 1e6, "billion": 1e9, "bn": 1e9, "trillion": 1e12}
_WORD_SCALES = {"hundred": 1e2} | _SCALES
_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()
_TENS = {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_WORD_VALUES = {word: float(value) for value, word in enumerate(_UNITS)} | {w: float(v) for w, v in _TENS.items()}
_WORD_NUMBER = re.compile(
    r"\b(" + "|".join(sorted(_WORD_VALUES, key=len, reverse=True)) + r")(?:-(" + "|".join(_UNITS[1:10]) + r"))?"
    r"(?:\s+(hundred|thousand|million|billion))?\b",
    re.I,
)
_NAME = re.compile(r"\b[A-Z][A-Za-z'’&-]*[A-Za-z]\b|\b[A-Z]{2,}\b|\b(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z\d]{2,}\b")
# An emphasised label ending in a colon at the sentence start: "**Open Settings:**", "__Step Two__:".
_LABEL = re.compile(r"\s*(\*\*|__|\*|_)[^*_\n]{1,60}?(?::\1|\1:)")
_NEGATION = re.compile(r"\b(?:not|no|never|none|nor|neither|cannot|without)\b|n[’']t\b", re.I)
_TABLE = re.compile(r"\|.*\|")
_HEADING = re.compile(r"#{1,6}\s")
_ENUMERATOR = re.compile(rf"(?m){LIST_NUMBER}(?:\s|$)")  # "1. ", "b) ", a last "2.": numbering
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_UNDECOMPOSED = str.maketrans(  # letters NFKD does not split into a base letter and a mark
    {
        "ł": "l",
        "Ł": "L",
        "æ": "ae",
        "Æ": "Ae",
        "œ": "oe",
        "Œ": "Oe",
        "ø": "o",
        "Ø": "O",
        "ß": "ss",
        "đ": "d",
        "Đ": "D",
        "ı": "i",
        "’": "'",
    }
)
_NOT_NAMES = frozenset(
    """i a an the this that these those it its he she they we you his her their our your in on at of
    for to by with from as and or but if when while after before since during under over however
    also yes no not""".split()
)


def plain(text: str) -> str:
    """``text`` in ASCII letters where it can be (Śródmieście = Srodmiescie, Skłodowska = Sklodowska):
    a model writes names with or without their diacritics."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_UNDECOMPOSED))
    return "".join(char for char in decomposed if not unicodedata.combining(char))


@dataclass(frozen=True)
class Verdict:
    """Whether a block supports a sentence, why not, and the share of its words found there."""

    supported: bool
    reasons: tuple[str, ...] = ()
    share: float = 1.0


@dataclass(frozen=True)
class Figure:
    """A number as a sentence states it."""

    value: float
    decimals: int  # digits after the point as written
    digits: int = 0  # significant digits of a figure that may be rounded ("$2.0 billion": 2); 0: exact
    text: str = ""  # as written
    percent: bool = False  # a percentage may be rounded to the decimals it is written with


def figures(text: str) -> list[Figure]:
    """Every number of ``text`` (digits with their scale word, and number words) as a value."""
    values = []
    for match in _NUMBER.finditer(text):
        whole, fraction, unit = match.group(1).replace(",", ""), match.group(2) or "", (match.group(3) or "").lower()
        value = float(whole + fraction)
        scale = _SCALES.get(unit, 1.0)
        if scale > 1:
            digits = len((whole + fraction.lstrip(".")).lstrip("0")) or 1
        elif not fraction and whole.endswith("000") and value >= 10_000:
            digits = len(whole.rstrip("0"))
        else:
            digits = 0
        percent = unit in ("%", "percent", "per cent")
        values.append(Figure(value * scale, len(fraction.lstrip(".")), digits, match.group(0).strip(), percent))
    for match in _WORD_NUMBER.finditer(text):
        value = _WORD_VALUES[match.group(1).lower()] + (_UNITS.index(match.group(2).lower()) if match.group(2) else 0)
        if match.group(3):
            value *= _WORD_SCALES[match.group(3).lower()]
        values.append(Figure(value, 0, len(f"{value:.0f}".rstrip("0")) if match.group(3) else 0, match.group(0)))
    return values


def stated_values(block: str) -> set[float]:
    """Every value the block states, also read at the scale a table caption declares."""
    lowered = block.lower()
    scales = [1.0] + [scale for word, scale in _SCALES.items() if len(word) > 2 and f"in {word}s" in lowered]
    return {number.value * scale for number in figures(block) for scale in scales}


def _significant(value: float, digits: int) -> float:
    if value == 0:
        return 0.0
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def matches(claimed: Figure, stated: set[float]) -> bool:
    """Whether ``claimed`` equals one of the ``stated`` values, allowing the rounding it shows."""
    if any(math.isclose(claimed.value, value, rel_tol=1e-9) for value in stated):
        return True
    if claimed.digits:  # "$2.0 billion" for 2,031 (in millions); "25,000" for 24,873
        digits = max(claimed.digits, 2)
        return any(math.isclose(_significant(value, digits), claimed.value, rel_tol=1e-9) for value in stated)
    if claimed.decimals or claimed.percent:  # 12.3 for 12.34; 12% for 12.4%
        return any(math.isclose(round(value, claimed.decimals), claimed.value) for value in stated)
    return False


def _stem(word: str) -> str:
    word = word.lower().replace("’", "'")
    word = word[:-2] if word.endswith("'s") else word.rstrip("'")
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def names(sentence: str) -> list[str]:
    """Capitalised words of ``sentence``, the opening word and a leading label excepted (both are
    capitalised anyway: "**Revenue** rose", "**Open Settings:** click ...")."""
    found = []
    label = _LABEL.match(sentence)
    for index, match in enumerate(_NAME.finditer(sentence)):
        word = match.group(0)
        opening = index == 0 and not sentence[: match.start()].strip(" \"'([*_")
        if label and match.end() <= label.end():
            continue
        if not opening and word.lower() not in _NOT_NAMES:
            found.append(word)
    return found


def _stems(text: str) -> set[str]:
    """The content words of ``text``, plural-insensitive."""
    return {_stem(word) for word in content_words(text)}


def _words(text: str) -> set[str]:
    return {_stem(word) for word in _WORD.findall(text.lower().replace("’", "'"))}


def _closest_sentence(claim: str, block: str) -> str:
    wanted = content_words(claim)
    return max((s for s, _ in sentences(block)), key=lambda s: len(content_words(s) & wanted), default="")


def share_in(sentence: str, block: str) -> float:
    """Share of the sentence's content words (plural-insensitive) that appear in the block."""
    words = _stems(sentence)
    if not words:
        return 0.0
    return len(words & _stems(block)) / len(words)


def judge(sentence: str, block: str, question: str = "") -> Verdict:
    """Whether ``block`` supports the claims of ``sentence`` (its ``[n]`` markers are ignored)."""
    raw, block = plain(sentence).strip(), plain(block)
    claim = _ENUMERATOR.sub("", strip_markers(raw)).strip()
    reasons: list[str] = []
    if _HEADING.match(raw) or _TABLE.search(raw) or _is_heading(claim, block):
        reasons.append("structure")
    stated = stated_values(block)
    if any(not matches(number, stated) for number in figures(claim)):
        reasons.append("number")
    known_words = _words(block) | _words(question)  # a name the question itself gives is not made up
    if any(not (_words(name) <= known_words) for name in names(claim)):
        reasons.append("name")
    words = content_words(claim)
    share = share_in(claim, block)
    if question and _echoes(claim, question):
        reasons.append("echo")
    if len(words) >= MIN_CONTENT_WORDS:
        # the question's own words, repeated around an answer, are not claims the block must hold
        if share < SUPPORTED and (not question or not _informative(claim, block, question)):
            reasons.append("words")
        if _NEGATION.search(claim) and not _NEGATION.search(_closest_sentence(claim, block)):
            reasons.append("negation")
    return Verdict(not reasons, tuple(reasons), round(share, 3))


def _is_heading(claim: str, block: str) -> bool:
    """The claim is no more than the words of the block's headings."""
    headings = " ".join(line for line in block.splitlines() if line.lstrip().startswith("#"))
    words = _stems(claim)
    return bool(words) and words <= _stems(headings)


def _informative(claim: str, block: str, question: str) -> bool:
    """The claim is the question's words plus words the block holds (at least one of them)."""
    words, asked, held = _stems(claim), _stems(question), _stems(block)
    new = words - asked
    return (
        bool(new & held)
        and len(new & held) / len(new) >= SUPPORTED
        and share_in(claim, block + " " + question) >= SUPPORTED
    )


def _echoes(claim: str, question: str) -> bool:
    """The claim adds no word to the question: it asks or restates it instead of answering."""
    words = _stems(claim)
    return bool(words) and words <= _stems(question)


def unfounded_specifics(answer: str, blocks: Sequence[str], question: str = "") -> list[str]:
    """Numbers and names of ``answer`` that no block states: specifics the model made up.

    What the ``question`` itself says is not made up ("New York City", "FY2022" repeated from it).
    """
    everything = plain("\n\n".join([*blocks, question]))
    answer = plain(answer)
    stated = stated_values(everything)
    words = _words(everything)
    claims = _ENUMERATOR.sub("", strip_markers(answer))
    found = [number.text for number in figures(claims) if not matches(number, stated)]
    for sentence, _ in sentences(claims):
        found += [name for name in names(sentence) if not _words(name) <= words]
    return found


def check_citations(claims: dict[int, list[str]], blocks: Sequence[str], question: str = "") -> dict[int, Verdict]:
    """For each cited block, the verdict of the worst sentence citing it."""
    verdicts: dict[int, Verdict] = {}
    for number, citing in claims.items():
        judged = [judge(sentence, blocks[number - 1], question) for sentence in citing]
        verdicts[number] = min(judged, key=lambda verdict: (verdict.supported, verdict.share), default=Verdict(True))
    return verdicts
