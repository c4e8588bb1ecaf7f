"""Saved conversations and feedback on answers, through SQLAlchemy, every query scoped to an owner.

An owner is whoever the server knows the user as (a login name, an API key's name, or a
browser's own id when there is no login); nothing here returns a row of another owner, and an
id of someone else's conversation is "not found", exactly like an id that never existed.

The database is DATA_DIR/chats.sqlite (WAL, one transaction per write: a process killed mid-write
leaves every earlier turn intact and no half-written one), or the shared ``database_url``, where
any instance continues any conversation. Its schema is the chats branch of the migrations
(``chatbot.database``); a database from a newer version is refused instead of being misread.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, or_, select, text
from sqlalchemy.orm import Session

from chatbot.chats.records import (
    ChatStoreError,
    ConversationInfo,
    ConversationNotFoundError,
    Feedback,
    FeedbackRecord,
    SavedTurn,
    Verdict,
)
from chatbot.chats.tables import (
    VERDICT_CODES,
    Conversation,
    FeedbackRow,
    TurnRow,
    feedback_of,
    info_of,
    saved_of,
    title_of,
)
from chatbot.config import Settings
from chatbot.database import DatabaseError, as_engine, database_for, is_sqlite, migrate
from chatbot.rag.answer import Answer
from chatbot.vocabulary import AdapterId, InputError, clean_text

LEGACY_SCHEMA_VERSION = 1  # PRAGMA user_version of chats.sqlite before migrations
SEARCH_CHARS = 200
MAX_ROW_ID = 2**63 - 1  # a 64-bit row id: a larger one cannot name a row
MAX_LISTED = 500


_KEEP: Any = object()  # set_feedback: leave this field as it is


class ChatStore:
    """Conversations, answers and feedback of every owner, in one database."""

    def __init__(self, database: Engine | Path) -> None:
        self._engine = engine = as_engine(database)
        if is_sqlite(engine):
            with engine.connect() as db:  # chats.sqlite of the versions before migrations
                version = db.execute(text("PRAGMA user_version")).scalar_one()
            if version > LEGACY_SCHEMA_VERSION:
                raise ChatStoreError(
                    f"{engine.url.database} has schema version {version}; this version of the app reads up to "
                    f"{LEGACY_SCHEMA_VERSION} (upgrade the app, or move the file away)"
                )
        try:
            migrate(engine, "chats")
        except DatabaseError as exc:
            raise ChatStoreError(str(exc)) from exc

    def close(self) -> None:
        self._engine.dispose()

    # Conversations
    def create(self, owner: str, title: str = "", channel: str = "ui") -> ConversationInfo:
        """A new, empty conversation of ``owner``."""
        now = time.time()
        row = Conversation(
            id=uuid.uuid4().hex, owner=owner, title=title_of(title), channel=channel, created_at=now, updated_at=now
        )
        with Session(self._engine) as db, db.begin():
            db.add(row)
            db.flush()
            return info_of(row, 0)

    def conversations(self, owner: str, search: str = "", limit: int = 100) -> list[ConversationInfo]:
        """``owner``'s conversations, newest first; ``search`` matches titles, questions and answers."""
        count = select(func.count(TurnRow.id)).where(TurnRow.conversation_id == Conversation.id).scalar_subquery()
        last = (
            select(TurnRow.adapter)
            .where(TurnRow.conversation_id == Conversation.id)
            .order_by(TurnRow.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        query = select(Conversation, count, last).where(Conversation.owner == owner)
        needle = " ".join(search.split())[:SEARCH_CHARS]
        if needle:
            pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            in_turns = select(TurnRow.id).where(
                TurnRow.conversation_id == Conversation.id,
                or_(TurnRow.question.ilike(pattern, escape="\\"), TurnRow.answer.ilike(pattern, escape="\\")),
            )
            query = query.where(or_(Conversation.title.ilike(pattern, escape="\\"), in_turns.exists()))
        query = query.order_by(Conversation.updated_at.desc()).limit(max(1, min(limit, MAX_LISTED)))
        with Session(self._engine) as db:
            return [info_of(row, turns, adapter) for row, turns, adapter in db.execute(query)]

    def get(self, owner: str, conversation_id: str) -> ConversationInfo:
        with Session(self._engine) as db:
            row = self._owned(db, owner, conversation_id)
            return _loaded_info(row)

    def turns(self, owner: str, conversation_id: str) -> list[SavedTurn]:
        """The conversation's exchanges in order, with their feedback."""
        with Session(self._engine) as db:
            return [saved_of(turn) for turn in self._owned(db, owner, conversation_id).turns]

    def rename(self, owner: str, conversation_id: str, title: str) -> ConversationInfo:
        if not title.strip():
            raise InputError("the title is empty", param="title")
        with Session(self._engine) as db, db.begin():
            row = self._owned(db, owner, conversation_id)
            row.title = title_of(title)
            return _loaded_info(row)

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
            position = db.scalar(select(func.count(TurnRow.id)).where(TurnRow.conversation_id == row.id)) or 0
            turn = TurnRow(
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
                row.title = title_of(answer.question)
            row.updated_at = now
            db.flush()
            return saved_of(turn)

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
        if verdict is not _KEEP and verdict not in VERDICT_CODES:
            raise InputError("verdict must be 'up', 'down' or null", param="verdict")
        if correction is not _KEEP and correction is not None:
            if len(correction) > max_chars:
                raise InputError(f"the correction has more than {max_chars:,} characters", param="correction")
            correction = clean_text(correction).strip() or None
        with Session(self._engine) as db, db.begin():
            turn = db.get(TurnRow, turn_id) if 0 < turn_id <= MAX_ROW_ID else None
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
            row = turn.feedback or FeedbackRow(turn_id=turn.id, verdict=0, correction=None, wrong_sources="[]")
            if verdict is not _KEEP:
                row.verdict = VERDICT_CODES[verdict]
            if correction is not _KEEP:
                row.correction = correction
            if wrong_sources is not _KEEP:
                row.wrong_sources = json.dumps(list(wrong_sources))
            row.updated_at = time.time()
            turn.feedback = row
            db.flush()
            return feedback_of(row)

    def feedback(
        self, owner: str | None = None, adapter: str | None = None, limit: int | None = None
    ) -> Iterator[FeedbackRecord]:
        """Answers with feedback, newest verdict first (``owner`` None: everyone's, for export/training)."""
        query = select(FeedbackRow, TurnRow, Conversation).join(TurnRow, FeedbackRow.turn_id == TurnRow.id)
        query = query.join(Conversation, TurnRow.conversation_id == Conversation.id)
        if owner is not None:
            query = query.where(Conversation.owner == owner)
        if adapter:
            query = query.where(TurnRow.adapter == adapter)
        query = query.order_by(FeedbackRow.updated_at.desc())
        if limit is not None:
            query = query.limit(limit)
        with Session(self._engine) as db:
            for row, turn, conversation in db.execute(query):
                saved = saved_of(turn, row)
                yield FeedbackRecord(
                    owner=conversation.owner,
                    conversation_id=conversation.id,
                    turn_id=turn.id,
                    adapter=AdapterId(turn.adapter),
                    feedback=saved.feedback or Feedback(),
                    answer=saved.answer,
                    versions=saved.versions,
                    updated_at=row.updated_at,
                )

    def feedback_counts(self) -> dict[str, dict[str, int]]:
        """Per adapter: answers given, thumbs up, thumbs down, corrections, answers with a wrong-source mark."""
        counts: dict[str, dict[str, int]] = {}
        with Session(self._engine) as db:
            for adapter, answers in db.execute(select(TurnRow.adapter, func.count()).group_by(TurnRow.adapter)):
                counts[adapter] = {"answers": answers, "up": 0, "down": 0, "corrected": 0, "wrong_source": 0}
            rows = db.execute(
                select(TurnRow.adapter, FeedbackRow.verdict, FeedbackRow.correction, FeedbackRow.wrong_sources).join(
                    TurnRow, FeedbackRow.turn_id == TurnRow.id
                )
            )
            for adapter, verdict, correction, wrong in rows:
                entry = counts[adapter]
                entry["up"] += verdict == 1
                entry["down"] += verdict == -1
                entry["corrected"] += correction is not None
                entry["wrong_source"] += wrong != "[]"
        return counts

    def feedback_stamp(self) -> list[float]:
        """How many answers have feedback and when the last was given: changes whenever feedback does."""
        with Session(self._engine) as db:
            count, last = db.execute(select(func.count(), func.max(FeedbackRow.updated_at))).one()
        return [count, last or 0.0]

    def _owned(self, db: Session, owner: str, conversation_id: str) -> Conversation:
        row = db.get(Conversation, conversation_id) if isinstance(conversation_id, str) else None
        if row is None or row.owner != owner:
            raise ConversationNotFoundError(f"no conversation {conversation_id!r}")
        return row


def open_chats(settings: Settings, existing: bool = False) -> ChatStore:
    """The conversations of ``settings``: the shared ``database_url``, else DATA_DIR/chats.sqlite.

    With ``existing``, :class:`ChatStoreError` when that file was never made (nothing saved yet).
    """
    if existing and not settings.database_url and not settings.chats_db.is_file():
        raise ChatStoreError(f"no saved conversations yet ({settings.chats_db} does not exist)")
    return ChatStore(database_for(settings.database_url, settings.chats_db))


def _loaded_info(row: Conversation) -> ConversationInfo:
    """The info of a conversation whose turns are loaded: their count and the last one's adapter."""
    return info_of(row, len(row.turns), row.turns[-1].adapter if row.turns else None)
