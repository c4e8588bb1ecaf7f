"""Read-only routes for what the pages link to: knowledge documents and adapters' loss plots."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from chatbot.knowledge.documents import DocumentError, resolve_document

if TYPE_CHECKING:
    from chatbot.app.service import Chatbot

_INLINE_TEXT = {".md", ".markdown", ".txt", ".csv", ".json"}
_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def create_file_router(bot: Chatbot, authorized: Callable[[Request], bool]) -> APIRouter:
    """``GET /files/<path>`` (indexed documents only) and ``GET /adapter-files/<name>/loss.png``."""
    router = APIRouter()

    def check(request: Request) -> None:
        if not authorized(request):
            raise HTTPException(401, "log in first")

    @router.get("/files/{relative:path}", include_in_schema=False)
    def document(relative: str, request: Request) -> FileResponse:
        check(request)
        root = bot.settings.knowledge_dir
        try:
            path = resolve_document(root, relative)
        except DocumentError as exc:
            raise HTTPException(404, str(exc)) from exc
        if relative not in bot.knowledge.files():
            raise HTTPException(404, f"not an indexed document: {relative}")
        suffix = path.suffix.lower()
        headers = dict(_HEADERS)
        if suffix == ".pdf":
            return FileResponse(path, media_type="application/pdf", headers=headers, content_disposition_type="inline")
        if suffix in _INLINE_TEXT:
            return FileResponse(path, media_type="text/plain; charset=utf-8", headers=headers)
        if suffix in (".html", ".htm"):
            headers["Content-Security-Policy"] = "sandbox"  # a document's scripts never run as this app
            return FileResponse(path, media_type="text/html", headers=headers)
        return FileResponse(path, headers=headers, filename=path.name)

    @router.get("/adapter-files/{name}/loss.png", include_in_schema=False)
    def loss_plot(name: str, request: Request) -> FileResponse:
        check(request)
        domain = bot.adapters.find(name)
        plot = domain.folder / "loss.png" if domain and domain.ready and domain.folder is not None else None
        if plot is None or not plot.is_file() or plot.is_symlink():
            raise HTTPException(404, f"no loss plot for {name!r}")
        return FileResponse(plot, media_type="image/png", headers=_HEADERS)

    return router
