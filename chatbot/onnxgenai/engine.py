"""Generation on onnxruntime-genai: one generator per request, each with its own LoRA adapter.

One worker thread owns the model and every generator. Each loop turn it reads one chunk of one
waiting prompt, then decodes one token for every running request, in turn: a long prompt never
stalls the others for more than a chunk. onnxruntime-genai runs one adapter per generator, so
requests are decoded one after the other rather than in one batched pass; a request's tokens
do not depend on what else is running (tested token for token). The library is called through
:mod:`chatbot.onnxgenai.capi`, which releases the GIL, so the server's threads run meanwhile.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from chatbot.batching import EngineClosedError, Request, chunk_bounds, repeats_itself
from chatbot.onnxgenai import capi
from chatbot.onnxgenai.convert import export_adapter
from chatbot.vocabulary import BASE_ADAPTER, GenerationParams, InputError

log = logging.getLogger(__name__)

_STOP = object()
_WAKE = object()
T = TypeVar("T")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


@dataclass
class _Slot:
    request: Request
    generator: capi.Generator | None
    bounds: list[int]
    done: int = 0  # prompt tokens appended so far

    @property
    def prefilling(self) -> bool:
        return self.done < len(self.request.prompt)


@dataclass
class _Adapters:
    handle: capi.Adapters | None = None  # made on the worker thread
    loaded: set[str] = field(default_factory=set)


class OnnxEngine:
    """Decodes submitted requests on an onnxruntime-genai model folder; same interface as ``BatchEngine``.

    ``lock`` is held for each turn's work (prompt chunk and decode steps), as ``BatchEngine``
    holds it for each forward pass.
    """

    def __init__(
        self,
        model_dir: Path,
        stop_ids: set[int],
        lock: threading.Lock | None = None,
        max_batch: int = 8,
        prefill_chunk: int = 256,
        threads: int = 0,
    ) -> None:
        self.model_dir = model_dir
        self.stop_ids = stop_ids
        self._lock = lock if lock is not None else threading.Lock()  # held for each turn's work
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.threads = threads
        self.largest_batch = 0
        self.cancelled_total = 0
        self._pending: queue.SimpleQueue[Request | object] = queue.SimpleQueue()
        self._tasks: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._waiting: deque[Request] = deque()
        self._slots: list[_Slot] = []
        self._adapters = _Adapters()
        self._model: capi.Model | None = None
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._worker = threading.Thread(target=self._loop, name="onnx-engine", daemon=True)
        self._worker.start()
        atexit.register(self.close)
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    # Caller side (any thread)

    def submit(
        self,
        prompt: list[int],
        adapter: str,
        sampling: GenerationParams,
        prefix_length: int = 0,
        cancelled: threading.Event | None = None,
    ) -> Request:
        """Queue a prompt (token ids) for generation with ``adapter``; returns at once."""
        if self._closed.is_set():
            raise EngineClosedError("the server is shutting down")
        if not prompt:
            raise InputError("the prompt is empty")
        request = Request(prompt, prefix_length, adapter, sampling, cancelled)
        request._engine_thread = self._worker
        self._pending.put(request)
        return request

    def call(self, task: Callable[[], T]) -> T:
        """Run ``task`` on the engine's thread between two steps and return its result."""
        if threading.current_thread() is self._worker or not self._worker.is_alive():
            return task()
        future: Future = Future()
        self._tasks.put((task, future))
        self._pending.put(_WAKE)
        if not self._worker.is_alive():
            self._run_tasks()
        return future.result()

    def add_adapter(self, name: str, folder: Path) -> None:
        """Convert the PEFT adapter in ``folder`` (once per content) and load it as ``name``."""
        self.load_adapter(name, export_adapter(folder, self.model_dir, name))

    def load_adapter(self, name: str, path: Path) -> None:
        """Load (or replace) adapter ``name`` from an ``.onnx_adapter`` file."""
        self.call(lambda: self._load_adapter(name, path))

    def unload_adapter(self, name: str) -> None:
        """Remove adapter ``name``; requests still using it fail with a clear error."""
        self.call(lambda: self._unload_adapter(name))

    def forget_adapter(self, adapter: str) -> None:
        """Nothing is cached per adapter here (kept for the engines' common interface)."""

    @property
    def loaded_adapters(self) -> set[str]:
        """Names of the adapters loaded now."""
        return set(self._adapters.loaded)

    @property
    def busy(self) -> int:
        """Requests submitted and not finished."""
        return len(self._waiting) + len(self._slots) + self._pending.qsize()

    def stop(self) -> None:
        """Fail every open request and refuse new ones; returns at once (safe in a signal handler)."""
        self._closed.set()
        self._pending.put(_STOP)

    def close(self, timeout: float = 10.0) -> None:
        """:meth:`stop`, then wait for the worker to end."""
        self.stop()
        if self._worker.is_alive():
            self._worker.join(timeout=timeout)

    # The worker thread from here on.

    def _start(self) -> None:
        # onnxruntime's own default took one thread on a 2-core AMD EPYC (938-token prefill 5.2 s,
        # decode 50 tok/s); every core this process may use: 2.8 s and 73 tok/s.
        threads = self.threads or usable_cpus()
        overlay = json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}})
        self._model = capi.Model(self.model_dir, overlay)
        self._adapters.handle = capi.Adapters(self._model)

    def _loop(self) -> None:
        try:
            self._start()
        except BaseException as exc:  # raised again in the constructor
            self._startup_error = exc
            return
        finally:
            self._ready.set()
        while True:
            if not self._take(block=not (self._slots or self._waiting)):
                break
            self._run_tasks()
            self._drop_cancelled()
            while self._waiting and len(self._slots) < self.max_batch:
                self._open(self._waiting.popleft())
            self.largest_batch = max(self.largest_batch, len(self._slots))
            with self._lock:
                prefilling = next((slot for slot in self._slots if slot.prefilling), None)
                if prefilling is not None:
                    self._work(prefilling)
                for slot in [slot for slot in self._slots if not slot.prefilling and slot is not prefilling]:
                    self._work(slot)
        self._shut_down()

    def _take(self, block: bool) -> bool:
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
        for request in [r for r in self._waiting if r.cancelled.is_set()]:
            self._waiting.remove(request)
            request._finish()
            self.cancelled_total += 1
        for slot in [s for s in self._slots if s.request.cancelled.is_set()]:
            self._close(slot)
            self.cancelled_total += 1

    def _open(self, request: Request) -> None:
        assert self._model is not None and self._adapters.handle is not None
        try:
            sampling = request.sampling
            options: dict[str, float | int | bool] = {
                "max_length": len(request.prompt) + sampling.max_new_tokens,
                "do_sample": sampling.temperature > 0,
            }
            if sampling.temperature > 0:
                options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
                if sampling.seed is not None:
                    options["random_seed"] = sampling.seed % (2**31)
            generator = capi.Generator(self._model, options)
            if request.adapter != BASE_ADAPTER:
                if request.adapter not in self._adapters.loaded:
                    raise ValueError(f"adapter {request.adapter!r} is not loaded")
                generator.set_active_adapter(self._adapters.handle, request.adapter)
        except Exception as exc:
            request._finish(exc)
            return
        bounds = chunk_bounds(len(request.prompt), 0, self.prefill_chunk)
        self._slots.append(_Slot(request, generator, bounds))

    def _work(self, slot: _Slot) -> None:
        """One unit of ``slot``'s work: its next prompt chunk, or its next token."""
        request = slot.request
        generator = slot.generator
        assert generator is not None
        try:
            if slot.prefilling:
                end = next(bound for bound in slot.bounds if bound > slot.done)
                generator.append_tokens(request.prompt[slot.done : end])
                slot.done = end
                return
            token = generator.generate_next_token()
        except Exception as exc:  # this request's failure, never the others'
            log.exception("generation failed for one request")
            self._close(slot, exc)
            return
        if request.cancelled.is_set():
            self.cancelled_total += 1
            self._close(slot)
            return
        if token in self.stop_ids:
            self._close(slot)
            return
        request._emit(token)
        if (
            len(request.generated) >= request.sampling.max_new_tokens
            or repeats_itself(request.generated)
            or generator.is_done()
        ):
            self._close(slot)

    def _close(self, slot: _Slot, error: BaseException | None = None) -> None:
        if slot in self._slots:
            self._slots.remove(slot)
        if slot.generator is not None:
            slot.generator.close()  # frees its key/value cache now
            slot.generator = None
        slot.request._finish(error)

    def _load_adapter(self, name: str, path: Path) -> None:
        assert self._adapters.handle is not None
        if name in self._adapters.loaded:
            self._unload_adapter(name)
        self._adapters.handle.load(path, name)
        self._adapters.loaded.add(name)

    def _unload_adapter(self, name: str) -> None:
        if name not in self._adapters.loaded:
            return
        for slot in [s for s in self._slots if s.request.adapter == name]:
            self._close(slot, ValueError(f"adapter {name!r} was removed while generating"))
        assert self._adapters.handle is not None
        self._adapters.handle.unload(name)
        self._adapters.loaded.discard(name)

    def _shut_down(self) -> None:
        error = EngineClosedError("the server is shutting down")
        for slot in list(self._slots):
            self._close(slot, error)
        for request in self._waiting:
            request._finish(error)
        self._waiting.clear()
        while True:
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Request):
                item._finish(error)
        self._run_tasks()
