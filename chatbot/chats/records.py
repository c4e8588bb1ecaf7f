"""What the chat store gives back: conversations, saved answers, feedback, and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from chatbot.rag.answer import Answer
from chatbot.rag.conversation import Turn
from chatbot.vocabulary import AdapterId

Verdict = Literal["up", "down"]
TITLE_CHARS = 120  # a conversation's title is cut to this many characters


class ConversationNotFoundError(LookupError):
    """No conversation (or answer) with this id belongs to the caller (HTTP 404)."""


class ChatStoreError(RuntimeError):
    """The database cannot be used (for example: written by a newer version of the app)."""


@dataclass(frozen=True)
class ConversationInfo:
    """One entry of a history list."""

    id: str
    title: str
    channel: str
    created_at: float
    updated_at: float
    turns: int
    adapter: str | None = None  # the adapter of its last answer (None: no answer yet)


@dataclass(frozen=True)
class Feedback:
    """A user's verdict on one answer: thumbs, a correction, and the cited blocks marked as wrong sources."""

    verdict: Verdict | None = None
    correction: str | None = None
    wrong_sources: tuple[int, ...] = ()


@dataclass
class SavedTurn:
    """One stored exchange: the answer as it was given, the file versions it rests on, its feedback."""

    id: int
    position: int
    answer: Answer
    versions: dict[str, str | None]
    created_at: float
    feedback: Feedback | None = None

    @property
    def question(self) -> str:
        return self.answer.question

    @property
    def turn(self) -> Turn:
        """The exchange as model history for a follow-up."""
        return Turn(self.answer.question, self.answer.answer)


@dataclass(frozen=True)
class FeedbackRecord:
    """A verdict with its answer, for the Feedback view, the export and training."""

    owner: str
    conversation_id: str
    turn_id: int
    adapter: AdapterId
    feedback: Feedback
    answer: Answer
    versions: dict[str, str | None] = field(default_factory=dict)
    updated_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """One line of ``chatbot feedback export``."""
        answer = self.answer.to_json()
        return {
            "owner": self.owner,
            "conversation_id": self.conversation_id,
            "turn_id": self.turn_id,
            "adapter": self.adapter,
            "verdict": self.feedback.verdict,
            "correction": self.feedback.correction,
            "wrong_sources": list(self.feedback.wrong_sources),
            "question": self.answer.question,
            "answer": self.answer.answer,
            "used_retrieval": self.answer.used_retrieval,
            "abstained": self.answer.abstained,
            "sources": answer["sources"],
            "retrieved": answer["retrieved"],
            "versions": self.versions,
            "updated_at": self.updated_at,
        }


def source_changes(versions: dict[str, str | None], current: dict[str, str]) -> dict[str, str]:
    """Files an old answer rests on that are gone ("deleted") or different now ("changed")."""
    changes = {}
    for source, sha in versions.items():
        if source not in current:
            changes[source] = "deleted"
        elif sha is not None and current[source] != sha:
            changes[source] = "changed"
    return changes
