"""A small model hub on loopback: the few routes of the Hugging Face hub API that
``huggingface_hub.snapshot_download`` calls, serving model folders the tests write."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from tests.servers import free_port


class Hub:
    """Repositories by id, each a folder and a fixed commit; counts file downloads."""

    def __init__(self) -> None:
        self.repos: dict[str, Path] = {}
        self.downloads = 0

    def add(self, repo_id: str, folder: Path) -> str:
        self.repos[repo_id] = folder
        return self.commit(repo_id)

    def commit(self, repo_id: str) -> str:
        return hashlib.sha1(repo_id.encode()).hexdigest()

    def folder(self, repo_id: str) -> Path:
        if repo_id not in self.repos:
            raise HTTPException(404, headers={"X-Error-Code": "RepoNotFound"})
        return self.repos[repo_id]

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.get("/api/models/{owner}/{name}/revision/{revision}")
        def info(owner: str, name: str, revision: str) -> dict:
            repo = f"{owner}/{name}"
            files = sorted(p.name for p in self.folder(repo).iterdir())
            return {"id": repo, "sha": self.commit(repo), "siblings": [{"rfilename": f} for f in files]}

        @api.get("/api/models/{owner}/{name}/tree/{revision}")
        def tree(owner: str, name: str, revision: str) -> JSONResponse:
            folder = self.folder(f"{owner}/{name}")
            entries = [
                {"type": "file", "path": p.name, "size": p.stat().st_size, "oid": _oid(p)}
                for p in sorted(folder.iterdir())
            ]
            return JSONResponse(entries)

        @api.api_route("/{owner}/{name}/resolve/{revision}/{filename}", methods=["GET", "HEAD"])
        def resolve(owner: str, name: str, revision: str, filename: str, request: Request) -> Response:
            repo = f"{owner}/{name}"
            path = self.folder(repo) / filename
            if not path.is_file():
                raise HTTPException(404, headers={"X-Error-Code": "EntryNotFound"})
            headers = {"X-Repo-Commit": self.commit(repo), "ETag": f'"{_oid(path)}"'}
            if request.method == "HEAD":
                return Response(headers={**headers, "Content-Length": str(path.stat().st_size)})
            self.downloads += 1
            return FileResponse(path, headers=headers)

        return api


def _oid(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@contextmanager
def running_hub(hub: Hub) -> Iterator[str]:
    """The hub's URL while it serves (uvicorn in a thread)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(hub.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
