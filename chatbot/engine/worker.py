"""The thread that owns a model: what both engines share.

Requests are queued from any thread and taken by the worker between steps; other work that must
run on the model's thread (loading an adapter, embedding text) goes through :meth:`call`; at
shutdown every request not finished fails with :class:`EngineClosedError`. An engine supplies
how a loop turn advances its requests.
"""

from __future__ import annotations

import atexit
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

import torch

from chatbot.engine.request import EngineClosedError, Request
from chatbot.vocabulary import AdapterId, GenerationParams, InputError

_STOP = object()
_WAKE = object()  # a task is waiting
T = TypeVar("T")


class EngineWorker:
    """A worker thread with a queue of requests and tasks; subclasses implement the turn.

    Subclasses implement :meth:`_start` (on the thread, before the first turn), :meth:`_busy_rows`
    (requests taken in hand), :meth:`_turn` (advance them one step) and :meth:`_unfinished`
    (what shutdown must fail besides the waiting line); their constructor calls
    ``super().__init__()`` first and :meth:`_launch` last.
    """

    thread_name = "engine"
    device: Any = "cpu"  # where a seeded request's random generator lives

    def __init__(self) -> None:
        self.largest_batch = 0
        self.cancelled_total = 0  # requests ended because their reader went away
        self.finished_total = 0  # requests that ran to their end (a stop token, their length or a loop)
        self._pending: queue.SimpleQueue[Request | object] = queue.SimpleQueue()
        self._tasks: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._waiting: deque[Request] = deque()  # submitted, not yet taken in hand
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    def _launch(self) -> None:
        """Start the worker and wait until it is ready; raises what its start-up raised."""
        self._worker = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._worker.start()
        atexit.register(self.close)
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    # Caller side (any thread)

    def submit(
        self,
        prompt: list[int],
        adapter: AdapterId,
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
        if sampling.seed is not None:  # its own generator: its draws never depend on other requests
            request._rng = torch.Generator(device=self.device).manual_seed(sampling.seed)
        self._pending.put(request)
        return request

    def call(self, task: Callable[[], T]) -> T:
        """Run ``task`` on the engine's thread between two steps and return its result."""
        if threading.current_thread() is self._worker or not self._worker.is_alive():
            return task()
        future: Future = Future()
        self._tasks.put((task, future))
        self._pending.put(_WAKE)
        if not self._worker.is_alive():  # it stopped between the check and the put
            self._run_tasks()
        return future.result()

    def stop(self) -> None:
        """Fail every open request and refuse new ones; returns at once (safe in a signal handler)."""
        self._closed.set()
        self._pending.put(_STOP)

    def close(self, timeout: float = 10.0) -> None:
        """:meth:`stop`, then wait for the worker to end (also called at exit)."""
        self.stop()
        if self._worker.is_alive():
            self._worker.join(timeout=timeout)

    @property
    def busy(self) -> int:
        """Requests submitted and not finished."""
        return len(self._waiting) + self._busy_rows() + self._pending.qsize()

    # For the engine to implement

    def _start(self) -> None:
        """Runs on the worker thread before the first turn."""

    def _busy_rows(self) -> int:
        raise NotImplementedError

    def _turn(self) -> None:
        raise NotImplementedError

    def _unfinished(self) -> Iterable[Request]:
        raise NotImplementedError

    def _clear(self) -> None:
        """Forget the requests in hand after shutdown failed them."""

    # The worker thread from here on.

    def _loop(self) -> None:
        try:
            self._start()
        except BaseException as exc:  # raised again in the constructor
            self._startup_error = exc
            return
        finally:
            self._ready.set()
        while self._take(block=not (self._waiting or self._busy_rows())):
            self._run_tasks()
            self._drop_cancelled_waiting()
            self._turn()
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

    def _drop_cancelled_waiting(self) -> None:
        """Finish waiting requests whose reader went away."""
        for request in [r for r in self._waiting if r.cancelled.is_set()]:
            self._waiting.remove(request)
            request._finish()
            self.cancelled_total += 1

    def _shut_down(self) -> None:
        error = EngineClosedError("the server is shutting down")
        for request in [*self._waiting, *self._unfinished()]:
            request._finish(error)
        while True:
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Request):
                item._finish(error)
        self._waiting.clear()
        self._clear()
        self._run_tasks()
