"""Conversation history: earlier turns for the prompt, and the search query of a follow-up.

"and in the next quarter?" retrieves nothing useful on its own. The search query of a
follow-up is made standalone in one of these ways (setting ``followup_query``):

- ``auto`` (default): the previous question joined with the follow-up, only when the follow-up
  refers back (:func:`refers_back`: a pronoun or "the same", an opening "and"/"what about", or
  fewer than two words of its own). A question on a new topic retrieves as if asked alone;
  joined, the previous topic's passages came back and the model repeated its earlier answer.
- ``history``: the previous question always joined with the follow-up.
- ``model``: the model rewrites the follow-up as a standalone question (LangChain's
  history-aware-retriever pattern), for larger base models; an unusable rewrite falls back
  to ``auto``.

What the model sees of earlier turns is ``history_content``: the earlier questions only, or the
questions and answers (docs/evaluation.md, *Conversations*, measured which).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate

from chatbot.text import content_words, strip_markers

CONDENSE_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "Rewrite the user's last question so it can be understood without the conversation. "
            "Add the missing subject from the conversation, keep the meaning, reply with the question only.",
        ),
        ("human", "Conversation:\n{conversation}\n\nLast question: {question}\n\nStandalone question:"),
    ]
)


@dataclass(frozen=True)
class Turn:
    """One finished exchange of a conversation."""

    question: str
    answer: str


def history_messages(history: Sequence[Turn], turns: int, answers: bool = True) -> list[BaseMessage]:
    """The last ``turns`` exchanges as chat messages (``answers`` False: their questions only); old
    [n] markers are dropped (their blocks are gone)."""
    messages: list[BaseMessage] = []
    for turn in history[-turns:] if turns > 0 else []:
        messages.append(HumanMessage(turn.question))
        if answers:
            messages.append(AIMessage(strip_markers(turn.answer).strip()))
    return messages


# Words by which a question leans on an earlier one ("what about its revenue?", "and the next one?").
_BACK_REFERENCES = frozenset(
    """it its it's they them their theirs this these those he him his she her hers there
    same former latter previous earlier ones""".split()
)
_OPENINGS = ("and ", "but ", "or ", "so ", "also ", "what about ", "how about ", "and?", "why not", "what else")


def refers_back(question: str) -> bool:
    """Whether ``question`` needs the conversation to be understood (a pronoun or "the same", an
    opening "and ..."/"what about ...", or fewer than two words of its own)."""
    words = re.findall(r"[a-z0-9']+", question.lower())
    if not words:
        return False
    if question.lower().lstrip().startswith(_OPENINGS):
        return True
    return bool(_BACK_REFERENCES & set(words)) or len(content_words(question)) < 2


def joined_query(history: Sequence[Turn], question: str, turns: int = 1) -> str:
    """The previous ``turns`` questions followed by ``question``: the ``history`` search query."""
    previous = [turn.question for turn in history[-turns:]] if turns > 0 else []
    return " ".join([*previous, question])


def conversation_text(history: Sequence[Turn], turns: int) -> str:
    return "\n".join(f"User: {t.question}\nAssistant: {strip_markers(t.answer).strip()}" for t in history[-turns:])


def usable_rewrite(rewrite: str, question: str) -> str | None:
    """The model's standalone question, or None when it is empty, multi-line or rambling."""
    text = rewrite.strip().strip('"').strip()
    text = text.removeprefix("Standalone question:").strip()
    if not text or "\n" in text or len(text) > max(200, 4 * len(question)):
        return None
    return text
