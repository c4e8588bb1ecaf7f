"""Commands as clients of a running ``chatbot serve`` of the same data dir.

Loading the model takes a command 10-25 s; a running server has it loaded. ``chatbot ask``
streams its answer from the server's ``/v1/chat/completions`` (the same chain, checks and
citations; not saved as a conversation), and ``chatbot info`` asks ``/v1/info`` which engine
serves. The server is found through ``DATA_DIR/server.json`` (:mod:`chatbot.server.discovery`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from chatbot.config import Settings
from chatbot.rag.answer import Answer
from chatbot.server.discovery import ServerRecord

ANSWER_TIMEOUT_S = 600.0  # a long answer on a slow CPU; Ctrl-C closes the connection and cancels it


class ServerRefused(RuntimeError):
    """The server answered the request with an error (its message, as the API gives it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _headers(settings: Settings) -> dict[str, str]:
    keys = settings.api_credentials
    return {"Authorization": f"Bearer {next(iter(keys.values()))}"} if keys else {}


def _refusal(response: httpx.Response) -> ServerRefused:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300] or response.reason_phrase
    return ServerRefused(response.status_code, message)


def ask_server(server: ServerRecord, settings: Settings, question: str, **options: Any) -> Iterator[str | Answer]:
    """The answer to ``question`` from ``server``, as ``Chatbot.stream`` gives it: the model's text
    as it is written, then the finished :class:`Answer`. ``options`` are the request's fields
    (``model``, ``use_retrieval``, ``max_tokens``, ``temperature``, ...; None values are left out)."""
    body = {
        "messages": [{"role": "user", "content": question}],
        "stream": True,
        "stream_drafts": True,
        "store": False,
        "include_record": True,
        **{key: value for key, value in options.items() if value is not None},
    }
    timeout = httpx.Timeout(ANSWER_TIMEOUT_S, connect=5.0)
    with httpx.stream(
        "POST", server.url + "/v1/chat/completions", json=body, headers=_headers(settings), timeout=timeout
    ) as response:
        if response.status_code != 200:
            response.read()
            raise _refusal(response)
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if "error" in chunk:
                raise ServerRefused(500, chunk["error"].get("message", "the answer failed"))
            if "record" in chunk:
                yield Answer.from_json(chunk["record"])
                return
            for choice in chunk.get("choices") or []:
                if content := (choice.get("delta") or {}).get("content"):
                    yield content
    raise ServerRefused(502, "the server's stream ended without an answer")


def server_info(server: ServerRecord, settings: Settings) -> dict[str, Any]:
    """``/v1/info`` of ``server``: the engine serving, its adapters and the index's counts."""
    response = httpx.get(server.url + "/v1/info", headers=_headers(settings), timeout=10.0)
    if response.status_code != 200:
        raise _refusal(response)
    return response.json()
