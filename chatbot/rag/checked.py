"""Only checked sentences are shown: each answer sentence is cited to a block that supports it,
re-cited to another retrieved block that does, or left out.

A model's answer often mixes a right, cited sentence with one no block states ("The pond is
1887 years old."), or cites the wrong block for a sentence another block holds word for word.
The first kind is dropped (kept in :attr:`Checked.dropped`, for the API and the page's details),
the second re-cited, so a right answer is not withheld for a wrong marker. Sentences that claim
nothing ("Sure! Here are the steps:") stay when the sentence they lead into stays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chatbot.rag.citations import cited_numbers, with_marker
from chatbot.rag.vacuous import META_WORDS
from chatbot.text import MIN_CONTENT_WORDS, MIN_SUPPORT, content_words, sentences, strip_markers, support

# Words of courtesy and lead-ins ("Sure! Here are the steps:"): a sentence of only these claims nothing.
FILLER = frozenset("sure certainly course here glad happy help hello hi thanks thank okay ok great follows".split())
Accept = Callable[[str, str], bool]  # (sentence, block) -> the citation check's verdict


@dataclass
class Checked:
    """The answer with only supported sentences, and what was changed to get there."""

    text: str
    dropped: list[str] = field(default_factory=list)  # sentences no retrieved block supports
    recited: int = 0  # sentences whose markers now name the block that supports them
    supported: bool = False  # whether any sentence that a block supports is left


def _claims(sentence: str) -> set[str]:
    """The content words of ``sentence`` that say something about the subject."""
    return content_words(strip_markers(sentence)) - META_WORDS - FILLER


def supports(sentence: str, block: str, accept: Accept) -> bool:
    """``accept`` (the citation check), and for a short sentence, which that check does not weigh
    by words ("The answer is: 2 hours."), every word it claims is in the block."""
    if not accept(sentence, block):
        return False
    claims = _claims(sentence)
    if len(content_words(strip_markers(sentence))) >= MIN_CONTENT_WORDS:
        return True
    return bool(claims) and support(" ".join(sorted(claims)), block) == 1.0


def keep_checked(text: str, blocks: Sequence[str], accept: Accept, question: str = "") -> Checked:
    """``text`` with every shown sentence cited to blocks that support it (see the module). A lead-in
    in the question's words ("The file types you can use are:") claims nothing either."""
    asked = content_words(question)

    def claims(sentence: str) -> set[str]:
        words = _claims(sentence)
        return set() if sentence.rstrip().endswith(":") and words <= asked else words

    parts = sentences(text)
    kept: list[str | None] = []  # None: dropped; the sentences that claim nothing are decided after
    result = Checked("")
    for sentence, _separator in parts:
        if not sentence.strip() or not claims(sentence):
            kept.append(sentence)
            continue
        cited = cited_numbers(sentence, len(blocks))
        good = [n for n in cited if supports(sentence, blocks[n - 1], accept)]
        if not good:  # another block, by the bar attribution sets for a sentence without a marker
            said = " ".join(sorted(_claims(sentence)))
            shares = {n: support(said, block) for n, block in enumerate(blocks, 1)}
            others = [
                n for n, share in shares.items() if share >= MIN_SUPPORT and supports(sentence, blocks[n - 1], accept)
            ]
            good = sorted(others, key=shares.__getitem__, reverse=True)[:1]
            result.recited += bool(good and cited)
        if not good:
            result.dropped.append(strip_markers(sentence).strip())
            kept.append(None)
        else:
            kept.append(sentence if good == cited else with_marker(strip_markers(sentence), good))
    result.supported = any(shown and claims(shown) for shown in kept)
    out: list[str] = []
    for index, ((sentence, separator), shown) in enumerate(zip(parts, kept, strict=True)):
        if shown is None:
            continue
        if sentence.strip() and not claims(sentence):
            following = next((k for k in kept[index + 1 :] if k is None or claims(k)), "")
            if following is None or not result.supported:
                continue  # it led into a dropped sentence, or nothing checked is left
        out.append(shown + separator)
    result.text = "".join(out).strip()
    return result
