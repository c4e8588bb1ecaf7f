"""Generation on onnxruntime: continuous batching with each row on its own LoRA adapter.

One worker thread owns the session and the key/value pool. Each loop turn it reads one chunk of
the prompt being prefilled (one prompt at a time, alone), then decodes one token for every running
request in a single run of the model, whatever their adapters (:mod:`chatbot.engine.onnx.runtime`
stacks them per row): a long prompt never stalls the others for more than a chunk, and the
weights are read once per step for the whole batch. A request's tokens do not depend on what else
is running, bit for bit, with ``exact`` (the ``exact_batches`` setting; tested token for token);
without it, only a lone row's steps take another kernel (logits up to ~3e-5 apart).
onnxruntime releases the GIL while it computes, so the server's threads run meanwhile.

onnxruntime-genai, whose model builder converts the model, was the engine before: it runs one
adapter per generator, so requests were decoded one after another (8 streams: 77 tok/s on a
2-core AMD EPYC, against 206 for one batched run here, docs/performance.md).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from chatbot.engine.onnx.adapter_export import export_adapter
from chatbot.engine.onnx.runtime import Decoder
from chatbot.engine.request import Request, chunk_bounds, pick_tokens
from chatbot.engine.worker import EngineWorker
from chatbot.vocabulary import BASE_ADAPTER, AdapterId

log = logging.getLogger(__name__)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


@dataclass
class _Slot:
    request: Request
    bounds: list[int]
    done: int = 0  # prompt tokens read so far
    next_token: int = -1  # the token the next decode step reads

    @property
    def prefilling(self) -> bool:
        return self.done < len(self.request.prompt)


class OnnxEngine(EngineWorker):
    """Decodes submitted requests on a converted model folder; same interface as ``BatchEngine``.

    ``lock`` is held for each turn's work (prompt chunk and decode step), as ``BatchEngine``
    holds it for each forward pass.
    """

    thread_name = "onnx-engine"

    def __init__(
        self,
        model_dir: Path,
        stop_ids: set[int],
        lock: threading.Lock | None = None,
        max_batch: int = 8,
        prefill_chunk: int = 256,
        threads: int = 0,
        exact: bool = False,
    ) -> None:
        self.model_dir = model_dir
        self.stop_ids = stop_ids
        self._lock = lock if lock is not None else threading.Lock()  # held for each turn's work
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.threads = threads
        self.exact = exact  # a lone row decodes beside a padding row (see runtime.Decoder.run)
        super().__init__()
        self._slots: list[_Slot] = []
        self._decoder: Decoder | None = None  # made on the worker thread
        self._launch()

    # Caller side (any thread)

    def add_adapter(self, name: str, folder: Path) -> None:
        """Convert the PEFT adapter in ``folder`` (once per content) and load it as ``name``."""
        self.load_adapter(name, export_adapter(folder, self.model_dir, name))

    def load_adapter(self, name: str, path: Path) -> None:
        """Load (or replace) adapter ``name`` from an ``.onnx_adapter`` file."""
        self.call(lambda: self._load_adapter(name, path))

    def unload_adapter(self, name: str) -> None:
        """Remove adapter ``name``; requests still using it fail with a clear error."""
        self.call(lambda: self._unload_adapter(name))

    def forget_adapter(self, adapter: AdapterId) -> None:
        """Nothing is cached per adapter here (kept for the engines' common interface)."""

    @property
    def loaded_adapters(self) -> set[str]:
        """Names of the adapters loaded now."""
        return set(self._decoder.adapters) if self._decoder is not None else set()

    # The worker thread from here on.

    def _start(self) -> None:
        # onnxruntime's own default took one thread on a 2-core AMD EPYC (938-token prefill 5.2 s,
        # decode 50 tok/s); every core this process may use: 2.8 s and 73 tok/s.
        self._decoder = Decoder(self.model_dir, self.threads or usable_cpus(), self.max_batch)

    def _busy_rows(self) -> int:
        return len(self._slots)

    def _unfinished(self) -> list[Request]:
        return [slot.request for slot in self._slots]

    def _clear(self) -> None:
        if self._decoder is not None:
            while self._decoder.pool.rows:
                self._decoder.pool.remove_row(0)
        self._slots.clear()

    def _turn(self) -> None:
        for slot in [s for s in self._slots if s.request.cancelled.is_set()]:
            self._close(slot)
            self.cancelled_total += 1
        if self._waiting and len(self._slots) < self.max_batch and not self._prefilling():
            self._open(self._waiting.popleft())
        with self._lock:
            decoding = [slot for slot in self._slots if not slot.prefilling]
            prefilling = self._prefilling()
            if prefilling is not None:
                self._prefill(prefilling)
            if decoding:
                self._decode(decoding)

    def _prefilling(self) -> _Slot | None:
        return self._slots[-1] if self._slots and self._slots[-1].prefilling else None

    def _open(self, request: Request) -> None:
        """Give ``request`` a row of the pool (after the running rows); its prompt is read next."""
        assert self._decoder is not None
        try:
            if request.adapter != BASE_ADAPTER and request.adapter not in self._decoder.adapters:
                raise ValueError(f"adapter {request.adapter!r} is not loaded")
            self._decoder.pool.add_row(len(request.prompt) + request.sampling.max_new_tokens)
        except Exception as exc:
            request._finish(exc)
            return
        bounds = chunk_bounds(len(request.prompt), 0, self.prefill_chunk)
        self._slots.append(_Slot(request, bounds))

    def _prefill(self, slot: _Slot) -> None:
        """Read the next chunk of ``slot``'s prompt; after the last one, its first token."""
        assert self._decoder is not None
        request = slot.request
        end = next(bound for bound in slot.bounds if bound > slot.done)
        try:
            chunk = np.asarray([request.prompt[slot.done : end]])
            logits = self._decoder.run(self._slots.index(slot), chunk, (request.adapter,))
        except Exception as exc:  # this request's failure, never the others'
            log.exception("reading a prompt failed")
            self._close(slot, exc)
            return
        slot.done = end
        if not slot.prefilling:
            self._take_tokens([slot], logits)

    def _decode(self, slots: list[_Slot]) -> None:
        """One token for each of ``slots`` (rows ``0..len(slots)-1``) in one run of the model."""
        assert self._decoder is not None
        self.largest_batch = max(self.largest_batch, len(slots))
        try:
            ids = np.asarray([[slot.next_token] for slot in slots])
            logits = self._decoder.run(0, ids, tuple(slot.request.adapter for slot in slots), pad=self.exact)
        except Exception as exc:
            log.exception("a decode step failed")
            for slot in slots:
                self._close(slot, exc)
            return
        self._take_tokens(slots, logits)

    def _take_tokens(self, slots: list[_Slot], logits: np.ndarray) -> None:
        for slot, token in zip(slots, pick_tokens(torch.from_numpy(logits), slots), strict=True):
            request = slot.request
            if request.cancelled.is_set():
                self.cancelled_total += 1
                self._close(slot)
                continue
            if request._take(token, self.stop_ids):
                slot.next_token = token
                continue
            self.finished_total += 1
            self._close(slot)

    def _close(self, slot: _Slot, error: BaseException | None = None) -> None:
        if slot in self._slots:
            assert self._decoder is not None
            self._decoder.pool.remove_row(self._slots.index(slot))  # frees its keys and values
            self._slots.remove(slot)
        slot.request._finish(error)

    def _load_adapter(self, name: str, path: Path) -> None:
        assert self._decoder is not None
        self._decoder.load_adapter(name, path)

    def _unload_adapter(self, name: str) -> None:
        assert self._decoder is not None
        if name not in self._decoder.adapters:
            return
        for slot in [s for s in self._slots if s.request.adapter == name]:
            self._close(slot, ValueError(f"adapter {name!r} was removed while generating"))
        self._decoder.unload_adapter(name)
