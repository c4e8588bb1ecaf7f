"""Saved conversations and feedback on answers: SQLite through SQLAlchemy, every query scoped to an owner.

An owner is whoever the server knows the user as (a login name, an API key's name, or a
browser's own id when there is no login); nothing here returns a row of another owner, and an
id of someone else's conversation is "not found", exactly like an id that never existed.

The database runs in WAL mode with one transaction per write, so a process killed mid-write
leaves every earlier turn intact and no half-written one. ``PRAGMA user_version`` holds the
schema version; a database from a newer version is refused instead of being misread.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import ForeignKey, String, Text, create_engine, event, func, or_, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from chatbot.rag.answer import Answer
from chatbot.rag.conversation import Turn
from chatbot.vocabulary import InputError, clean_text

SCHEMA_VERSION = 1
TITLE_CHARS = 120
SEARCH_CHARS = 200
MAX_LISTED = 500

Verdict = Literal["up", "down"]
_VERDICT_CODES: dict[Verdict | None, int] = {"up": 1, "down": -1, None: 0}
_VERDICTS = {code: verdict for verdict, code in _VERDICT_CODES.items()}


class ConversationNotFoundError(LookupError):
    """No conversation (or answer) with this id belongs to the caller (HTTP 404)."""


class ChatStoreError(RuntimeError):
    """The database cannot be used (for example: written by a newer version of the app)."""


class _Base(DeclarativeBase):
    pass


class _Conversation(_Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(String(TITLE_CHARS * 4))
    channel: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[float]
    updated_at: Mapped[float] = mapped_column(index=True)
    turns: Mapped[list[_Turn]] = relationship(
        back_populates="conversation",
        order_by=lambda: (_Turn.position, _Turn.id),
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class _Turn(_Base):
    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    position: Mapped[int]
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    adapter: Mapped[str] = mapped_column(String(200), index=True)
    record: Mapped[str] = mapped_column(Text)  # Answer.to_json() plus the file versions it rests on
    created_at: Mapped[float]
    conversation: Mapped[_Conversation] = relationship(back_populates="turns")
    feedback: Mapped[_Feedback | None] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class _Feedback(_Base):
    __tablename__ = "feedback"

    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), primary_key=True)
    verdict: Mapped[int]  # 1 up, -1 down, 0 none
    correction: Mapped[str | None] = mapped_column(Text)
    wrong_sources: Mapped[str] = mapped_column(Text)  # JSON list of block numbers
    updated_at: Mapped[float] = mapped_column(index=True)


@dataclass(frozen=True)
class ConversationInfo:
    """One entry of a history list."""

    id: str
    title: str
    channel: str
    created_at: float
    updated_at: float
    turns: int


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
    adapter: str
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


_KEEP: Any = object()  # set_feedback: leave this field as it is


class ChatStore:
    """Conversations, answers and feedback of every owner in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(self._engine, "connect", _pragmas)
        self._migrate()

    def _migrate(self) -> None:
        with self._engine.begin() as db:
            version = db.execute(text("PRAGMA user_version")).scalar_one()
            if version > SCHEMA_VERSION:
                raise ChatStoreError(
                    f"{self.path} has schema version {version}; this version of the app reads up to "
                    f"{SCHEMA_VERSION} (upgrade the app, or move the file away)"
                )
            if version < SCHEMA_VERSION:
                _Base.metadata.create_all(db)
                # later versions: run the steps from `version` up here, in this transaction
                db.execute(text(f"PRAGMA user_version = {SCHEMA_VERSION}"))

    def close(self) -> None:
        self._engine.dispose()

    # Conversations
    def create(self, owner: str, title: str = "", channel: str = "ui") -> ConversationInfo:
        """A new, empty conversation of ``owner``."""
        now = time.time()
        row = _Conversation(
            id=uuid.uuid4().hex, owner=owner, title=_title(title), channel=channel, created_at=now, updated_at=now
        )
        with Session(self._engine) as db, db.begin():
            db.add(row)
            db.flush()
            return _info(row, 0)

    def conversations(self, owner: str, search: str = "", limit: int = 100) -> list[ConversationInfo]:
        """``owner``'s conversations, newest first; ``search`` matches titles, questions and answers."""
        count = select(func.count(_Turn.id)).where(_Turn.conversation_id == _Conversation.id).scalar_subquery()
        query = select(_Conversation, count).where(_Conversation.owner == owner)
        needle = " ".join(search.split())[:SEARCH_CHARS]
        if needle:
            pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            in_turns = select(_Turn.id).where(
                _Turn.conversation_id == _Conversation.id,
                or_(_Turn.question.like(pattern, escape="\\"), _Turn.answer.like(pattern, escape="\\")),
            )
            query = query.where(or_(_Conversation.title.like(pattern, escape="\\"), in_turns.exists()))
        query = query.order_by(_Conversation.updated_at.desc()).limit(max(1, min(limit, MAX_LISTED)))
        with Session(self._engine) as db:
            return [_info(row, turns) for row, turns in db.execute(query)]

    def get(self, owner: str, conversation_id: str) -> ConversationInfo:
        with Session(self._engine) as db:
            row = self._owned(db, owner, conversation_id)
            return _info(row, len(row.turns))

    def turns(self, owner: str, conversation_id: str) -> list[SavedTurn]:
        """The conversation's exchanges in order, with their feedback."""
        with Session(self._engine) as db:
            return [_saved(turn) for turn in self._owned(db, owner, conversation_id).turns]

    def rename(self, owner: str, conversation_id: str, title: str) -> ConversationInfo:
        if not title.strip():
            raise InputError("the title is empty", param="title")
        with Session(self._engine) as db, db.begin():
            row = self._owned(db, owner, conversation_id)
            row.title = _title(title)
            return _info(row, len(row.turns))

    def delete(self, owner: str, conversation_id: str) -> None:
        """Remove the conversation with its answers and their feedback."""
        with Session(self._engine) as db, db.begin():
            db.delete(self._owned(db, owner, conversation_id))

    def add_turn(
        self, owner: str, conversation_id: str, answer: Answer, versions: dict[str, str | None] | None = None
    ) -> SavedTurn:
        """Append a finished answer; the first one also titles an untitled conversation."""
        now = time.time()
        record = {**answer.to_json(), "versions": versions or {}}
        with Session(self._engine) as db, db.begin():
            row = self._owned(db, owner, conversation_id)
            position = db.scalar(select(func.count(_Turn.id)).where(_Turn.conversation_id == row.id)) or 0
            turn = _Turn(
                conversation_id=row.id,
                position=position,
                question=answer.question,
                answer=answer.answer,
                adapter=answer.adapter,
                record=json.dumps(record, ensure_ascii=False),
                created_at=now,
            )
            db.add(turn)
            if not row.title:
                row.title = _title(answer.question)
            row.updated_at = now
            db.flush()
            return _saved(turn)

    # Feedback
    def set_feedback(
        self,
        owner: str,
        turn_id: int,
        *,
        verdict: Verdict | None = _KEEP,
        correction: str | None = _KEEP,
        wrong_sources: list[int] | tuple[int, ...] = _KEEP,
        max_chars: int = 16_000,
        conversation_id: str | None = None,
    ) -> Feedback:
        """Change the given parts of the feedback on one of ``owner``'s answers (others are kept).

        With ``conversation_id`` the answer must also belong to that conversation.
        """
        if verdict is not _KEEP and verdict not in _VERDICT_CODES:
            raise InputError("verdict must be 'up', 'down' or null", param="verdict")
        if correction is not _KEEP and correction is not None:
            if len(correction) > max_chars:
                raise InputError(f"the correction has more than {max_chars:,} characters", param="correction")
            correction = clean_text(correction).strip() or None
        with Session(self._engine) as db, db.begin():
            turn = db.get(_Turn, turn_id)
            if turn is None or turn.conversation.owner != owner:
                raise ConversationNotFoundError(f"no answer {turn_id}")
            if conversation_id is not None and turn.conversation_id != conversation_id:
                raise ConversationNotFoundError(f"no answer {turn_id} in conversation {conversation_id!r}")
            if wrong_sources is not _KEEP:
                cited = {source["n"] for source in json.loads(turn.record).get("sources", [])}
                marked = tuple(sorted(set(wrong_sources)))
                if not set(marked) <= cited:
                    raise InputError(
                        f"wrong_sources must be block numbers the answer cites ({sorted(cited)})",
                        param="wrong_sources",
                    )
                wrong_sources = marked
            row = turn.feedback or _Feedback(turn_id=turn.id, verdict=0, correction=None, wrong_sources="[]")
            if verdict is not _KEEP:
                row.verdict = _VERDICT_CODES[verdict]
            if correction is not _KEEP:
                row.correction = correction
            if wrong_sources is not _KEEP:
                row.wrong_sources = json.dumps(list(wrong_sources))
            row.updated_at = time.time()
            turn.feedback = row
            db.flush()
            return _feedback(row)

    def feedback(
        self, owner: str | None = None, adapter: str | None = None, limit: int | None = None
    ) -> Iterator[FeedbackRecord]:
        """Answers with feedback, newest verdict first (``owner`` None: everyone's, for export/training)."""
        query = select(_Feedback, _Turn, _Conversation).join(_Turn, _Feedback.turn_id == _Turn.id)
        query = query.join(_Conversation, _Turn.conversation_id == _Conversation.id)
        if owner is not None:
            query = query.where(_Conversation.owner == owner)
        if adapter:
            query = query.where(_Turn.adapter == adapter)
        query = query.order_by(_Feedback.updated_at.desc())
        if limit is not None:
            query = query.limit(limit)
        with Session(self._engine) as db:
            for row, turn, conversation in db.execute(query):
                saved = _saved(turn, row)
                yield FeedbackRecord(
                    owner=conversation.owner,
                    conversation_id=conversation.id,
                    turn_id=turn.id,
                    adapter=turn.adapter,
                    feedback=saved.feedback or Feedback(),
                    answer=saved.answer,
                    versions=saved.versions,
                    updated_at=row.updated_at,
                )

    def feedback_counts(self) -> dict[str, dict[str, int]]:
        """Per adapter: answers given, thumbs up, thumbs down, corrections, answers with a wrong-source mark."""
        counts: dict[str, dict[str, int]] = {}
        with Session(self._engine) as db:
            for adapter, answers in db.execute(select(_Turn.adapter, func.count()).group_by(_Turn.adapter)):
                counts[adapter] = {"answers": answers, "up": 0, "down": 0, "corrected": 0, "wrong_source": 0}
            rows = db.execute(
                select(_Turn.adapter, _Feedback.verdict, _Feedback.correction, _Feedback.wrong_sources).join(
                    _Turn, _Feedback.turn_id == _Turn.id
                )
            )
            for adapter, verdict, correction, wrong in rows:
                entry = counts[adapter]
                entry["up"] += verdict == 1
                entry["down"] += verdict == -1
                entry["corrected"] += correction is not None
                entry["wrong_source"] += wrong != "[]"
        return counts

    def _owned(self, db: Session, owner: str, conversation_id: str) -> _Conversation:
        row = db.get(_Conversation, conversation_id) if isinstance(conversation_id, str) else None
        if row is None or row.owner != owner:
            raise ConversationNotFoundError(f"no conversation {conversation_id!r}")
        return row


def source_changes(versions: dict[str, str | None], current: dict[str, str]) -> dict[str, str]:
    """Files an old answer rests on that are gone ("deleted") or different now ("changed")."""
    changes = {}
    for source, sha in versions.items():
        if source not in current:
            changes[source] = "deleted"
        elif sha is not None and current[source] != sha:
            changes[source] = "changed"
    return changes


def _pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no committed turn
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _title(text: str) -> str:
    words = " ".join(text.split())
    return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rstrip() + "…"


def _info(row: _Conversation, turns: int) -> ConversationInfo:
    return ConversationInfo(row.id, row.title, row.channel, row.created_at, row.updated_at, turns)


def _feedback(row: _Feedback) -> Feedback:
    return Feedback(_VERDICTS.get(row.verdict), row.correction, tuple(json.loads(row.wrong_sources)))


def _saved(turn: _Turn, feedback: _Feedback | None = None) -> SavedTurn:
    record = json.loads(turn.record)
    versions = record.pop("versions", {})
    row = feedback or turn.feedback
    return SavedTurn(
        id=turn.id,
        position=turn.position,
        answer=Answer.from_json(record),
        versions=versions,
        created_at=turn.created_at,
        feedback=_feedback(row) if row is not None else None,
    )
