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
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from transformers import DynamicCache

from chatbot.engine.kv_cache import BatchCache, PrefixStore, snapshot
from chatbot.vocabulary import BASE_ADAPTER, GenerationParams, InputError

log = logging.getLogger(__name__)

PEFT_BASE = "__base__"  # PEFT's name for "no adapter" inside a mixed batch
LOOP_WINDOW = 24
ACTIVATE_AT = 128  # prompt tokens from which making the request's adapter active pays
PREFILL_CHUNK = 256  # prompt tokens prefilled between two decode steps


class EngineClosedError(RuntimeError):
    """The engine stopped (the server is shutting down) before the request finished."""


_DONE = object()
_STOP = object()
_WAKE = object()  # a task is waiting, or a request was cancelled
T = TypeVar("T")


class Request:
    """A submitted generation; iterate :meth:`token_ids` to receive its tokens as they come.

    ``cancelled`` may be an event the caller owns (set it from any thread to stop the request);
    a cancelled request's reader returns at once, whatever the engine is doing.
    """

    def __init__(
        self,
        prompt: list[int],
        prefix_length: int,
        adapter: str,
        sampling: GenerationParams,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.prompt = prompt
        self.prefix_length = prefix_length
        self.adapter = adapter
        self.sampling = sampling
        self.generated: list[int] = []
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

    def _finish(self, error: BaseException | None = None) -> None:
        self._queue.put(error if error is not None else _DONE)


@dataclass
class _Row:
    request: Request
    next_token: int
    position: int  # position id of ``next_token``
    finished: bool = field(default=False)


@dataclass
class _Prefill:
    """A request whose prompt is being read, one chunk per engine iteration."""

    request: Request
    bounds: list[int]  # chunk ends, in prompt positions
    cache: DynamicCache = field(default_factory=DynamicCache)
    done: int = 0  # prompt tokens already in the cache


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

    Each loop iteration reads one chunk (at most ``prefill_chunk`` tokens) of one waiting prompt,
    taking the prompts in turn, then decodes one token for every running row: a long prompt never
    stalls the others for more than one chunk, and a short one is not stuck behind it.
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
        prefill_chunk: int = PREFILL_CHUNK,
    ) -> None:
        self._model = model
        self._lock = lock
        self.device = device
        self.stop_ids = stop_ids
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.prefixes = PrefixStore(prefix_capacity)
        self.largest_batch = 0
        self.cancelled_total = 0  # requests ended because their reader went away
        self._pending: queue.SimpleQueue[Request | object] = queue.SimpleQueue()
        self._tasks: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._waiting: deque[Request] = deque()  # submitted, not yet prefilling (the batch is full)
        self._prefilling: deque[_Prefill] = deque()
        self._rows: list[_Row] = []
        self._batch = BatchCache()
        self._closed = threading.Event()
        self._threads = torch.get_num_threads()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._worker = threading.Thread(target=self._loop, args=(prepare,), name="batch-engine", daemon=True)
        self._worker.start()
        atexit.register(self.close)
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    def stop(self) -> None:
        """Ask the worker to stop without waiting (safe in a signal handler).

        Every request not finished yet fails with :class:`EngineClosedError`; later submits are refused.
        """
        self._closed.set()
        self._pending.put(_STOP)

    def close(self, timeout: float = 10.0) -> None:
        """:meth:`stop`, then wait for the worker to end (also called at exit)."""
        self.stop()
        if self._worker.is_alive():
            self._worker.join(timeout=timeout)

    def submit(
        self,
        prompt: list[int],
        adapter: str,
        sampling: GenerationParams,
        prefix_length: int = 0,
        cancelled: threading.Event | None = None,
    ) -> Request:
        """Queue a prompt (token ids) for generation with ``adapter``; returns at once.

        Raises :class:`EngineClosedError` once the engine is closed (the prompt's length is the
        generator's to check: it knows the model's context).
        """
        if self._closed.is_set():
            raise EngineClosedError("the server is shutting down")
        if not prompt:
            raise InputError("the prompt is empty")
        request = Request(prompt, prefix_length, adapter, sampling, cancelled)
        request._engine_thread = self._worker
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
        if not self._worker.is_alive():  # it stopped between the check and the put
            self._run_tasks()
        return future.result()

    def forget_adapter(self, adapter: str) -> None:
        """Drop cached prefixes of ``adapter``; call while holding the lock, after changing it."""
        self.prefixes.forget(adapter)

    @property
    def busy(self) -> int:
        """Requests submitted and not finished (waiting, prefilling or decoding)."""
        return len(self._waiting) + len(self._prefilling) + len(self._rows) + self._pending.qsize()

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
        while True:
            idle = not (self._rows or self._prefilling or self._waiting)
            if not self._take(block=idle):
                break
            self._run_tasks()
            self._drop_cancelled()
            while self._waiting and len(self._rows) + len(self._prefilling) < self.max_batch:
                request = self._waiting.popleft()
                bounds = chunk_bounds(len(request.prompt), request.prefix_length, self.prefill_chunk)
                self._prefilling.append(_Prefill(request, bounds))
            if self._prefilling:
                self._prefill_chunk()
            if self._rows:
                self._step()
        self._shut_down()

    def _take(self, block: bool) -> bool:
        """Move submitted requests to the waiting line; False on the stop signal."""
        item = self._pending.get() if block else None
        while True:
            if item is _STOP:
                return False
            if isinstance(item, Request):
                self._waiting.append(item)
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                return True

    def _shut_down(self) -> None:
        error = EngineClosedError("the server is shutting down")
        for request in [*self._waiting, *(p.request for p in self._prefilling), *(r.request for r in self._rows)]:
            request._finish(error)
        while True:
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Request):
                item._finish(error)
        self._waiting.clear()
        self._prefilling.clear()
        self._rows, self._batch = [], BatchCache()
        self._run_tasks()

    def _run_tasks(self) -> None:
        while True:
            try:
                task, future = self._tasks.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(task())
            except BaseException as exc:  # the caller gets it
                future.set_exception(exc)

    def _drop_cancelled(self) -> None:
        """Finish requests whose reader went away before they reached the batch."""
        for line in (self._waiting, self._prefilling):
            kept = [item for item in line if not _request_of(item).cancelled.is_set()]
            if len(kept) < len(line):
                for item in line:
                    if _request_of(item).cancelled.is_set():
                        _request_of(item)._finish()
                        self.cancelled_total += 1
                line.clear()
                line.extend(kept)

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

    def _prefill_chunk(self) -> None:
        """Read the next chunk of the first prompt in line, then send that prompt to the back.

        A finished prefill picks the request's first token and joins the batch.
        """
        with self._lock, torch.inference_mode():  # the adapter cannot go between the check and the pass
            self._drop_unloaded()
            if not self._prefilling:
                return
            prefill = self._prefilling.popleft()
            request = prefill.request
            try:
                logits = self._advance(prefill)
                if logits is None:
                    self._prefilling.append(prefill)
                    return
                row = _Row(request, next_token=-1, position=len(request.prompt))
                row.next_token = pick_tokens(logits, [row])[0]
            except Exception as exc:  # this request fails; the batch goes on
                log.exception("prefill failed")
                request._finish(exc)
                return
        if self._accept(row, row.next_token):
            self._batch.add(prefill.cache, self.device)
            self._rows.append(row)
            self.largest_batch = max(self.largest_batch, len(self._rows))

    def _advance(self, prefill: _Prefill) -> torch.Tensor | None:
        """Run one chunk of ``prefill``; the last position's logits once the prompt is read."""
        request = prefill.request
        split = request.prefix_length if 0 < request.prefix_length < len(request.prompt) else 0
        if prefill.done == 0 and split:
            stored = self.prefixes.get(request.adapter, tuple(request.prompt[:split]))
            if stored is not None:
                prefill.cache = DynamicCache(ddp_cache_data=stored)
                prefill.done = split
                prefill.bounds = [end for end in prefill.bounds if end > split]
        end = prefill.bounds.pop(0)
        ids = torch.tensor([request.prompt[prefill.done : end]], device=self.device)
        positions = torch.arange(prefill.done, end, device=self.device)[None]
        output = self._forward(ids, [request.adapter], past_key_values=prefill.cache, position_ids=positions)
        prefill.done = end
        if end == split:
            self.prefixes.put(request.adapter, tuple(request.prompt[:split]), snapshot(prefill.cache))
        return output.logits[:, -1] if end == len(request.prompt) else None

    def _accept(self, row: _Row, token: int) -> bool:
        """Hand ``token`` to the row's reader; False once the row is finished."""
        request = row.request
        if request.cancelled.is_set():
            self.cancelled_total += 1
            request._finish()
            return False
        if token in self.stop_ids:
            request._finish()
            return False
        request._emit(token)
        if len(request.generated) >= request.sampling.max_new_tokens or repeats_itself(request.generated):
            request._finish()
            return False
        return True

    def _drop_unloaded(self) -> None:
        """Fail the requests whose adapter was removed since they started (mid-prompt or mid-answer)."""
        model = self._model()
        loaded = set(getattr(model, "peft_config", {})) | {BASE_ADAPTER}

        def removed(request: Request) -> bool:
            if request.adapter in loaded:
                return False
            request._finish(ValueError(f"adapter {request.adapter!r} was removed while generating"))
            return True

        kept = [prefill for prefill in self._prefilling if prefill.done == 0 or not removed(prefill.request)]
        if len(kept) < len(self._prefilling):
            self._prefilling.clear()
            self._prefilling.extend(kept)
        keep = [index for index, row in enumerate(self._rows) if not removed(row.request)]
        if len(keep) < len(self._rows):
            self._rows = [self._rows[index] for index in keep]
            self._batch.keep(keep)

    def _step(self) -> None:
        with self._lock, torch.inference_mode():  # the adapter cannot go between the check and the pass
            self._drop_unloaded()
            rows = self._rows
            if not rows:
                return
            try:
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


def _request_of(item: Request | _Prefill) -> Request:
    return item.request if isinstance(item, _Prefill) else item
