"""Token generation with the model's chat template: greedy or sampled, streamed or whole.

Every request goes through the one :class:`~chatbot.engine.batching.BatchEngine`, so requests that
arrive together are decoded together; this module turns messages into token ids and token ids
back into text pieces.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import torch

from chatbot.engine.batching import PREFILL_CHUNK, BatchEngine
from chatbot.engine.row_attention import use_row_attention
from chatbot.models.base import BaseModel
from chatbot.vocabulary import BASE_ADAPTER, AdapterId, GenerationParams, GenerationStats, PromptTooLongError

log = logging.getLogger(__name__)

__all__ = ["BASE_ADAPTER", "GenerationParams", "GenerationStats", "Generator", "safe_chat_ids"]


class Generator:
    """Generates on the one base model, routing each request to its adapter.

    ``model`` is the plain transformers model, or the wrapper holding every adapter once the
    adapters package has loaded one (:mod:`chatbot.adapters.lora`); each request names its adapter
    and the engine routes its row to it (:mod:`chatbot.engine.routing`).
    """

    def __init__(
        self,
        base: BaseModel,
        max_batch: int = 8,
        prepack: bool = False,
        prefill_chunk: int = PREFILL_CHUNK,
        max_prompt_tokens: int = 0,
        engine: Callable[[set[int], threading.Lock], Any] | None = None,
        exact: bool = False,
    ) -> None:
        """``prepack``: pack a bf16 model's linear weights for oneDNN (CPU) in the engine's thread.

        ``max_prompt_tokens``: longest prompt accepted (0: the model's context less the answer).
        ``engine``: makes another engine (the ONNX one) from the stop token ids and the lock held
        for each step; None: the transformers :class:`BatchEngine` on ``base.model``.
        ``exact``: a row's tokens never depend on the rows beside it (``exact_batches``): on a CPU
        every linear layer, adapters' included, is packed for oneDNN and runs at least two rows
        (:mod:`chatbot.models.packed`). :attr:`exact_batches` says whether that holds.
        """
        self.base = base
        self.model = base.model
        self.tokenizer = base.tokenizer
        self._lock = threading.Lock()  # held for each forward pass on the shared weights
        self.context_length = int(getattr(base.model.config, "max_position_embeddings", 0) or 0)
        self.max_prompt_tokens = max_prompt_tokens
        self._system_prefix = lru_cache(maxsize=64)(self._encode_system)
        if engine is not None:
            self.engine = engine(_stop_ids(base), self._lock)
            self.exact_batches = bool(getattr(self.engine, "exact", False))
            return
        if base.model.config._attn_implementation == "sdpa":
            use_row_attention(base.model)  # batched answers equal answers alone, to the bit
        self.exact_batches = exact and exact_layers_available(base)
        if exact and not self.exact_batches:
            log.warning("exact_batches: not available on %s (%s); batched answers may differ", base.device, base.dtype)
        self.packed_rows = 0  # set on the engine's thread: the fewest rows a packed layer computes (0: not packed)
        prepare = self._pack if prepack or self.exact_batches else None
        self.engine = BatchEngine(
            lambda: self.model,
            self._lock,
            base.device,
            _stop_ids(base),
            max_batch,
            prepare=prepare,
            prefill_chunk=prefill_chunk,
        )

    def _pack(self) -> None:
        from chatbot.models.packed import EXACT_ROWS

        if pack_model(self.base, self.exact_batches):
            self.packed_rows = EXACT_ROWS if self.exact_batches else 1

    @property
    def injects_adapters(self) -> bool:
        """True when adapters are modules injected into :attr:`model` (the transformers engine); else
        the engine loads adapter files itself (``engine.add_adapter``)."""
        return isinstance(self.engine, BatchEngine)

    @property
    def loaded_adapters(self) -> set[str]:
        """Names of the adapters the engine holds now (not the base model)."""
        if self.injects_adapters:
            return self.engine.routing.loaded(self.model)
        return set(self.engine.loaded_adapters)

    @property
    def exclusive(self) -> threading.Lock:
        """Held during each forward pass; hold it to change the model's modules (adding or removing adapters)."""
        return self._lock

    def attach(self, model: torch.nn.Module) -> None:
        """Use ``model`` (the adapters' wrapper of the base model) from now on."""
        self.model = model

    def forget_adapter(self, adapter: AdapterId) -> None:
        """Drop what was cached for ``adapter`` (call with :attr:`exclusive` held, after changing it)."""
        self.engine.forget_adapter(adapter)

    def prompt_ids(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """The token ids of ``messages`` in the model's chat template (ready for the assistant's turn).

        Only the template's own markup becomes control tokens: message text is tokenised with
        special tokens split, so "<|im_end|><|im_start|>system" typed by a user (or found in a
        document) stays plain text and cannot open a turn of another role.
        """
        return safe_chat_ids(self.tokenizer, messages, add_generation_prompt)

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs inside a message (special-token strings count as the plain text they are)."""
        return len(encode_text(self.tokenizer, text, split=True))

    def prompt_budget(self, params: GenerationParams) -> int | None:
        """The most prompt tokens a request with ``params`` may have (None: no known limit)."""
        if self.max_prompt_tokens:
            return self.max_prompt_tokens
        if not self.context_length:
            return None
        return max(self.context_length - params.max_new_tokens, 0)

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
        adapter: AdapterId = BASE_ADAPTER,
        stats: GenerationStats | None = None,
        cancelled: threading.Event | None = None,
    ) -> Iterator[str]:
        """Yield text pieces as they are decoded; setting ``cancelled`` (any thread) stops the request.

        Raises :class:`~chatbot.vocabulary.PromptTooLongError` before any work when the prompt
        and the answer's ``max_new_tokens`` do not fit the limit.
        """
        stats = stats if stats is not None else GenerationStats()
        started = time.perf_counter()
        prompt = self.prompt_ids(messages)
        stats.prompt_tokens = len(prompt)
        budget = self.prompt_budget(params)
        if budget is not None and len(prompt) > budget:
            raise PromptTooLongError(
                f"the prompt has {len(prompt)} tokens and the answer may take {params.max_new_tokens}; "
                f"at most {budget} prompt tokens fit (shorten the message or the history)",
                param="messages",
            )
        request = self.engine.submit(prompt, adapter, params, self.prefix_length(messages, prompt), cancelled)
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
            stats.token_logprobs = request.logprobs[: stats.new_tokens]
            stats.first_choices = self._choices(request.first_choices)
            stats.ended_by = request.ended_by

    def _choices(self, choices: list[tuple[int, float]]) -> dict[str, float]:
        named: dict[str, float] = {}
        for token, logprob in choices:
            text = self.tokenizer.decode([token], skip_special_tokens=False)
            named[text] = named.get(text, 0.0) + math.exp(logprob)
        return named

    def complete(
        self, messages: Sequence[dict[str, str]], params: GenerationParams, adapter: AdapterId = BASE_ADAPTER
    ) -> str:
        """The whole reply at once."""
        return "".join(self.stream(messages, params, adapter))


_SLOT = "\x00hybrid-chatbot-message-{}\x00"


def safe_chat_ids(tokenizer: Any, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of ``messages`` in ``tokenizer``'s chat template, with no control token made from a message.

    The template is rendered with a placeholder per message; the markup between placeholders is
    tokenised normally (its special tokens are the template's), each message's text with
    special tokens split into ordinary pieces.
    """
    slots = [_SLOT.format(index) for index in range(len(messages))]
    rendered = tokenizer.apply_chat_template(
        [{**message, "content": slot} for message, slot in zip(messages, slots, strict=True)],
        add_generation_prompt=add_generation_prompt,
        tokenize=False,
    )
    ids: list[int] = []
    rest = rendered
    for message, slot in zip(messages, slots, strict=True):
        markup, found, rest = rest.partition(slot)
        if not found:  # a template that drops or rewrites a message: it was not placed verbatim
            raise ValueError("the chat template did not keep a message verbatim; cannot tokenise it safely")
        ids += encode_text(tokenizer, markup, split=False) + encode_text(tokenizer, message["content"], split=True)
    return ids + encode_text(tokenizer, rest, split=False)


_TOKENIZE = threading.Lock()


def encode_text(tokenizer: Any, text: str, split: bool) -> list[int]:
    """Token ids of ``text``, no special tokens added; ``split``: special-token strings stay plain text.

    One call at a time: ``split_special_tokens`` is switched on the shared fast tokenizer for
    the call, so two threads encoding at once could each get the other's setting (seen: the
    template's ``<|im_start|>`` encoded as plain text, or a message's as a control token).
    """
    if not text:
        return []
    with _TOKENIZE:
        return list(tokenizer(text, add_special_tokens=False, split_special_tokens=split)["input_ids"])


def exact_layers_available(base: BaseModel) -> bool:
    """Whether this model's linear layers can be made batch-invariant here (a CPU with oneDNN packing)."""
    from chatbot.models.packed import EXACT_ROWS, packing_works

    if base.device.type != "cpu" or any(  # int8 layers (quantize) are not oneDNN's
        isinstance(m, torch.nn.Linear) and type(m) is not torch.nn.Linear for m in base.model.modules()
    ):
        return False
    return packing_works(base.dtype, EXACT_ROWS)


def pack_model(base: BaseModel, exact: bool = False) -> bool:
    """Pack a CPU model's plain linear layers for oneDNN; False where that does not apply.

    Without ``exact`` only bf16 is packed (same results, faster); with it, bf16 or fp32, each layer
    computing at least two rows so that no row's result depends on its batch.
    """
    from chatbot.models.packed import EXACT_ROWS, pack_linears, packing_works

    if exact:
        return pack_linears(base.model, EXACT_ROWS) > 0
    if base.device.type != "cpu" or base.dtype != torch.bfloat16 or not packing_works(base.dtype):
        return False
    return pack_linears(base.model) > 0


def _stop_ids(base: BaseModel) -> set[int]:
    configured = base.model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if base.tokenizer.eos_token_id is not None:
        ids.add(base.tokenizer.eos_token_id)
    return ids
