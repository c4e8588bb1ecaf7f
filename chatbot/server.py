"""One FastAPI app: the Gradio page at ``/`` and a health check, served by uvicorn."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI

from chatbot.config import Settings
from chatbot.service import Chatbot

log = logging.getLogger(__name__)


def create_app(bot: Chatbot) -> FastAPI:
    """The ASGI app for ``bot`` (the knowledge folder is synced before this is called)."""
    import gradio as gr

    from chatbot.openai_api import APIError, create_router
    from chatbot.ui import build_ui

    api = FastAPI(title="hybrid-chatbot")
    api.include_router(create_router(bot))
    api.add_exception_handler(APIError, lambda _request, exc: exc.response())

    @api.get("/health")
    def health() -> dict:
        status = bot.status()
        return {"status": "ok", "documents": status.documents, "chunks": status.chunks}

    return gr.mount_gradio_app(api, build_ui(bot).queue(default_concurrency_limit=1), path="/")


def run(settings: Settings) -> None:
    """Sync, load the model, and serve until interrupted."""
    import uvicorn

    started = time.perf_counter()
    bot = Chatbot(settings)
    report = bot.sync()
    for path, reason in report.errors.items():
        log.warning("not indexed: %s: %s", path, reason)
    bot.chain  # load the model before accepting requests  # noqa: B018
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
