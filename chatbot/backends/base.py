"""The one seam every chat model backend fills: a LangChain chat model defined by its text pieces.

What a call needs beside the messages is one typed value, :class:`~chatbot.vocabulary.ModelCall`
(``llm.stream(messages, call=ModelCall(adapter=..., stats=..., cancelled=...))``): the adapter, the
generation settings over the model's defaults, the statistics filled in while generating, the event
that stops it. Never model state. ``llm.bind(adapter="finance", max_new_tokens=64)`` works too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from chatbot.vocabulary import GenerationParams, ModelCall

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def to_chat_messages(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages -> the role/content dicts that chat templates expect."""
    return [{"role": _ROLES.get(message.type, message.type), "content": str(message.content)} for message in messages]


class StreamingChatModel(BaseChatModel):
    """A chat model defined by :meth:`pieces`; each call's options are a :class:`ModelCall`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    params: GenerationParams = GenerationParams()

    def pieces(self, messages: list[dict[str, str]], params: GenerationParams, call: ModelCall) -> Iterator[str]:
        """The reply's text pieces as they are generated, on ``call.adapter`` (stops when ``call.cancelled``)."""
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
        call = ModelCall.of(kwargs)
        params = GenerationParams.merged(self.params, dict(call.overrides))
        for piece in self.pieces(to_chat_messages(messages), params, call):
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
