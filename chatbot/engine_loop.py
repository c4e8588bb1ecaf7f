"""What every decoding engine shares: requests, their token queues, and the one worker thread.

An engine owns its model on one worker thread. Callers submit requests (token ids in, a
:class:`Request` to read tokens from) and run tasks between two steps with
:meth:`EngineWorker.call`; the worker takes what was submitted, runs the waiting tasks, drops
what was cancelled and does one turn of the engine's own work, until it is stopped. Engines
(``batching.BatchEngine``, ``onnxgenai.engine.OnnxEngine``) write only their turn.
"""

from __future__ import annotations

import atexit
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from chatbot.vocabulary import GenerationParams, InputError

LOOP_WINDOW = 24

_DONE = object()
_STOP = object()
_WAKE = object()  # a task is waiting, or a request was cancelled
T = TypeVar("T")


class EngineClosedError(RuntimeError):
    """The engine stopped (the server is shutting down) before the request finished."""


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
        self._rng: Any = None  # the engine's seeded generator, for sampling with a seed
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


class EngineWorker:
    """The worker thread and its queues; subclasses write :meth:`_start`, :meth:`_turn` and the hooks below."""

    def __init__(self, name: str) -> None:
        self.largest_batch = 0
        self.cancelled_total = 0  # requests ended because their reader went away
        self._pending: queue.SimpleQueue[Request | object] = queue.SimpleQueue()
        self._tasks: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._waiting: deque[Request] = deque()  # submitted, not yet started (the batch is full)
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._worker = threading.Thread(target=self._loop, name=name, daemon=True)

    def _launch(self) -> None:
        """Start the worker and wait until :meth:`_start` ran; its error is raised here."""
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
        self._on_submit(request)
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
        """Requests submitted and not finished (waiting, reading their prompt or decoding)."""
        return len(self._waiting) + len(self._running()) + self._pending.qsize()

    # What an engine writes

    def _on_submit(self, request: Request) -> None:
        """Set up a request on the caller's thread before it is queued (a seeded generator)."""

    def _start(self) -> None:
        """Load or set up the model on the worker thread (an error here fails the constructor)."""

    def _turn(self) -> None:
        """One turn of work: start waiting requests, read a prompt chunk, decode a step."""
        raise NotImplementedError

    def _running(self) -> list[Request]:
        """The requests started and not finished."""
        raise NotImplementedError

    def _drop_running(self, requests: Iterable[Request]) -> None:
        """Forget these running requests (they were finished already)."""
        raise NotImplementedError

    # The worker thread from here on

    def _loop(self) -> None:
        try:
            self._start()
        except BaseException as exc:  # raised again in the constructor
            self._startup_error = exc
            return
        finally:
            self._ready.set()
        while True:
            if not self._take(block=not (self._waiting or self._running())):
                break
            self._run_tasks()
            self._drop_cancelled()
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

    def _drop_cancelled(self) -> None:
        """Finish the requests whose reader went away, waiting or running."""
        gone = [request for request in [*self._waiting, *self._running()] if request.cancelled.is_set()]
        if not gone:
            return
        for request in gone:
            request._finish()
        self.cancelled_total += len(gone)
        kept = [request for request in self._waiting if not request.cancelled.is_set()]
        self._waiting.clear()
        self._waiting.extend(kept)
        self._drop_running(gone)

    def _shut_down(self) -> None:
        error = EngineClosedError("the server is shutting down")
        running = self._running()
        for request in [*self._waiting, *running]:
            request._finish(error)
        self._waiting.clear()
        self._drop_running(running)
        while True:
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Request):
                item._finish(error)
        self._run_tasks()
