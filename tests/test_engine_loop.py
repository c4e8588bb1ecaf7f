"""The worker every engine shares: tasks on its thread, cancellation, shutdown, start-up errors.

The engine here counts instead of running a model, so each rule of the loop is checked on its
own; the real engines' tests (test_batching, test_onnx_engine) cover the same rules end to end.
"""

import threading
import time

import pytest

from chatbot.engine_loop import EngineClosedError, EngineWorker, Request
from chatbot.vocabulary import GenerationParams, InputError


class CountingEngine(EngineWorker):
    """Emits 1, 2, 3... to each running request, two requests at a time, one token per turn."""

    def __init__(self, fail_start: bool = False, gate: threading.Event | None = None) -> None:
        super().__init__("counting-engine")
        self.fail_start = fail_start
        self.gate = gate  # while clear, turns do nothing (requests stay running)
        self.running: list[Request] = []
        self._launch()

    def _start(self) -> None:
        if self.fail_start:
            raise RuntimeError("no model here")

    def _turn(self) -> None:
        while self._waiting and len(self.running) < 2:
            self.running.append(self._waiting.popleft())
        self.largest_batch = max(self.largest_batch, len(self.running))
        if self.gate is not None and not self.gate.is_set():
            time.sleep(0.01)
            return
        for request in list(self.running):
            request._emit(len(request.generated) + 1)
            if len(request.generated) >= request.sampling.max_new_tokens:
                self.running.remove(request)
                request._finish()

    def _running(self) -> list[Request]:
        return list(self.running)

    def _drop_running(self, requests) -> None:
        gone = {id(r) for r in requests}
        self.running = [r for r in self.running if id(r) not in gone]


def params(tokens: int = 3) -> GenerationParams:
    return GenerationParams(max_new_tokens=tokens, temperature=0.0)


@pytest.fixture
def engine():
    made = CountingEngine()
    yield made
    made.close()


def test_requests_get_their_tokens_and_run_at_most_max_batch_at_once(engine):
    requests = [engine.submit([1], "base", params(4)) for _ in range(5)]
    assert [list(r.token_ids()) for r in requests] == [[1, 2, 3, 4]] * 5
    assert engine.largest_batch == 2 and engine.busy == 0
    with pytest.raises(InputError):
        engine.submit([], "base", params())


def test_call_runs_on_the_worker_thread_and_returns_or_raises(engine):
    assert engine.call(lambda: threading.current_thread().name) == "counting-engine"
    with pytest.raises(ZeroDivisionError):
        engine.call(lambda: 1 / 0)
    assert list(engine.submit([1], "base", params(2)).token_ids()) == [1, 2]  # still serving


def test_a_cancelled_request_ends_at_once_and_only_it():
    gate = threading.Event()
    engine = CountingEngine(gate=gate)
    try:
        running = [engine.submit([1], "base", params(3)) for _ in range(2)]
        waiting = engine.submit([1], "base", params(3))
        while engine.busy < 3 or len(engine.running) < 2:
            time.sleep(0.01)
        running[0].cancel()
        waiting.cancel()
        assert list(running[0].token_ids()) == [] and list(waiting.token_ids()) == []
        gate.set()
        assert list(running[1].token_ids()) == [1, 2, 3]
        while engine.cancelled_total < 2:
            time.sleep(0.01)
        assert engine.cancelled_total == 2 and engine.busy == 0
    finally:
        engine.close()


def test_stop_fails_open_requests_and_refuses_new_ones():
    engine = CountingEngine(gate=threading.Event())  # never decodes: everything stays open
    running = [engine.submit([1], "base", params()) for _ in range(3)]
    while len(engine.running) < 2:
        time.sleep(0.01)
    engine.close()
    for request in running:
        with pytest.raises(EngineClosedError):
            list(request.token_ids())
    with pytest.raises(EngineClosedError):
        engine.submit([1], "base", params())
    assert engine.call(lambda: "after") == "after"  # runs inline once the worker is gone


def test_a_start_up_error_is_raised_by_the_constructor():
    with pytest.raises(RuntimeError, match="no model here"):
        CountingEngine(fail_start=True)
