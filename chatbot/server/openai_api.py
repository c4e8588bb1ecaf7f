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
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse
from httpx import TransportError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.concurrency import run_in_threadpool

from chatbot.adapters.domains import UnknownAdapterError
from chatbot.app.service import Chatbot
from chatbot.chats import ConversationNotFoundError
from chatbot.engine.request import EngineClosedError
from chatbot.rag.answer import Answer, last_answer
from chatbot.rag.conversation import Turn
from chatbot.server.http_limits import Admission, stream_in_threads, until_disconnect
from chatbot.server.openai_schema import ERROR_RESPONSES, APIError, ChatCompletionRequest, split_conversation
from chatbot.vocabulary import InputError

log = logging.getLogger(__name__)

Event = str | Answer


def _citations(answer: Answer) -> list[dict[str, Any]]:
    return [asdict(source) for source in answer.sources]


def _verdict(answer: Answer) -> dict[str, Any]:
    """Extras of a finished answer beside OpenAI's fields: whether it is a decline, and why."""
    extras: dict[str, Any] = {
        "declined": answer.abstained,
        "decline_reason": answer.decline_reason,  # the machine's; `why` says it in plain words
        "why": answer.why,
    }
    if answer.answerability is not None:  # P(the passages answer the question), rag/answerability.py
        extras["answerability"] = answer.answerability
    if answer.abstained:
        extras["considered"] = [asdict(source) for source in answer.retrieved]
    if answer.evidence:  # the retrieved sentence that best answers the question; content quotes it when quoted
        extras["evidence"] = [asdict(quote) for quote in answer.evidence]
        extras["quoted"] = answer.quoted
    if answer.dropped:  # answer sentences no retrieved passage supports: not in content
        extras["dropped"] = answer.dropped
    return extras


def _usage(answer: Answer) -> dict[str, int]:
    prompt, completion = answer.usage.get("prompt_tokens", 0), answer.usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(answer: Answer) -> str:
    """OpenAI's ``finish_reason``: "length" when the model was stopped at ``max_tokens`` (or in a
    loop) and its answer is shown; a decline in its place is a whole answer ("stop")."""
    return "length" if answer.truncated and not answer.abstained else "stop"


def unavailable_error(exc: BaseException) -> APIError | None:
    """503 with the reason when a shared service the answer needs is away (it recovers by itself)."""
    if isinstance(exc, DBAPIError) and (exc.connection_invalidated or isinstance(exc, OperationalError)):
        reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        return APIError(503, f"the database is unavailable: {reason}", "database_unavailable", "server_error")
    if isinstance(exc, TransportError) or (isinstance(exc, ValueError) and "Chroma server" in str(exc)):
        return APIError(503, f"the vector store is unavailable: {exc}", "vector_store_unavailable", "server_error")
    return None


def api_error(exc: BaseException) -> APIError:
    """The OpenAI-shaped error for a failure of the chain (unknown adapter, bad input, shutdown, bug)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ConversationNotFoundError):
        return APIError(404, str(exc), "conversation_not_found", param="conversation_id")
    if isinstance(exc, UnknownAdapterError):
        return APIError(404, str(exc), "model_not_found", param="model")
    if isinstance(exc, InputError):
        return APIError(400, str(exc), exc.code, param=exc.param)
    if isinstance(exc, EngineClosedError):
        return APIError(503, str(exc), "server_shutting_down", "server_error")
    unavailable = unavailable_error(exc)
    if unavailable is not None:
        return unavailable
    log.error("request failed", exc_info=exc)
    return APIError(500, f"the answer failed: {type(exc).__name__}: {exc}", "internal_error", "server_error")


ANONYMOUS = "api"  # the owner of saved conversations when the API has no keys


def api_owner(keys: dict[str, str]):  # noqa: ANN202 - a FastAPI dependency
    """A dependency that checks the bearer key (when keys are set) and names its owner."""

    def authorize(authorization: str | None = Header(None)) -> str:
        if not keys:
            return ANONYMOUS
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip().encode()
        # every key is compared, so the time taken does not say which one nearly matched
        matches = [name for name, key in keys.items() if secrets.compare_digest(given, key.encode())]
        if scheme.lower() != "bearer" or not matches:
            raise APIError(401, "missing or wrong API key (Authorization: Bearer ...)", "invalid_api_key")
        return matches[0]

    return authorize


def create_router(bot: Chatbot) -> APIRouter:
    """The ``/v1`` routes for ``bot``; an API key is required when the ``api_key`` setting is set."""
    owner_of = api_owner(bot.settings.api_credentials)
    router = APIRouter(prefix="/v1", dependencies=[Depends(owner_of)], responses=ERROR_RESPONSES)
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

    @router.get("/info")
    def info() -> dict[str, Any]:
        """The engine serving, its adapters and the index's counts (``chatbot info`` asks here);
        the server's paths stay out."""
        data = bot.info().to_dict()
        data.pop("paths", None)
        data["base_model"].update(source=None, folder=None, onnx_model=None)
        data["embedding_model"]["folder"] = None
        return data

    @router.post("/chat/completions", response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest, request: Request, owner: str = Depends(owner_of)
    ) -> dict[str, Any] | StreamingResponse:
        system_prompt, history, question = split_conversation(body.messages)
        if not question:
            raise APIError(400, "the last message must be a user message with content", "missing_user_message")
        if body.conversation_id is not None:
            history = await run_in_threadpool(_conversation_history, bot, owner, body.conversation_id, history)
        saving = body.store and bot.settings.save_conversations
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
                stop=body.stop,
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

        def saved(answer: Answer) -> dict[str, Any]:
            record = {"record": answer.to_json()} if body.include_record else {}
            return {**record, **(_save(bot, owner, body.conversation_id, answer) if saving else {})}

        if body.stream:
            drafts = bot.settings.stream_drafts if body.stream_drafts is None else body.stream_drafts
            chunks = _sse(_chained(first, events), completion_id, created, body.model, saved, drafts)
            return StreamingResponse(
                stream_in_threads(chunks, cancelled, admission.limiter, release), media_type="text/event-stream"
            )
        try:
            answer = await until_disconnect(
                request, cancelled, lambda: last_answer(_chained(first, events)), admission.limiter
            )
        except Exception as exc:
            raise api_error(exc) from exc
        finally:
            cancelled.set()
            release()
        stored = await run_in_threadpool(saved, answer)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.reply},
                    "finish_reason": finish_reason(answer),
                }
            ],
            "usage": _usage(answer),
            "citations": _citations(answer),
            **_verdict(answer),
            **stored,
        }

    return router


def _conversation_history(bot: Chatbot, owner: str, conversation_id: str, sent: list[Turn]) -> list[Turn]:
    """The history of a request naming a saved conversation: the client's own if it sent one, else the saved turns."""
    if not bot.settings.save_conversations:
        raise APIError(400, "this server does not save conversations (save_conversations = false)", "conversations_off")
    saved = bot.chats.turns(owner, conversation_id)  # not found (or not the caller's): 404
    return sent or [turn.turn for turn in saved]


def _save(bot: Chatbot, owner: str, conversation_id: str | None, answer: Answer) -> dict[str, Any]:
    """Store the answer; the ids for the response (nothing when saving failed: the answer still goes out)."""
    try:
        remembered = bot.remember(owner, conversation_id, answer, channel="api")
    except Exception:  # noqa: BLE001 - a full disk must not cost the user the answer they waited for
        log.exception("could not save the answer")
        return {}
    if remembered is None:
        return {}
    conversation, turn = remembered
    return {"conversation_id": conversation.id, "turn_id": turn.id}


def _chained(first: Event | None, events: Iterator[Event]) -> Iterator[Event]:
    if first is not None:
        yield first
    yield from events


KEEP_ALIVE_S = 1.0  # how often a checked-only stream says it is still writing


def _sse(
    events: Iterator[Event],
    completion_id: str,
    created: int,
    model: str,
    saved: Callable[[Answer], dict[str, Any]] = lambda _answer: {},
    drafts: bool = True,
) -> Iterator[str]:
    """Server-sent events in OpenAI's chunk format; the last chunk carries the citations and saved ids.

    ``drafts`` false: the model's text is not sent as it comes (the checks may withhold it); SSE
    comments, which clients skip, keep the connection alive until the checked answer is sent whole.
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
    streamed, alive = "", -KEEP_ALIVE_S
    try:
        for event in events:
            if isinstance(event, Answer):
                # the finished answer may differ from the raw stream (attributed markers, echo trimmed)
                reply = event.reply  # the answer as the page shows it, its evidence line included
                tail = reply[len(streamed) :] if reply.startswith(streamed) else ""
                if tail:
                    yield chunk({"content": tail})
                extras = {**_verdict(event), **saved(event)}
                finish = finish_reason(event)
                yield chunk({}, finish, citations=_citations(event), answer=reply, usage=_usage(event), **extras)
            elif drafts:
                streamed += event
                yield chunk({"content": event})
            elif time.monotonic() - alive >= KEEP_ALIVE_S:
                alive = time.monotonic()
                yield ": writing\n\n"
    except Exception as exc:  # noqa: BLE001 - reported to the client in the stream
        yield f"data: {json.dumps(api_error(exc).body(), ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"
