"""One FastAPI app: the Gradio page at ``/``, the ``/v1`` API, document links and a health check."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request

from chatbot.config import Settings
from chatbot.service import Chatbot

log = logging.getLogger(__name__)

CSS = """
.source-quote mark { background: #fde68a; padding: 0 2px; border-radius: 2px; }
.answer-label { color: var(--body-text-color-subdued); font-size: 0.85em; }
.secondary-sources { opacity: 0.75; }
"""


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


def create_app(bot: Chatbot) -> FastAPI:
    """The ASGI app for ``bot`` (the knowledge folder is synced before this is called)."""
    import gradio as gr

    from chatbot.file_routes import create_file_router
    from chatbot.openai_api import APIError, create_router
    from chatbot.ui import build_ui

    s = bot.settings
    api = FastAPI(title="hybrid-chatbot")
    api.include_router(create_router(bot))
    api.add_exception_handler(APIError, lambda _request, exc: exc.response())
    # Routes must be added before Gradio is mounted at "/" (which would catch them), but the login
    # check needs the mounted Gradio app: the router gets a callable filled in after mounting.
    login_check: list[Callable[[Request], bool]] = []
    api.include_router(create_file_router(bot, lambda request: login_check[0](request)))

    @api.get("/health")
    def health() -> dict:
        status = bot.status()
        return {"status": "ok", "documents": status.documents, "chunks": status.chunks}

    if s.ui_auth and not s.api_key:
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
    return app


def run(settings: Settings) -> None:
    """Sync, load the model, and serve until interrupted."""
    import uvicorn

    started = time.perf_counter()
    bot = Chatbot(settings)
    bot.load()  # before the sync, so its embedding runs on the model's thread
    report = bot.sync()
    for path, reason in report.errors.items():
        log.warning("not indexed: %s: %s", path, reason)
    bot.chain  # noqa: B018
    bot.watch()
    bot.watch_adapters()
    app = create_app(bot)
    print(
        f"hybrid-chatbot ready in {time.perf_counter() - started:.1f}s: "
        f"http://{settings.host}:{settings.port}/ ({bot.status().chunks} chunks)",
        flush=True,
    )
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    finally:
        bot.close()
