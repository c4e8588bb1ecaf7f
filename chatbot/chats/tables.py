"""The chat store's SQLAlchemy tables, and their rows made into records."""

from __future__ import annotations

import json

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from chatbot.chats.records import TITLE_CHARS, ConversationInfo, Feedback, SavedTurn, Verdict
from chatbot.rag.answer import Answer

VERDICT_CODES: dict[Verdict | None, int] = {"up": 1, "down": -1, None: 0}
_VERDICTS = {code: verdict for verdict, code in VERDICT_CODES.items()}
ROW_ID = BigInteger().with_variant(Integer(), "sqlite")  # as the chats branch's migration makes it


class Base(DeclarativeBase):
    pass


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(String(TITLE_CHARS * 4))
    channel: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[float]
    updated_at: Mapped[float] = mapped_column(index=True)
    turns: Mapped[list[TurnRow]] = relationship(
        back_populates="conversation",
        order_by=lambda: (TurnRow.position, TurnRow.id),
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class TurnRow(Base):
    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    position: Mapped[int]
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    adapter: Mapped[str] = mapped_column(String(200), index=True)
    record: Mapped[str] = mapped_column(Text)  # Answer.to_json() plus the file versions it rests on
    created_at: Mapped[float]
    conversation: Mapped[Conversation] = relationship(back_populates="turns")
    feedback: Mapped[FeedbackRow | None] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class FeedbackRow(Base):
    __tablename__ = "feedback"

    turn_id: Mapped[int] = mapped_column(ROW_ID, ForeignKey("turns.id", ondelete="CASCADE"), primary_key=True)
    verdict: Mapped[int]  # 1 up, -1 down, 0 none
    correction: Mapped[str | None] = mapped_column(Text)
    wrong_sources: Mapped[str] = mapped_column(Text)  # JSON list of block numbers
    updated_at: Mapped[float] = mapped_column(index=True)


def title_of(text: str) -> str:
    words = " ".join(text.split())
    return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rstrip() + "…"


def info_of(row: Conversation, turns: int, adapter: str | None = None) -> ConversationInfo:
    return ConversationInfo(row.id, row.title, row.channel, row.created_at, row.updated_at, turns, adapter)


def feedback_of(row: FeedbackRow) -> Feedback:
    return Feedback(_VERDICTS.get(row.verdict), row.correction, tuple(json.loads(row.wrong_sources)))


def saved_of(turn: TurnRow, feedback: FeedbackRow | None = None) -> SavedTurn:
    record = json.loads(turn.record)
    versions = record.pop("versions", {})
    row = feedback or turn.feedback
    return SavedTurn(
        id=turn.id,
        position=turn.position,
        answer=Answer.from_json(record),
        versions=versions,
        created_at=turn.created_at,
        feedback=feedback_of(row) if row is not None else None,
    )
