"""Continuous batching: concurrent requests decode together, each with its own adapter.

One worker thread owns the model. A new request is prefilled alone (reusing the cached
key/values of its system-prompt prefix) and then joins the running batch at the next step;
every step decodes one token for every row in a single forward pass, routing each row to its
LoRA adapter with PEFT's ``adapter_names``. Finished, cancelled or failed rows leave the batch
without disturbing the others.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from transformers import DynamicCache

from chatbot.kv_cache import BatchCache, PrefixStore, snapshot

log = logging.getLogger(__name__)

BASE_ADAPTER = "base"
PEFT_BASE = "__base__"  # PEFT's name for "no adapter" inside a mixed batch
LOOP_WINDOW = 24
ACTIVATE_AT = 128  # prompt tokens from which making the request's adapter active pays


@dataclass(frozen=True)
class GenerationParams:
    """Decoding limits; ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.9
    seed: int | None = None


_DONE = object()
_STOP = object()
_WAKE = object()  # a task is waiting
T = TypeVar("T")


class Request:
    """A submitted generation; iterate :meth:`token_ids` to receive its tokens as they come."""

    def __init__(self, prompt: list[int], prefix_length: int, adapter: str, sampling: GenerationParams) -> None:
        self.prompt = prompt
        self.prefix_length = prefix_length
        self.adapter = adapter
        self.sampling = sampling
        self.generated: list[int] = []
        self.cancelled = threading.Event()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._rng: torch.Generator | None = None

    def token_ids(self) -> Iterator[int]:
        """Generated token ids (end-of-sequence excluded); raises if the generation failed."""
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> None:
        """Stop generating for this request (the reader went away)."""
        self.cancelled.set()

    def _emit(self, token: int) -> None:
        self.generated.append(token)
        self._queue.put(token)

    def _finish(self, error: BaseException | None = None) -> None:
        self._queue.put(error if error is not None else _DONE)


@dataclass
class _Row:
    request: Request
    next_token: int
    position: int  # position id of ``next_token``
    finished: bool = field(default=False)


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


def pick_tokens(logits: torch.Tensor, rows: list[_Row]) -> list[int]:
    """One token per row from its last-position logits (greedy or nucleus sampling)."""
    greedy = logits.argmax(-1).tolist()
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
    return picked


class BatchEngine:
    """Decodes every submitted request in one shared loop on ``model()`` (the current model).

    ``model`` is a callable because the PEFT wrapper replaces the plain model once the first
    adapter is loaded. ``lock`` is held for each forward pass; hold it to add or remove adapters.
    """

    def __init__(
        self,
        model: Callable[[], torch.nn.Module],
        lock: threading.Lock,
        device: torch.device,
        stop_ids: set[int],
        max_batch: int = 8,
        prefix_capacity: int = 16,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        self._model = model
        self._lock = lock
        self.device = device
        self.stop_ids = stop_ids
        self.max_batch = max_batch
        self.prefixes = PrefixStore(prefix_capacity)
        self.largest_batch = 0
        self._pending: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._tasks: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._rows: list[_Row] = []
        self._batch = BatchCache()
        self._threads = torch.get_num_threads()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._worker = threading.Thread(target=self._loop, args=(prepare,), name="batch-engine", daemon=True)
        self._worker.start()
        atexit.register(self.close)
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    def close(self) -> None:
        """Stop the worker once the requests already running are done (also called at exit)."""
        if self._worker.is_alive():
            self._pending.put(_STOP)
            self._worker.join(timeout=30)

    def submit(self, prompt: list[int], adapter: str, sampling: GenerationParams, prefix_length: int = 0) -> Request:
        """Queue a prompt (token ids) for generation with ``adapter``; returns at once."""
        request = Request(prompt, prefix_length, adapter, sampling)
        if sampling.seed is not None:
            request._rng = torch.Generator(device=self.device).manual_seed(sampling.seed)
        self._pending.put(request)
        return request

    def call(self, task: Callable[[], T]) -> T:
        """Run ``task`` on the engine's thread between two decode steps and return its result.

        Other torch work of the process (the embedding model) goes through here: a second thread
        running parallel torch ops made libgomp throttle its worker threads (more of them than
        cores), which halved this thread's decode speed for the rest of the process.
        """
        if threading.current_thread() is self._worker or not self._worker.is_alive():
            return task()
        future: Future = Future()
        self._tasks.put((task, future))
        self._pending.put(_WAKE)
        return future.result()

    def forget_adapter(self, adapter: str) -> None:
        """Drop cached prefixes of ``adapter``; call while holding the lock, after changing it."""
        self.prefixes.forget(adapter)

    # The worker thread from here on.

    def _start(self, prepare: Callable[[], None] | None) -> None:
        # A thread that runs torch ops must set its own thread count: without it this
        # thread's small kernels ran about half as fast here. ``prepare`` runs here too,
        # because oneDNN-packed weights are fast only in the thread that packed them.
        torch.set_num_threads(self._threads)
        if prepare is not None:
            prepare()

    def _loop(self, prepare: Callable[[], None] | None) -> None:
        try:
            self._start(prepare)
        except BaseException as exc:  # raised again in the constructor
            self._startup_error = exc
            return
        finally:
            self._ready.set()
        stopping = False
        while not stopping or self._rows:
            if not self._rows and not stopping:
                stopping = self._admit(self._pending.get())
            while not stopping and len(self._rows) < self.max_batch and not self._pending.empty():
                stopping = self._admit(self._pending.get())
            if self._rows:
                self._step()
        self._run_tasks()

    def _run_tasks(self) -> None:
        while not self._tasks.empty():
            task, future = self._tasks.get()
            try:
                future.set_result(task())
            except BaseException as exc:  # the caller gets it
                future.set_exception(exc)

    def _routing(self, adapters: list[str], tokens: int) -> dict:
        """How this forward pass reaches each row's adapter.

        Rows that all use the model's active adapter need no per-row routing; a prompt of at
        least ``ACTIVATE_AT`` tokens on one adapter makes that adapter active first (PEFT's
        ``set_adapter``, ~10 ms, saves ~0.3 s on a 1,000-token prompt: per-row routing copies
        every layer's input). Anything else is routed per row with ``adapter_names``.
        """
        model = self._model()
        if not hasattr(model, "peft_config"):
            if any(adapter != BASE_ADAPTER for adapter in adapters):
                raise ValueError(f"adapter {adapters[0]!r} is not loaded")
            return {}
        missing = [adapter for adapter in adapters if adapter != BASE_ADAPTER and adapter not in model.peft_config]
        if missing:
            raise ValueError(f"adapter {missing[0]!r} is not loaded")
        only = adapters[0] if len(set(adapters)) == 1 and adapters[0] != BASE_ADAPTER else None
        if only is not None and only != model.active_adapter and tokens >= ACTIVATE_AT:
            model.set_adapter(only)
        if only is not None and only == model.active_adapter:
            return {}
        return {"adapter_names": [PEFT_BASE if adapter == BASE_ADAPTER else adapter for adapter in adapters]}

    def _forward(self, input_ids: torch.Tensor, adapters: list[str], **kwargs: object):  # noqa: ANN202
        routing = self._routing(adapters, int(input_ids.shape[1]))
        return self._model()(input_ids=input_ids, use_cache=True, logits_to_keep=1, **routing, **kwargs)

    def _prefill(self, request: Request) -> tuple[DynamicCache, torch.Tensor]:
        """Run the prompt alone, starting from the stored prefix when there is one."""
        prompt = torch.tensor([request.prompt], device=self.device)
        adapters = [request.adapter]
        split = request.prefix_length if 0 < request.prefix_length < len(request.prompt) else 0
        prefix = tuple(request.prompt[:split])
        stored = self.prefixes.get(request.adapter, prefix) if split else None
        if stored is not None:
            cache = DynamicCache(ddp_cache_data=stored)
        else:
            cache = DynamicCache()
            if split:
                self._forward(prompt[:, :split], adapters, past_key_values=cache)
                self.prefixes.put(request.adapter, prefix, snapshot(cache))
        positions = torch.arange(split, len(request.prompt), device=self.device)[None]
        output = self._forward(prompt[:, split:], adapters, past_key_values=cache, position_ids=positions)
        return cache, output.logits[:, -1]

    def _admit(self, request: Request | object) -> bool:
        """Prefill ``request`` and add it to the batch; True when it is the stop signal."""
        if request is _STOP:
            return True
        if request is _WAKE:
            self._run_tasks()
            return False
        if request.cancelled.is_set():
            request._finish()
            return False
        try:
            with self._lock, torch.inference_mode():
                cache, logits = self._prefill(request)
                row = _Row(request, next_token=-1, position=len(request.prompt))
                row.next_token = pick_tokens(logits, [row])[0]
        except Exception as exc:  # this request fails; the batch goes on
            log.exception("prefill failed")
            request._finish(exc)
            return False
        if self._accept(row, row.next_token):
            self._batch.add(cache, self.device)
            self._rows.append(row)
            self.largest_batch = max(self.largest_batch, len(self._rows))
        return False

    def _accept(self, row: _Row, token: int) -> bool:
        """Hand ``token`` to the row's reader; False once the row is finished."""
        request = row.request
        if token in self.stop_ids or request.cancelled.is_set():
            request._finish()
            return False
        request._emit(token)
        if len(request.generated) >= request.sampling.max_new_tokens or repeats_itself(request.generated):
            request._finish()
            return False
        return True

    def _drop_unloaded(self) -> None:
        """Fail the rows whose adapter was removed since they started."""
        model = self._model()
        loaded = set(getattr(model, "peft_config", {})) | {BASE_ADAPTER}
        keep = [index for index, row in enumerate(self._rows) if row.request.adapter in loaded]
        if len(keep) < len(self._rows):
            for row in self._rows:
                if row.request.adapter not in loaded:
                    row.request._finish(ValueError(f"adapter {row.request.adapter!r} was removed while generating"))
            self._rows = [self._rows[index] for index in keep]
            self._batch.keep(keep)

    def _step(self) -> None:
        with self._lock:
            self._drop_unloaded()
        rows = self._rows
        if not rows:
            return
        try:
            with self._lock, torch.inference_mode():
                mask = self._batch.extend_mask()
                output = self._forward(
                    torch.tensor([[row.next_token] for row in rows], device=self.device),
                    [row.request.adapter for row in rows],
                    past_key_values=self._batch.cache,
                    attention_mask=mask if len(rows) > 1 else None,
                    position_ids=torch.tensor([[row.position] for row in rows], device=self.device),
                )
                tokens = pick_tokens(output.logits[:, -1], rows)
        except Exception as exc:  # the step failed for everyone in it
            log.exception("decode step failed")
            for row in rows:
                row.request._finish(exc)
            self._rows, self._batch = [], BatchCache()
            return
        keep = []
        for index, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            row.position += 1
            row.next_token = token
            if self._accept(row, token):
                keep.append(index)
        if len(keep) < len(rows):
            self._rows = [rows[index] for index in keep]
            self._batch.keep(keep)
