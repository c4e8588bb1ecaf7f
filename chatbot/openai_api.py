"""An OpenAI-compatible API on the app's FastAPI server: ``/v1/models`` and ``/v1/chat/completions``.

``model`` names the adapter ("base" for none). The answer comes from the same retrieval chain
as the chat page; its citations travel in an extra ``citations`` field (the cited sources, in
the same shape as ``chatbot ask --json``'s ``sources``), on the response or on the last stream
chunk, with ``usage``. Send ``"use_retrieval": false`` in the body to skip the knowledge base.

The message list is a conversation: system messages replace the domain's system prompt,
earlier user/assistant pairs are the history (follow-ups are searched with it), and the last
message is the question.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from chatbot.adapters import UnknownAdapterError
from chatbot.answer import Answer
from chatbot.conversation import Turn
from chatbot.service import Chatbot


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | None = ""


class ChatCompletionRequest(BaseModel):
    model: str = "base"
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    use_retrieval: bool = True


class APIError(Exception):
    """An error answered in OpenAI's ``{"error": {...}}`` shape."""

    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "code": self.code, "param": None}}
        return JSONResponse(body, status_code=self.status)


def _citations(answer: Answer) -> list[dict[str, Any]]:
    return [asdict(source) for source in answer.sources]


def _usage(answer: Answer) -> dict[str, int]:
    prompt, completion = answer.usage.get("prompt_tokens", 0), answer.usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def split_conversation(messages: list[ChatMessage]) -> tuple[str | None, list[Turn], str | None]:
    """(system prompt, earlier exchanges, last question) of an OpenAI message list.

    System/developer messages replace the domain's system prompt; user/assistant pairs become
    the history; the last message must be the user's question.
    """
    system = [m.content for m in messages if m.role in ("system", "developer") and m.content]
    dialogue = [m for m in messages if m.role in ("user", "assistant")]
    if not dialogue or dialogue[-1].role != "user" or not (dialogue[-1].content or "").strip():
        return None, [], None
    history: list[Turn] = []
    pending: str | None = None
    for message in dialogue[:-1]:
        if message.role == "user":
            pending = message.content or ""
        elif pending is not None:
            history.append(Turn(pending, message.content or ""))
            pending = None
    return ("\n\n".join(system) or None), history, dialogue[-1].content


def create_router(bot: Chatbot) -> APIRouter:
    """The ``/v1`` routes for ``bot``; an API key is required when the ``api_key`` setting is set."""
    expected = bot.settings.api_key

    def authorize(authorization: str | None = Header(None)) -> None:
        if not expected:
            return
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(token.encode(), expected.encode()):
            raise APIError(401, "missing or wrong API key (Authorization: Bearer ...)", "invalid_api_key")

    router = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

    @router.get("/models")
    def models() -> dict[str, Any]:
        bot.adapters.refresh()
        data = [
            {"id": d.name, "object": "model", "created": 0, "owned_by": "hybrid-chatbot", "description": d.description}
            for d in bot.adapters.list()
            if d.ready
        ]
        return {"object": "list", "data": data}

    @router.post("/chat/completions", response_model=None)
    def chat_completions(request: ChatCompletionRequest) -> dict[str, Any] | StreamingResponse:
        system_prompt, history, question = split_conversation(request.messages)
        if not question:
            raise APIError(400, "the last message must be a user message with content", "missing_user_message")
        generation = {
            "max_new_tokens": request.max_completion_tokens or request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
        }
        try:
            events = bot.stream(
                question,
                adapter=request.model,
                use_retrieval=request.use_retrieval,
                history=history,
                system_prompt=system_prompt,
                **generation,
            )
        except UnknownAdapterError as exc:
            raise APIError(404, str(exc), "model_not_found") from exc
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if request.stream:
            return StreamingResponse(
                _stream(events, completion_id, created, request.model), media_type="text/event-stream"
            )
        answer = next(event for event in events if isinstance(event, Answer))
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": request.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer.answer}, "finish_reason": "stop"}
            ],
            "usage": _usage(answer),
            "citations": _citations(answer),
        }

    return router


def _stream(events: Iterator[str | Answer], completion_id: str, created: int, model: str) -> Iterator[str]:
    """Server-sent events in OpenAI's chunk format; the last chunk carries the citations."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    streamed = ""
    for event in events:
        if isinstance(event, Answer):
            # the finished answer may differ from the raw stream (attributed markers, echo trimmed)
            tail = event.answer[len(streamed) :] if event.answer.startswith(streamed) else ""
            if tail:
                yield chunk({"content": tail})
            yield chunk({}, "stop", citations=_citations(event), answer=event.answer, usage=_usage(event))
        else:
            streamed += event
            yield chunk({"content": event})
    yield "data: [DONE]\n\n"
