"""The one seam every chat model backend fills: a LangChain chat model defined by its text pieces.

What a call needs beside the messages is one typed value, :class:`~chatbot.vocabulary.ModelCall`
(``llm.stream(messages, call=ModelCall(adapter=..., stats=..., cancelled=...))``): the adapter, the
generation settings over the model's defaults, the statistics filled in while generating, the event
that stops it. Never model state. ``llm.bind(adapter="finance", max_new_tokens=64)`` works too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
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


def until_stop(pieces: Iterable[str], stops: Sequence[str]) -> Iterator[str]:
    """``pieces`` up to the first of ``stops`` (excluded), then closed (which ends their generation).

    Text that could begin a stop string is held back until the next piece says whether it does,
    so no streamed piece ever shows part of one.
    """
    pieces = iter(pieces)
    try:
        if not stops:
            yield from pieces
            return
        text, shown = "", 0
        for piece in pieces:
            text += piece
            found = [at for at in (text.find(stop, shown) for stop in stops) if at >= 0]
            if found:
                if min(found) > shown:
                    yield text[shown : min(found)]
                return
            ready = len(text) - _stop_prefix(text, stops)
            if ready > shown:
                yield text[shown:ready]
                shown = ready
        if len(text) > shown:
            yield text[shown:]
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def _stop_prefix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins one of ``stops``."""
    return max((size for stop in stops for size in range(1, len(stop)) if text.endswith(stop[:size])), default=0)


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
        stops = (*params.stop, *(stop or ()))  # LangChain's own stop argument (the app's) adds to the call's
        empty = True
        for piece in until_stop(self.pieces(to_chat_messages(messages), params, call), stops):
            empty = False
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        if empty:  # an answer that ends at once (a stop string first) is an empty one, not LangChain's error
            yield ChatGenerationChunk(message=AIMessageChunk(content=""))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(chunk.text for chunk in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])
