"""Token generation with the model's chat template: greedy or sampled, streamed or whole.

Every request goes through the one :class:`~chatbot.batching.BatchEngine`, so requests that
arrive together are decoded together; this module turns messages into token ids and token ids
back into text pieces.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from chatbot.batching import BASE_ADAPTER, BatchEngine, GenerationParams
from chatbot.models.base import BaseModel
from chatbot.row_attention import use_row_attention

__all__ = ["BASE_ADAPTER", "GenerationParams", "GenerationStats", "Generator"]


@dataclass
class GenerationStats:
    """Filled in while a stream runs."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    first_token_s: float | None = None
    seconds: float = 0.0


class Generator:
    """Generates on the one base model, routing each request to its adapter.

    ``model`` is either the plain transformers model or a PEFT model holding every adapter;
    the adapter is chosen per request (PEFT's ``adapter_names``) so no global state is switched.
    """

    def __init__(self, base: BaseModel, max_batch: int = 8, prepack: bool = False) -> None:
        """``prepack``: pack a bf16 model's linear weights for oneDNN (CPU) in the engine's thread."""
        self.base = base
        if base.model.config._attn_implementation == "sdpa":
            use_row_attention(base.model)  # batched answers equal answers alone, to the bit
        self.model = base.model
        self.tokenizer = base.tokenizer
        self._lock = threading.Lock()  # held for each forward pass on the shared weights
        prepare = (lambda: pack_model(base)) if prepack else None
        self.engine = BatchEngine(
            lambda: self.model, self._lock, base.device, _stop_ids(base), max_batch, prepare=prepare
        )
        self._system_prefix = lru_cache(maxsize=64)(self._encode_system)

    @property
    def exclusive(self) -> threading.Lock:
        """Held during each forward pass; hold it to change the model's modules (adding or removing adapters)."""
        return self._lock

    def attach(self, model: torch.nn.Module) -> None:
        """Use ``model`` (the PEFT wrapper of the base model) from now on."""
        self.model = model

    def forget_adapter(self, adapter: str) -> None:
        """Drop what was cached for ``adapter`` (call with :attr:`exclusive` held, after changing it)."""
        self.engine.forget_adapter(adapter)

    def prompt_ids(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """The token ids of ``messages`` in the model's chat template (ready for the assistant's turn)."""
        ids = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=add_generation_prompt, tokenize=True
        )
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def _encode_system(self, system: str) -> tuple[int, ...]:
        return tuple(self.prompt_ids([{"role": "system", "content": system}], add_generation_prompt=False))

    def prefix_length(self, messages: Sequence[dict[str, str]], prompt: list[int]) -> int:
        """How many leading prompt tokens are the system message alone (their key/values are reused)."""
        if not messages or messages[0]["role"] != "system":
            return 0
        prefix = self._system_prefix(messages[0]["content"])
        return len(prefix) if tuple(prompt[: len(prefix)]) == prefix else 0

    def stream(
        self,
        messages: Sequence[dict[str, str]],
        params: GenerationParams,
        adapter: str = BASE_ADAPTER,
        stats: GenerationStats | None = None,
    ) -> Iterator[str]:
        """Yield text pieces as they are decoded."""
        stats = stats if stats is not None else GenerationStats()
        started = time.perf_counter()
        prompt = self.prompt_ids(messages)
        stats.prompt_tokens = len(prompt)
        request = self.engine.submit(prompt, adapter, params, self.prefix_length(messages, prompt))
        text = ""
        try:
            for _token in request.token_ids():
                decoded = self.tokenizer.decode(request.generated, skip_special_tokens=True)
                if decoded.endswith("\ufffd"):  # a character split across tokens: wait for the rest
                    continue
                piece, text = decoded[len(text) :], decoded
                if piece:
                    if stats.first_token_s is None:
                        stats.first_token_s = time.perf_counter() - started
                    yield piece
        finally:
            request.cancel()
            stats.new_tokens = len(request.generated)
            stats.seconds = time.perf_counter() - started

    def complete(
        self, messages: Sequence[dict[str, str]], params: GenerationParams, adapter: str = BASE_ADAPTER
    ) -> str:
        """The whole reply at once."""
        return "".join(self.stream(messages, params, adapter))


def pack_model(base: BaseModel) -> bool:
    """Pack a bf16 CPU model's plain linear layers for oneDNN; False where that does not apply."""
    from chatbot.models.packed import pack_linears, packing_works

    if base.device.type != "cpu" or base.dtype != torch.bfloat16 or not packing_works(base.dtype):
        return False
    return pack_linears(base.model) > 0


def _stop_ids(base: BaseModel) -> set[int]:
    configured = base.model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if base.tokenizer.eos_token_id is not None:
        ids.add(base.tokenizer.eos_token_id)
    return ids
