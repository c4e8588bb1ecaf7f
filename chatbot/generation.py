"""Token generation with the model's chat template: greedy or sampled, streamed or whole."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from chatbot.models.base import BaseModel

BASE_ADAPTER = "base"
_PEFT_BASE = "__base__"  # PEFT's name for "no adapter" inside a mixed batch


@dataclass(frozen=True)
class GenerationParams:
    """Decoding limits; ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.9
    seed: int | None = None


class LoopStop(StoppingCriteria):
    """Stop once the last ``window`` generated tokens already occurred earlier in the reply.

    Tiny models fall into verbatim loops; copying from the prompt is not affected because
    only the generated part is compared.
    """

    def __init__(self, prompt_length: int, window: int = 24) -> None:
        self.prompt_length = prompt_length
        self.window = window

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        generated = input_ids[:, self.prompt_length :]
        if generated.shape[1] < 2 * self.window:
            return done
        tail = generated[:, -self.window :]
        earlier = generated[:, : -self.window].unfold(1, self.window, 1)  # (batch, positions, window)
        return (earlier == tail[:, None, :]).all(-1).any(-1)


@dataclass
class GenerationStats:
    """Filled in while a stream runs."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    first_token_s: float | None = None
    seconds: float = 0.0


class Generator:
    """Runs ``generate`` on the one base model, routing each call to its adapter.

    ``model`` is either the plain transformers model or a PEFT model holding every adapter;
    the adapter is chosen per call with ``adapter_names`` so no global state is switched.
    """

    def __init__(self, base: BaseModel) -> None:
        self.base = base
        self.model = base.model
        self.tokenizer = base.tokenizer
        self._lock = threading.Lock()  # one generate at a time on the shared weights

    @property
    def exclusive(self) -> threading.Lock:
        """Held while generating; hold it to change the model's modules (adding or removing adapters)."""
        return self._lock

    def attach(self, model: torch.nn.Module) -> None:
        """Use ``model`` (the PEFT wrapper of the base model) from now on."""
        self.model = model

    def encode(self, messages: Sequence[dict[str, str]]) -> dict[str, torch.Tensor]:
        """Apply the model's chat template and tokenize, ready for ``generate``."""
        encoded = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return {key: value.to(self.base.device) for key, value in encoded.items()}

    def _generate_kwargs(self, params: GenerationParams, adapter: str) -> dict:
        kwargs: dict = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if hasattr(self.model, "peft_config"):
            kwargs["adapter_names"] = [_PEFT_BASE if adapter == BASE_ADAPTER else adapter]
        elif adapter != BASE_ADAPTER:
            raise ValueError(f"adapter {adapter!r} is not loaded")
        return kwargs

    def stream(
        self,
        messages: Sequence[dict[str, str]],
        params: GenerationParams,
        adapter: str = BASE_ADAPTER,
        stats: GenerationStats | None = None,
    ) -> Iterator[str]:
        """Yield text pieces as they are decoded."""
        stats = stats if stats is not None else GenerationStats()
        inputs = self.encode(messages)
        stats.prompt_tokens = int(inputs["input_ids"].shape[1])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = self._generate_kwargs(params, adapter)
        kwargs["stopping_criteria"] = StoppingCriteriaList([LoopStop(stats.prompt_tokens)])
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    output = self.model.generate(**inputs, streamer=streamer, **kwargs)
                    stats.new_tokens = int(output.shape[1]) - stats.prompt_tokens
            except BaseException as exc:  # surfaced in the caller's thread below
                failure.append(exc)
                streamer.end()

        started = time.perf_counter()
        worker = threading.Thread(target=run, name="generate", daemon=True)
        worker.start()
        for piece in streamer:
            if piece and stats.first_token_s is None:
                stats.first_token_s = time.perf_counter() - started
            yield piece
        worker.join()
        stats.seconds = time.perf_counter() - started
        if failure:
            raise failure[0]

    def complete(
        self, messages: Sequence[dict[str, str]], params: GenerationParams, adapter: str = BASE_ADAPTER
    ) -> str:
        """The whole reply at once."""
        return "".join(self.stream(messages, params, adapter))
