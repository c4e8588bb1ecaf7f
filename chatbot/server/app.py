"""One FastAPI app: the Gradio page at ``/``, the ``/v1`` API, document links and a health check."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from httpx import TransportError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatbot.app.service import Chatbot
from chatbot.config import Settings
from chatbot.server.discovery import ServerRecord, local_url, new_instance_id, remove_record, write_record

log = logging.getLogger(__name__)

CSS = """
.source-quote mark { background: #fde68a; padding: 0 2px; border-radius: 2px; }
.answer-label { color: var(--body-text-color-subdued); font-size: 0.85em; }
.secondary-sources { opacity: 0.75; }
"""


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's own refusals (a body that is not UTF-8 JSON, a method a route lacks) in OpenAI's
    error shape under ``/v1``, as every other refusal there; elsewhere FastAPI's default."""
    from chatbot.server.openai_schema import APIError

    if not request.url.path.startswith("/v1/"):
        return await http_exception_handler(request, exc)
    code = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = f"the body is not valid JSON: {exc.detail}" if exc.status_code == 400 else str(exc.detail)
    return APIError(exc.status_code, message, code, headers=exc.headers).response()


def _v1_fallback(api: FastAPI) -> None:
    """Answer any other ``/v1`` request in OpenAI's error shape: 405 with ``Allow`` for a route's
    wrong method, 404 for no route (the Gradio app mounted at "/" would answer ``{"detail": ...}``)."""
    from starlette.routing import Match

    from chatbot.server.openai_schema import APIError

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    routes = list(api.router.routes)  # the API's routes so far, without this one

    @api.api_route("/v1/{rest:path}", methods=methods, include_in_schema=False)
    def v1_fallback(rest: str, request: Request) -> None:
        path = request.url.path
        allowed = sorted(
            method
            for method in methods
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
        )
        if allowed:
            raise APIError(
                405,
                f"{request.method} is not allowed on {path}; use {', '.join(allowed)}",
                "method_not_allowed",
                headers={"Allow": ", ".join(allowed)},
            )
        raise APIError(404, f"no such API route: {path}", "not_found")


def _gradio_login_check(api: FastAPI) -> Callable[[Request], bool]:
    """Whether a request carries the Gradio login cookie (document links are behind the same login)."""
    from gradio.routes import App

    gradio_app = next(route.app for route in api.routes if isinstance(getattr(route, "app", None), App))

    def logged_in(request: Request) -> bool:
        if not gradio_app.auth:
            return True
        cookie = gradio_app.cookie_id
        token = request.cookies.get(f"access-token-{cookie}") or request.cookies.get(f"access-token-unsecure-{cookie}")
        return token is not None and token in gradio_app.tokens

    return logged_in


def create_app(bot: Chatbot, instance: str | None = None) -> FastAPI:
    """The ASGI app for ``bot`` (the knowledge folder is synced before this is called)."""
    import gradio as gr

    from chatbot.chats import ConversationNotFoundError
    from chatbot.server.conversation_routes import create_conversation_router
    from chatbot.server.file_routes import create_file_router
    from chatbot.server.http_limits import BodyLimit, BodyTooLarge, too_large_body
    from chatbot.server.openai_api import api_error, create_router
    from chatbot.server.openai_schema import APIError, validation_error
    from chatbot.ui import build_ui
    from chatbot.vocabulary import InputError

    s = bot.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        bot.close()  # the watchers stop

    # The schema pages describe the API to anyone who reaches them: only when nothing is behind a login.
    open_docs = not (s.ui_auth or s.api_credentials)
    api = FastAPI(
        title="hybrid-chatbot",
        lifespan=lifespan,
        docs_url="/docs" if open_docs else None,
        redoc_url="/redoc" if open_docs else None,
        openapi_url="/openapi.json" if open_docs else None,
    )
    if not open_docs:  # closed here, or the mounted Gradio app would answer them with its own schema

        @api.get("/openapi.json", include_in_schema=False)
        @api.get("/docs", include_in_schema=False)
        @api.get("/redoc", include_in_schema=False)
        def no_schema() -> None:
            raise HTTPException(404, "not found")

    schema = api.openapi

    def openapi() -> dict[str, Any]:  # bad input is answered 400 in OpenAI's shape, never FastAPI's 422
        document = schema()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        return document

    api.openapi = openapi  # type: ignore[method-assign]
    api.include_router(create_router(bot))
    api.include_router(create_conversation_router(bot))
    api.add_exception_handler(APIError, lambda _request, exc: exc.response())
    for failure in (ConversationNotFoundError, InputError):
        api.add_exception_handler(failure, lambda _request, exc: api_error(exc).response())
    api.add_exception_handler(
        RequestValidationError,
        lambda request, exc: validation_error(exc, request.headers.get("content-type")).response(),
    )
    api.add_exception_handler(BodyTooLarge, lambda _request, exc: JSONResponse(too_large_body(exc.limit), 413))
    api.add_exception_handler(StarletteHTTPException, _http_error)
    for away in (DBAPIError, TransportError):  # the database or the Chroma server: 503 with the reason
        api.add_exception_handler(away, lambda _request, exc: api_error(exc).response())
    # Gradio's upload route streams files to disk under its own max_file_size; every other body is bounded here.
    api.add_middleware(BodyLimit, limit=s.max_request_kb * 1024, exempt=("/gradio_api/upload", "/upload"))
    _v1_fallback(api)
    # Routes must be added before Gradio is mounted at "/" (which would catch them), but the login
    # check needs the mounted Gradio app: the router gets a callable filled in after mounting.
    login_check: list[Callable[[Request], bool]] = []
    api.include_router(create_file_router(bot, lambda request: login_check[0](request)))

    @api.get("/health")
    def health() -> JSONResponse:
        """200 when this instance can answer; 503 with the reasons when the database or vector store is away."""
        body: dict[str, Any] = {**bot.engine_load(), **bot.syncer()}
        if instance:
            body["instance"] = instance
        problems = bot.problems()
        if problems:
            return JSONResponse({"status": "unavailable", "unavailable": problems, **body}, status_code=503)
        status = bot.status()
        return JSONResponse({"status": "ok", "documents": status.documents, "chunks": status.chunks, **body})

    if s.ui_auth and not s.api_credentials:
        log.warning("ui_auth is set but api_key is not: the /v1 API is open to anyone who can reach the server")
    blocks = build_ui(bot).queue(default_concurrency_limit=s.concurrency_limit, max_size=s.queue_size)
    app = gr.mount_gradio_app(
        api,
        blocks,
        path="/",
        auth=list(s.ui_auth.items()) if s.ui_auth else None,
        auth_message="hybrid-chatbot: log in to chat with the knowledge base.",
        max_file_size=int(s.max_upload_mb * 1_000_000),
        css=CSS,
        footer_links=["api"],
    )
    login_check.append(_gradio_login_check(app))
    # Gradio checks that a file handed to an event was uploaded (not any server path) only for apps
    # it launched itself; mounted, it would copy whatever path a forged request names into its cache.
    blocks.has_launched = True
    return app


class ExposureError(RuntimeError):
    """Serving on a non-loopback address with an open page or API, without ``allow_unauthenticated``."""


def exposure(settings: Settings) -> list[str]:
    """What anyone who reaches ``settings.host`` could use without a login or key (empty on loopback)."""
    host = settings.host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return []
    open_parts = []
    if not settings.ui_auth:
        open_parts.append(
            "the chat page (no ui_auth): anyone can ask, read every indexed document, upload files into "
            "the knowledge folder and move documents to the trash"
        )
    if not settings.api_credentials:
        open_parts.append(
            "the /v1 API (no api_key): anyone can ask, with any adapter; saved API conversations are not "
            "listed, but readable by whoever has a conversation id"
        )
    return open_parts


def check_exposure(settings: Settings) -> list[str]:
    """:func:`exposure`, refused with :class:`ExposureError` unless ``allow_unauthenticated`` is set."""
    open_parts = exposure(settings)
    if open_parts and not settings.allow_unauthenticated:
        raise ExposureError(
            f"refusing to serve on {settings.host} without a login or key: "
            + "; ".join(open_parts)
            + ". Set ui_auth and api_key, bind 127.0.0.1, or pass --allow-unauthenticated "
            "(setting allow_unauthenticated) to serve it open."
        )
    return open_parts


def run(settings: Settings) -> None:
    """Sync, load the model, and serve until interrupted (refused first if it would be open to a network)."""
    for part in check_exposure(settings):
        log.warning("open to the network: %s", part)
        print(f"warning: open to the network: {part}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    bot = Chatbot(settings)
    bot.load()  # before the sync, so its embedding runs on the model's thread
    if not bot.shared:  # instances sharing a database: the elected syncer syncs, in the background
        report = bot.sync(show_progress=sys.stderr.isatty())  # a first index or a re-build can take minutes
        if report.rebuilt:
            log.warning("re-indexed every file: %s", report.rebuilt)
        for path, reason in report.errors.items():
            log.warning("not indexed: %s: %s", path, reason)
    bot.chain  # noqa: B018
    bot.watch()
    bot.watch_adapters()
    record = ServerRecord(local_url(settings.host, settings.port), os.getpid(), new_instance_id())
    app = create_app(bot, record.instance)
    print(
        f"hybrid-chatbot ready in {time.perf_counter() - started:.1f}s: "
        f"http://{settings.host}:{settings.port}/ ({bot.status().chunks} chunks)",
        flush=True,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        # after SIGTERM, requests still open after this long are cancelled
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
    )
    # once it listens, `chatbot ask` and `chatbot info` of this data dir use it instead of loading the model
    try:
        _Server(config, bot, lambda: write_record(settings.data_dir, record)).run()
    finally:
        remove_record(settings.data_dir, record)
        bot.close()


class _Server(uvicorn.Server):
    """uvicorn's server, which says when it listens, and on the first SIGTERM/SIGINT also ends every
    open answer at once."""

    def __init__(self, config: uvicorn.Config, bot: Chatbot, on_listening: Callable[[], object]) -> None:
        super().__init__(config)
        self.bot = bot
        self.on_listening = on_listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_listening()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.bot.stop_generating()
        super().handle_exit(sig, frame)
