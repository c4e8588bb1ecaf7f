"""``/v1/conversations``: the caller's saved conversations, their answers, and feedback on an answer.

Behind the same API keys as ``/v1/chat/completions``; each key sees only its own conversations
(another key's conversation id is answered 404, like one that does not exist). Without keys every
client is one owner, so the list is refused (403): a conversation is then reachable only by its
id, a random 128-bit token that only the client that started it was given.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from chatbot.app.service import Chatbot
from chatbot.chats import SavedTurn, source_changes
from chatbot.chats.records import TITLE_CHARS
from chatbot.chats.store import MAX_ROW_ID, SEARCH_CHARS
from chatbot.server.openai_api import api_owner
from chatbot.server.openai_schema import ERROR_RESPONSES, APIError


class Rename(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=TITLE_CHARS * 4)


class FeedbackBody(BaseModel):
    """Only the fields sent are changed; ``verdict: null`` clears the thumbs."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["up", "down"] | None = None
    correction: str | None = None
    wrong_sources: list[Annotated[int, Field(ge=1, le=MAX_ROW_ID)]] | None = Field(None, max_length=100)


def _turn_json(turn: SavedTurn, current: dict[str, str]) -> dict[str, Any]:
    return {
        "turn_id": turn.id,
        "created": turn.created_at,
        **turn.answer.to_json(),
        "feedback": asdict(turn.feedback) if turn.feedback else None,
        "source_changes": source_changes(turn.versions, current),
    }


def create_conversation_router(bot: Chatbot) -> APIRouter:
    """List, read, rename and delete saved conversations; give feedback on an answer."""
    router = APIRouter(prefix="/v1/conversations", responses=ERROR_RESPONSES)
    owner_of = api_owner(bot.settings.api_credentials)

    def store():  # noqa: ANN202 - ChatStore
        if not bot.settings.save_conversations:
            raise APIError(404, "this server does not save conversations (save_conversations = false)", "not_found")
        return bot.chats

    @router.get("")
    def conversations(
        search: str = Query("", max_length=SEARCH_CHARS),
        limit: int = Query(50, ge=1, le=500),
        owner: str = Depends(owner_of),
    ) -> dict[str, Any]:
        if not bot.settings.api_credentials:  # every keyless client is one owner: a list would show them all
            raise APIError(
                403,
                "listing saved conversations needs an API key (setting api_key); without one, a conversation "
                "is reachable only by the conversation_id its answers returned",
                "api_key_required",
            )
        found = store().conversations(owner, search, limit)
        return {"object": "list", "data": [asdict(conversation) for conversation in found]}

    @router.get("/{conversation_id}")
    def conversation(conversation_id: str, owner: str = Depends(owner_of)) -> dict[str, Any]:
        info = store().get(owner, conversation_id)
        current = bot.knowledge.file_versions()
        turns = [_turn_json(turn, current) for turn in bot.chats.turns(owner, conversation_id)]
        return {**asdict(info), "messages": turns}

    @router.patch("/{conversation_id}")
    def rename(conversation_id: str, body: Rename, owner: str = Depends(owner_of)) -> dict[str, Any]:
        return asdict(store().rename(owner, conversation_id, body.title))

    @router.delete("/{conversation_id}")
    def delete(conversation_id: str, owner: str = Depends(owner_of)) -> dict[str, Any]:
        store().delete(owner, conversation_id)
        return {"id": conversation_id, "deleted": True}

    @router.put("/{conversation_id}/turns/{turn_id}/feedback")
    def feedback(
        conversation_id: str,
        body: FeedbackBody,
        turn_id: int = Path(ge=1, le=MAX_ROW_ID),
        owner: str = Depends(owner_of),
    ) -> dict:
        changes = body.model_dump(exclude_unset=True)
        if "wrong_sources" in changes:
            changes["wrong_sources"] = changes["wrong_sources"] or []
        limit = bot.settings.max_message_chars
        saved = store().set_feedback(owner, turn_id, max_chars=limit, conversation_id=conversation_id, **changes)
        return {"turn_id": turn_id, **asdict(saved)}

    return router
