"""Generation on a remote OpenAI-compatible server that serves the adapters by model name.

vLLM (``--enable-lora --lora-modules finance=adapters/finance``), LoRAX or another
hybrid-chatbot's ``/v1`` do the decoding; retrieval, prompts and citations stay in this app.
The adapter of a request is sent as ``model``; "base" is sent as ``generation_base_model``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field

from chatbot.adapters.domains import Domain, DomainRegistry, apply_manifest, read_manifest
from chatbot.backends.base import StreamingChatModel
from chatbot.vocabulary import BASE_ADAPTER, AdapterId, GenerationParams, ModelCall

REFRESH_EVERY_S = 10.0


class RemoteChatModel(StreamingChatModel):
    """A LangChain chat model that streams from ``base_url``'s ``/chat/completions``."""

    base_url: str
    api_key: str | None = None
    base_model: str = BASE_ADAPTER
    extra_body: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = 600.0

    @property
    def _llm_type(self) -> str:
        return "hybrid-chatbot-remote"

    @cached_property
    def client(self):  # noqa: ANN201 - openai.OpenAI
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.api_key or "none", timeout=self.timeout_s, max_retries=1)

    def model_id(self, adapter: AdapterId) -> str:
        return self.base_model if adapter == BASE_ADAPTER else adapter

    def pieces(self, messages: list[dict[str, str]], params: GenerationParams, call: ModelCall) -> Iterator[str]:
        """Stream the reply from the remote server, with the adapter as the model name (closed when cancelled)."""
        stats, cancelled = call.stats, call.cancelled
        request: dict[str, Any] = {
            "model": self.model_id(call.adapter),
            "messages": messages,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
            "extra_body": self.extra_body or None,
        }
        if params.temperature > 0:
            request["top_p"] = params.top_p
        if params.seed is not None:
            request["seed"] = params.seed
        if params.stop:
            request["stop"] = list(params.stop)
        started = time.perf_counter()
        stream = self.client.chat.completions.create(**request)
        try:
            for event in stream:
                if cancelled is not None and cancelled.is_set():
                    break
                if getattr(event, "usage", None):
                    stats.prompt_tokens = event.usage.prompt_tokens or 0
                    stats.new_tokens = event.usage.completion_tokens or 0
                for choice in event.choices:
                    if choice.finish_reason:
                        stats.ended_by = "length" if choice.finish_reason == "length" else "stop"
                    piece = choice.delta.content or ""
                    if not piece:
                        continue
                    if stats.first_token_s is None:
                        stats.first_token_s = time.perf_counter() - started
                    yield piece
        finally:
            stream.close()  # cancelled, stopped or done: the remote server sees the disconnect and cancels its work
            stats.seconds = time.perf_counter() - started


class RemoteAdapters(DomainRegistry):
    """The adapters the remote server lists (``GET /models``), with this app's domain manifests.

    Same interface as :class:`~chatbot.adapters.registry.AdapterRegistry`. A local ``adapters/<name>/
    domain.toml`` still gives a remote adapter its display name, system prompt and knowledge scope.
    """

    def __init__(self, llm: RemoteChatModel, folder: Path, base_system_prompt: str) -> None:
        super().__init__(Domain(BASE_ADAPTER, "Base model", f"The remote model {llm.base_model}.", base_system_prompt))
        self.llm = llm
        self.folder = folder
        self._fetched_at = float("-inf")

    def refresh(self, force: bool = False) -> None:
        """Re-read the remote model list (at most every few seconds unless ``force``)."""
        with self._lock:
            if not force and time.monotonic() - self._fetched_at < REFRESH_EVERY_S:
                return
            models = self.llm.client.models.list()
            domains = {}
            for model in models.data:
                if model.id in (self.llm.base_model, BASE_ADAPTER) or not AdapterId.valid(model.id):
                    continue
                domains[model.id] = self._domain(model.id, getattr(model, "description", None) or "")
            self._domains = domains
            self._fetched_at = time.monotonic()

    def _domain(self, name: str, description: str) -> Domain:
        domain = Domain(name, name, description, self.base.system_prompt)
        folder = self.folder / name
        if folder.is_dir():
            try:
                apply_manifest(domain, read_manifest(folder))
            except Exception as exc:  # a bad local manifest: the remote adapter still works, plainly
                domain.warnings.append(f"local domain.toml ignored: {exc}")
        return domain
