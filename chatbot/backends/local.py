"""A LangChain chat model over the local :class:`~chatbot.engine.generation.Generator`.

The adapter is a per-call argument (``llm.bind(adapter="finance")``), never model state; so
are ``stats`` (filled in while generating) and ``cancelled`` (a ``threading.Event`` that stops
the generation when set).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from chatbot.engine.generation import GenerationStats, Generator
from chatbot.vocabulary import BASE_ADAPTER, GenerationParams

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def to_chat_messages(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages -> the role/content dicts that chat templates expect."""
    return [{"role": _ROLES.get(message.type, message.type), "content": str(message.content)} for message in messages]


class StreamingChatModel(BaseChatModel):
    """A chat model defined by :meth:`pieces`; bind ``adapter``, ``stats`` and generation parameters per call."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    params: GenerationParams = GenerationParams()

    def _params(self, kwargs: dict[str, Any]) -> GenerationParams:
        """The default parameters with the call's overrides (``llm.bind(max_new_tokens=...)``)."""
        fields = {name: kwargs[name] for name in GenerationParams.__dataclass_fields__ if name in kwargs}
        return GenerationParams.merged(self.params, fields)

    def pieces(
        self,
        messages: list[dict[str, str]],
        params: GenerationParams,
        adapter: str,
        stats: GenerationStats,
        cancelled: threading.Event | None = None,
    ) -> Iterator[str]:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs in the prompt (an estimate of 4 characters per token here)."""
        return len(text) // 4 + 1

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        stats: GenerationStats = kwargs.get("stats") or GenerationStats()
        adapter = kwargs.get("adapter", BASE_ADAPTER)
        cancelled = kwargs.get("cancelled")
        for piece in self.pieces(to_chat_messages(messages), self._params(kwargs), adapter, stats, cancelled):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(chunk.text for chunk in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class LocalChatModel(StreamingChatModel):
    """Chat model backed by the in-process transformers model and its LoRA adapters."""

    generator: Generator

    @property
    def _llm_type(self) -> str:
        return "hybrid-chatbot-local"

    def count_tokens(self, text: str) -> int:
        return self.generator.count_tokens(text)

    def pieces(
        self,
        messages: list[dict[str, str]],
        params: GenerationParams,
        adapter: str,
        stats: GenerationStats,
        cancelled: threading.Event | None = None,
    ) -> Iterator[str]:
        """The reply's text pieces as they are generated, for ``adapter``."""
        return self.generator.stream(messages, params, adapter, stats, cancelled)
