"""Conversation history: earlier turns for the prompt, and the search query of a follow-up.

"and in the next quarter?" retrieves nothing useful on its own. The search query of a
follow-up is made standalone in one of two ways (setting ``followup_query``):

- ``history`` (default): the previous question(s) joined with the follow-up. Deterministic,
  costs nothing, and works with a 135M model, which rewrites questions unreliably.
- ``model``: the model rewrites the follow-up as a standalone question (LangChain's
  history-aware-retriever pattern), for larger base models; an unusable rewrite falls back
  to ``history``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate

from chatbot.text import strip_markers

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


def history_messages(history: Sequence[Turn], turns: int) -> list[BaseMessage]:
    """The last ``turns`` exchanges as chat messages; old [n] markers are dropped (their blocks are gone)."""
    messages: list[BaseMessage] = []
    for turn in history[-turns:] if turns > 0 else []:
        messages.append(HumanMessage(turn.question))
        messages.append(AIMessage(strip_markers(turn.answer).strip()))
    return messages


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
