"""Why an answer was declined or quoted, in words a reader understands.

The chain records a machine-readable reason (``Answer.decline_reason``, one of the templates in
:mod:`chatbot.rag.chain`, kept as it is in the API). The page, ``chatbot ask`` and the API's
``why`` show this sentence instead: what the draft answer did, named, and what the reader can do.
"""

from __future__ import annotations

import re

from chatbot.text import content_words

_MAX_NAMES = 4
# pronouns (the checks' word lists keep them) are not what a question is about: a reason does not name them
_PRONOUNS = frozenset("me my mine myself he him his she her hers they them theirs".split())
# the opening of each fixed reason of chatbot.rag.chain, and what a reader is told instead
_FIXED = {
    "no passage supports what the answer says": "no passage says what the draft answer said",
    "the model pasted the passages back": "the draft answer copied the passages instead of answering",
    "the draft answer only restated the question": "the draft answer only repeated the question's own words",
    "the draft answer repeated an earlier answer": (
        "the draft answer repeated an earlier answer of this conversation, not this question's"
    ),
    "the model found no answer in the passages": "the model said the passages do not answer it",
    "the model gave no answer": "the model wrote nothing",
    "the draft answer says what the passage that best answers": (
        "the draft answer said something the passage quoted below does not"
    ),
}


def _quoted(items: list[str]) -> str:
    shown = [f"\u2018{item}\u2019" for item in items[:_MAX_NAMES]]
    more = f" and {len(items) - _MAX_NAMES} more" if len(items) > _MAX_NAMES else ""
    return (", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else shown[0]) + more


def plain_reason(reason: str | None, question: str) -> str | None:
    """The reader's sentence for ``reason`` (None for an answer that was not declined)."""
    if reason is None:
        return None
    near = reason.startswith("only passages below min_relevance matched")
    if near or reason.startswith("no passage of the knowledge base matched"):
        words = sorted(content_words(question) - _PRONOUNS, key=question.lower().find)
        about = f" about {_quoted(words)}" if words else ""
        if near:
            return (
                f"no passage in your documents is close enough to the question{about} to answer from "
                "(min_relevance); the nearest one is quoted, so check that it is what you asked"
            )
        return f"no passage in your documents is close enough to the question{about} (min_relevance)"
    if reason.startswith("the answer states numbers or names that no passage holds: "):
        names = [name.strip() for name in reason.split(": ", 1)[1].split(", ") if name.strip()]
        if names:
            return f"the draft answer named {_quoted(names)}, which no passage contains"
    for opening, sentence in _FIXED.items():
        if reason.startswith(opening):
            return sentence
    found = re.search(r"answerability ([\d.]+) < ([\d.]+)", reason)
    if found:
        return (
            f"the passages found look unlikely to answer it (estimated {float(found.group(1)):.0%} likely, "
            f"below the {float(found.group(2)):.0%} needed)"
        )
    return reason
