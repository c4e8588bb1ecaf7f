"""Continuous batching: concurrent requests decode together, each with its own adapter.

One worker thread owns the model. A new request is prefilled alone (reusing the cached
key/values of its system-prompt prefix) and then joins the running batch at the next step;
every step decodes one token for every row in a single forward pass, each row on its own LoRA
adapter (the pass's routing comes from whoever loaded the adapters: :mod:`chatbot.engine.routing`).
Finished, cancelled or failed rows leave the batch without disturbing the others.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import torch
from transformers import DynamicCache

from chatbot.engine.kv_cache import BatchCache, PrefixStore, snapshot
from chatbot.engine.request import Request, chunk_bounds, pick_tokens
from chatbot.engine.routing import BaseOnly, Routing
from chatbot.engine.worker import EngineWorker
from chatbot.vocabulary import BASE_ADAPTER, AdapterId

log = logging.getLogger(__name__)

PREFILL_CHUNK = 256  # prompt tokens prefilled between two decode steps


@cache
def _cache_argument(model_class: type) -> str:
    """The name the model's forward takes its KV cache by: ``cache`` (transformers >= 5.2x, where
    ``past_key_values`` is deprecated) or ``past_key_values`` (earlier 5.x)."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


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


class BatchEngine(EngineWorker):
    """Decodes every submitted request in one shared loop on ``model()`` (the current model).

    ``model`` is a callable because an adapter wrapper may replace the plain model once the first
    adapter is loaded; ``routing`` maps a pass's rows to adapters (base only until set). ``lock``
    is held for each forward pass; hold it to add or remove adapters.

    Each loop iteration reads one chunk (at most ``prefill_chunk`` tokens) of one waiting prompt,
    taking the prompts in turn, then decodes one token for every running row: a long prompt never
    stalls the others for more than one chunk, and a short one is not stuck behind it.

    Other torch work of the process (the embedding model) runs here too, through :meth:`call`:
    a second thread running parallel torch ops made libgomp throttle its worker threads (more of
    them than cores), which halved this thread's decode speed for the rest of the process.
    """

    thread_name = "batch-engine"

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
        self.routing: Routing = BaseOnly()
        super().__init__()
        self._prefilling: deque[_Prefill] = deque()
        self._rows: list[_Row] = []
        self._batch = BatchCache()
        self._threads = torch.get_num_threads()
        self._prepare = prepare
        self._launch()

    def forget_adapter(self, adapter: AdapterId) -> None:
        """Drop cached prefixes of ``adapter``; call while holding the lock, after changing it."""
        self.prefixes.forget(adapter)

    # The worker thread from here on.

    def _busy_rows(self) -> int:
        return len(self._prefilling) + len(self._rows)

    def _unfinished(self) -> list[Request]:
        return [*(p.request for p in self._prefilling), *(r.request for r in self._rows)]

    def _clear(self) -> None:
        self._prefilling.clear()
        self._rows, self._batch = [], BatchCache()

    def _start(self) -> None:
        # A thread that runs torch ops must set its own thread count: without it this
        # thread's small kernels ran about half as fast here. ``prepare`` runs here too,
        # because oneDNN-packed weights are fast only in the thread that packed them.
        torch.set_num_threads(self._threads)
        if self._prepare is not None:
            self._prepare()

    def _turn(self) -> None:
        self._drop_cancelled()
        while self._waiting and len(self._rows) + len(self._prefilling) < self.max_batch:
            request = self._waiting.popleft()
            bounds = chunk_bounds(len(request.prompt), request.prefix_length, self.prefill_chunk)
            self._prefilling.append(_Prefill(request, bounds))
        if self._prefilling:
            self._prefill_chunk()
        if self._rows:
            self._step()

    def _drop_cancelled(self) -> None:
        """Finish requests whose reader went away while their prompt was being read."""
        for prefill in [p for p in self._prefilling if p.request.cancelled.is_set()]:
            self._prefilling.remove(prefill)
            prefill.request._finish()
            self.cancelled_total += 1

    def _forward(self, input_ids: torch.Tensor, adapters: list[str], cache: object, **kwargs: object):  # noqa: ANN202
        model = self._model()
        routing = self.routing.forward_kwargs(model, adapters, int(input_ids.shape[1]))
        kwargs[_cache_argument(type(getattr(model, "get_base_model", lambda: model)()))] = cache
        return model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **routing, **kwargs)

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
        output = self._forward(ids, [request.adapter], cache=prefill.cache, position_ids=positions)
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
        if request._take(token, self.stop_ids):
            return True
        self.finished_total += 1
        request._finish()
        return False

    def _drop_unloaded(self) -> None:
        """Fail the requests whose adapter was removed since they started (mid-prompt or mid-answer)."""
        loaded = self.routing.loaded(self._model()) | {BASE_ADAPTER}

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
                    cache=self._batch.cache,
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
