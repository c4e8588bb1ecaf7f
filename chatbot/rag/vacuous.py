"""Answers that say nothing: a restated question, or an earlier answer of the conversation repeated.

The embedded model passes the citation check with sentences like "The answer is that the bot is
not able to answer the question because it is not able to answer it [2]." (every word is in the
question or is a word about answering), and it copies an earlier answer of the conversation for
an unrelated next question. Both are withheld: the reply then quotes the passage instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatbot.text import content_words, strip_markers

# Words about answering, not about the subject: they never make an answer informative.
META_WORDS = frozenset(
    """answer answers answered answering question questions asked ask context contexts block blocks passage
    passages information info able unable know known provided provide text document documents mentioned
    mention said says say stated state given because reason""".split()
)


def _stem(word: str) -> str:
    """A crude stem, so "runs" restates "run" and "fed" does not look new beside "feeding"."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _stems(text: str) -> set[str]:
    return {_stem(word) for word in content_words(text)}


_META_STEMS = frozenset(_stem(word) for word in META_WORDS)
_PRONOUN_STEMS = frozenset(_stem(word) for word in "they them he him his she her hers theirs".split())


def _added(answer: str, question: str) -> set[str]:
    """The stems of the content words ``answer`` has beyond ``question``'s (words about answering aside)."""
    return _stems(strip_markers(answer)) - _stems(question) - _META_STEMS


def adds_nothing(answer: str, question: str, blocks: Sequence[str]) -> bool:
    """True when the answer holds no content word of any block that the question does not already hold."""
    known = set().union(*(_stems(block) for block in blocks)) if blocks else set()
    return not (_added(answer, question) & known)


def evidence_agreement(answer: str, question: str, evidence: str) -> float:
    """The share of what ``answer`` adds to ``question`` that the evidence sentence holds (pronouns,
    which stand for the question's words, aside); 1.0 when it adds nothing."""
    new = _added(answer, question) - _PRONOUN_STEMS
    return len(new & _stems(evidence)) / len(new) if new else 1.0


def _key(text: str) -> str:
    return " ".join(strip_markers(text).lower().split())


REPEAT_OVERLAP = 0.9  # the share of content words two answers share when one repeats the other


def repeats_earlier(
    answer: str, question: str, earlier: Sequence[tuple[str, str]], overlap: float = REPEAT_OVERLAP
) -> bool:
    """True when ``answer`` is an earlier (question, answer) pair's answer again, for another question:
    the same text, or ``overlap`` of their content words shared.

    The same question asked again may get the same answer; a new question may not.
    """
    key = _key(answer)
    words = content_words(answer)
    for old_question, old_answer in earlier:
        if content_words(old_question) == content_words(question):
            continue
        old_words = content_words(old_answer)
        same = key == _key(old_answer)
        shared = len(words & old_words) / max(len(words | old_words), 1)
        if key and (same or shared >= overlap):
            return True
    return False
