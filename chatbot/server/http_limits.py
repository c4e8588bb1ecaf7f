"""Request bounds and cancellation for the HTTP server: body size, admission, client disconnects.

Starlette has no request-body limit and runs a sync endpoint to its end after the client left;
these are the small pieces that add both.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anyio
from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

T = TypeVar("T")


class BodyTooLarge(HTTPException):
    """The request body is over the limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit:,} bytes (setting max_request_kb)")
        self.limit = limit


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes before reading them (declared or streamed).

    Paths starting with one of ``exempt`` (Gradio's upload route, which enforces its own file
    size limit while streaming to disk) pass untouched.
    """

    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _send_json(
                send,
                413,
                {
                    "error": {
                        "message": BodyTooLarge(self.limit).detail,
                        "type": "invalid_request_error",
                        "code": "request_too_large",
                        "param": None,
                    }
                },
            )
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


def too_large_body(limit: int) -> dict[str, Any]:
    """The 413 error body, in the OpenAI shape the API uses for every error."""
    message = BodyTooLarge(limit).detail
    return {"error": {"message": message, "type": "invalid_request_error", "code": "request_too_large", "param": None}}


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class Admission:
    """At most ``limit`` requests at once; the next one is refused at once (429), never queued unboundedly."""

    def __init__(self, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self.limiter = anyio.CapacityLimiter(limit)  # worker threads for admitted requests only

    def enter(self) -> bool:
        return self._slots.acquire(blocking=False)

    def leave(self) -> None:
        self._slots.release()


async def watch_disconnect(request: Request, cancelled: threading.Event) -> None:
    """Set ``cancelled`` when the client goes away (the request body must already be read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancelled.set()
            return


async def until_disconnect(
    request: Request, cancelled: threading.Event, work: Callable[[], T], limiter: anyio.CapacityLimiter
) -> T:
    """Run ``work`` in a worker thread; if the client disconnects meanwhile, set ``cancelled``."""
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(watch_disconnect, request, cancelled)
        try:
            result = await anyio.to_thread.run_sync(work, limiter=limiter)
        except Exception as exc:  # raised below, outside the task group (which would wrap it in a group)
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


async def stream_in_threads(
    items: Iterator[str], cancelled: threading.Event, limiter: anyio.CapacityLimiter, done: Callable[[], None]
) -> AsyncIterator[str]:
    """``items`` read in worker threads for a streaming response.

    When the response stops early (client gone, server stopping) ``cancelled`` is set at once:
    the waiting thread is abandoned, not awaited, and returns as soon as the engine drops the row.
    ``done`` runs once, however the stream ends.
    """
    sentinel = object()
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, items, sentinel, abandon_on_cancel=True, limiter=limiter)
            if item is sentinel:
                return
            yield item
    finally:
        cancelled.set()
        done()
