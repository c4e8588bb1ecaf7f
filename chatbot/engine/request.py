"""A submitted generation and the rules every engine decodes it by.

How a prompt is cut into chunks, when an answer loops, and how a token is picked from logits do
not depend on the engine, so a request gets the same answer on either.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from chatbot.vocabulary import AdapterId, GenerationParams

LOOP_WINDOW = 24


class EngineClosedError(RuntimeError):
    """The engine stopped (the server is shutting down) before the request finished."""


_DONE = object()


class Request:
    """A submitted generation; iterate :meth:`token_ids` to receive its tokens as they come.

    ``cancelled`` may be an event the caller owns (set it from any thread to stop the request);
    a cancelled request's reader returns at once, whatever the engine is doing.
    """

    def __init__(
        self,
        prompt: list[int],
        prefix_length: int,
        adapter: AdapterId,
        sampling: GenerationParams,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.prompt = prompt
        self.prefix_length = prefix_length
        self.adapter = adapter
        self.sampling = sampling
        self.generated: list[int] = []
        self.logprobs: list[float] = []  # the model's log-probability of each picked token (stop token too)
        self.first_choices: list[tuple[int, float]] = []  # the likeliest first tokens and their log-probabilities
        self.ended_by: str | None = None  # "stop", "length" or "loop" once it has run to its end
        self.cancelled = cancelled if cancelled is not None else threading.Event()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._rng: torch.Generator | None = None
        self._engine_thread: threading.Thread | None = None

    def token_ids(self) -> Iterator[int]:
        """Generated token ids (end-of-sequence excluded); raises if the generation failed.

        Returns as soon as the request is cancelled. Never blocks on the engine's own thread
        (a reader finalised there would wait for tokens only that thread can make).
        """
        if threading.current_thread() is self._engine_thread:
            self.cancel()
        while not self.cancelled.is_set():
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue  # the caller's own event may have been set without cancel()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> None:
        """Stop generating for this request (the reader went away); its reader returns at once."""
        self.cancelled.set()
        self._queue.put(_DONE)

    def _emit(self, token: int) -> None:
        self.generated.append(token)
        self._queue.put(token)

    def _take(self, token: int, stop_ids: set[int]) -> bool:
        """Hand ``token`` to the reader unless it is a stop token; False once the request has run to
        its end (a stop token, its ``max_new_tokens`` or a loop): the engine then finishes it."""
        if token in stop_ids:
            self.ended_by = "stop"
            return False
        self._emit(token)
        if len(self.generated) >= self.sampling.max_new_tokens:
            self.ended_by = "length"
        elif repeats_itself(self.generated):
            self.ended_by = "loop"
        return self.ended_by is None

    def _finish(self, error: BaseException | None = None) -> None:
        self._queue.put(error if error is not None else _DONE)


def chunk_bounds(length: int, prefix: int, chunk: int) -> list[int]:
    """Where the prefill of a ``length``-token prompt stops between chunks.

    The split depends only on the prompt (never on the load), so a request's answer is the same
    alone and in a busy batch: the system-prompt prefix (reused across requests) ends a chunk,
    and no chunk is longer than ``chunk`` tokens.
    """
    prefix = prefix if 0 < prefix < length else 0
    bounds = list(range(chunk, prefix, chunk)) + ([prefix] if prefix else [])
    start = prefix
    bounds += list(range(start + chunk, length, chunk)) + [length]
    return bounds


def repeats_itself(tokens: list[int], window: int = LOOP_WINDOW) -> bool:
    """True once the last ``window`` tokens already occurred earlier in ``tokens``.

    Tiny models fall into verbatim loops; only the generated tokens are compared, so copying
    from the prompt is not affected.
    """
    if len(tokens) < 2 * window:
        return False
    tail = tokens[-window:]
    first = tail[0]
    starts = range(len(tokens) - 2 * window + 1)  # windows wholly before the tail
    return any(tokens[start] == first and tokens[start : start + window] == tail for start in starts)


FIRST_CHOICES = 8  # how many of the likeliest first tokens a request keeps (Request.first_choices)


def pick_tokens(logits: torch.Tensor, rows: Sequence[Any]) -> list[int]:
    """One token per row (anything with a ``request``) from its last-position logits (greedy or nucleus sampling).

    Each row's request keeps the picked token's log-probability under the model (temperature 1),
    and, for its first token, the likeliest candidates: how sure the model was of its answer.
    """
    greedy = logits.argmax(-1).tolist()
    logprobs = torch.log_softmax(logits.float(), -1)
    picked = []
    for index, row in enumerate(rows):
        sampling = row.request.sampling
        if sampling.temperature <= 0:
            picked.append(greedy[index])
            continue
        probs = torch.softmax(logits[index].float() / sampling.temperature, -1)
        ordered, order = probs.sort(descending=True)
        outside = ordered.cumsum(-1) - ordered > sampling.top_p
        ordered[outside] = 0.0
        choice = torch.multinomial(ordered, 1, generator=row.request._rng)
        picked.append(int(order[choice]))
    chosen = logprobs.gather(1, torch.tensor(picked, device=logprobs.device)[:, None])[:, 0].tolist()
    for index, row in enumerate(rows):
        request = row.request
        if not request.logprobs:
            top = logprobs[index].topk(FIRST_CHOICES)
            request.first_choices = list(zip(top.indices.tolist(), top.values.tolist(), strict=True))
        request.logprobs.append(chosen[index])
    return picked
