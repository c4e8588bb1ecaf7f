"""A LangChain chat model over the local :class:`~chatbot.engine.generation.Generator`."""

from __future__ import annotations

from collections.abc import Iterator

from chatbot.backends.base import StreamingChatModel
from chatbot.engine.generation import Generator
from chatbot.vocabulary import GenerationParams, ModelCall


class LocalChatModel(StreamingChatModel):
    """Chat model backed by the in-process transformers model and its LoRA adapters."""

    generator: Generator

    @property
    def _llm_type(self) -> str:
        return "hybrid-chatbot-local"

    def count_tokens(self, text: str) -> int:
        return self.generator.count_tokens(text)

    def pieces(self, messages: list[dict[str, str]], params: GenerationParams, call: ModelCall) -> Iterator[str]:
        return self.generator.stream(messages, params, call.adapter, call.stats, call.cancelled)
