"""An OpenAI-compatible API on the app's FastAPI server: ``/v1/models`` and ``/v1/chat/completions``.

``model`` names the adapter ("base" for none). The answer comes from the same retrieval chain
as the chat page; its citations travel in an extra ``citations`` field (the cited sources, in
the same shape as ``chatbot ask --json``'s ``sources``), on the response or on the last stream
chunk, with ``usage``. Send ``"use_retrieval": false`` in the body to skip the knowledge base.

The message list is a conversation: system messages replace the domain's system prompt,
earlier user/assistant pairs are the history (follow-ups are searched with it), and the last
message is the question.

Every request is checked before work starts (4xx in OpenAI's error shape); a client that goes
away cancels its own generation and nothing else; a stream that fails mid-way ends with an
``error`` event and ``[DONE]``.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse

from chatbot.adapters import UnknownAdapterError
from chatbot.answer import Answer
from chatbot.batching import EngineClosedError
from chatbot.http_limits import Admission, stream_in_threads, until_disconnect
from chatbot.openai_schema import APIError, ChatCompletionRequest, split_conversation
from chatbot.service import Chatbot
from chatbot.vocabulary import InputError

log = logging.getLogger(__name__)

Event = str | Answer


def _citations(answer: Answer) -> list[dict[str, Any]]:
    return [asdict(source) for source in answer.sources]


def _verdict(answer: Answer) -> dict[str, Any]:
    """Extras of a finished answer beside OpenAI's fields: whether it is a decline, and why."""
    extras: dict[str, Any] = {"declined": answer.abstained, "decline_reason": answer.decline_reason}
    if answer.abstained:
        extras["considered"] = [asdict(source) for source in answer.retrieved]
    return extras


def _usage(answer: Answer) -> dict[str, int]:
    prompt, completion = answer.usage.get("prompt_tokens", 0), answer.usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def api_error(exc: BaseException) -> APIError:
    """The OpenAI-shaped error for a failure of the chain (unknown adapter, bad input, shutdown, bug)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, UnknownAdapterError):
        return APIError(404, str(exc), "model_not_found", param="model")
    if isinstance(exc, InputError):
        return APIError(400, str(exc), exc.code, param=exc.param)
    if isinstance(exc, EngineClosedError):
        return APIError(503, str(exc), "server_shutting_down", "server_error")
    log.error("request failed", exc_info=exc)
    return APIError(500, f"the answer failed: {type(exc).__name__}: {exc}", "internal_error", "server_error")


def _authorizer(expected: str | None):  # noqa: ANN202 - a FastAPI dependency
    def authorize(authorization: str | None = Header(None)) -> None:
        if not expected:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), expected.encode()):
            raise APIError(401, "missing or wrong API key (Authorization: Bearer ...)", "invalid_api_key")

    return authorize


def create_router(bot: Chatbot) -> APIRouter:
    """The ``/v1`` routes for ``bot``; an API key is required when the ``api_key`` setting is set."""
    router = APIRouter(prefix="/v1", dependencies=[Depends(_authorizer(bot.settings.api_key))])
    admission = Admission(bot.settings.queue_size)

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
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> dict[str, Any] | StreamingResponse:
        system_prompt, history, question = split_conversation(body.messages)
        if not question:
            raise APIError(400, "the last message must be a user message with content", "missing_user_message")
        if not admission.enter():
            raise APIError(
                429,
                "too many requests at once; retry shortly",
                "server_busy",
                "server_error",
                headers={"Retry-After": "2"},
            )
        cancelled = threading.Event()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                admission.leave()

        def start() -> tuple[Iterator[Event], Event | None]:
            events = bot.stream(
                question,
                adapter=body.model,
                use_retrieval=body.use_retrieval,
                history=history,
                system_prompt=system_prompt,
                cancelled=cancelled,
                max_new_tokens=body.max_completion_tokens or body.max_tokens,
                temperature=body.temperature,
                top_p=body.top_p,
                seed=body.seed,
            )
            return events, next(events, None)  # input errors surface here, before any response is sent

        try:
            events, first = await until_disconnect(request, cancelled, start, admission.limiter)
        except Exception as exc:
            cancelled.set()
            release()
            raise api_error(exc) from exc
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if body.stream:
            chunks = _sse(_chained(first, events), completion_id, created, body.model)
            return StreamingResponse(
                stream_in_threads(chunks, cancelled, admission.limiter, release), media_type="text/event-stream"
            )
        try:
            answer = await until_disconnect(request, cancelled, lambda: _last_answer(first, events), admission.limiter)
        except Exception as exc:
            raise api_error(exc) from exc
        finally:
            cancelled.set()
            release()
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer.answer}, "finish_reason": "stop"}
            ],
            "usage": _usage(answer),
            "citations": _citations(answer),
            **_verdict(answer),
        }

    return router


def _chained(first: Event | None, events: Iterator[Event]) -> Iterator[Event]:
    if first is not None:
        yield first
    yield from events


def _last_answer(first: Event | None, events: Iterator[Event]) -> Answer:
    for event in _chained(first, events):
        if isinstance(event, Answer):
            return event
    raise RuntimeError("the chain ended without an answer")


def _sse(events: Iterator[Event], completion_id: str, created: int, model: str) -> Iterator[str]:
    """Server-sent events in OpenAI's chunk format; the last chunk carries the citations.

    A failure after the first chunk ends the stream with an ``error`` event and ``[DONE]``.
    """

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
    try:
        for event in events:
            if isinstance(event, Answer):
                # the finished answer may differ from the raw stream (attributed markers, echo trimmed)
                tail = event.answer[len(streamed) :] if event.answer.startswith(streamed) else ""
                if tail:
                    yield chunk({"content": tail})
                extras = _verdict(event)
                yield chunk({}, "stop", citations=_citations(event), answer=event.answer, usage=_usage(event), **extras)
            else:
                streamed += event
                yield chunk({"content": event})
    except Exception as exc:  # noqa: BLE001 - reported to the client in the stream
        yield f"data: {json.dumps(api_error(exc).body(), ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"
