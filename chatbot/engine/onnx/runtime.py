"""The converted decoder on onnxruntime: one key/value pool for the batch, one run per step.

Rows of a batch may be on different LoRA adapters: each LoRA branch of the converted graph takes
its A and B as inputs with a leading batch axis (``[rows, in, rank]``, ``[rows, rank, out]``), so
a step gathers every row's adapter into one stacked input (zeros for the base model, ranks padded
with zeros; built once per make-up of the batch) and reads the model's weights once for all rows.

A row's logits do not depend on its batch, bit for bit: measured on a 2-core AMD EPYC, the
quantised MatMul computes one row (a GEMV) differently from two or more (a GEMM; up to 3e-5
apart), while rows of any batch of two or more agree exactly. So with ``pad`` a decode step of
one row runs with a second, padding row (10.4 -> 14.0 ms a step here, hence a setting), and the
LoRA inputs are always stacked per row (a broadcast adapter folds the rows into one GEMM, again
another path; base rows add exact zeros). A run whose rows are all on the base model takes the
same graph without LoRA branches (same weights, same kernels, the zeros not added: the same
logits for less work), when the conversion wrote one.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from chatbot.engine.onnx.convert import PLAIN_FILE
from chatbot.vocabulary import BASE_ADAPTER

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
LENGTH_STEP = 256  # the pool's length grows in steps of this many tokens
_FEEDS_KEPT = 2  # stacked inputs for 8 rows at rank 8 take ~80 MB

Lora = dict[str, np.ndarray]  # input name -> [in, rank] (A) or [rank, out] (B)


class KVPool:
    """Keys and values of the rows in use: per layer, one ``[rows, kv_heads, length, head]`` array each.

    onnxruntime's GroupQueryAttention reads a row's past and writes its new keys in place (past and
    present share the buffer), so a step copies nothing. Rows ``0..n-1`` are in use, in order; a
    removed row's successors move up one place.
    """

    def __init__(self, layers: int, kv_heads: int, head_size: int, max_rows: int) -> None:
        self.layers = layers
        self.row_shape = (kv_heads, head_size)
        self.max_rows = max_rows
        self.arrays: list[np.ndarray] = []  # key, value of layer 0, then of layer 1, ...
        self.lengths: list[int] = []  # tokens held by each row
        self.version = 0  # counts reallocations (a binding to older arrays is stale)

    @property
    def rows(self) -> int:
        """Rows in use."""
        return len(self.lengths)

    @property
    def capacity(self) -> tuple[int, int]:
        """(rows, tokens per row) the arrays hold now."""
        if not self.arrays:
            return 0, 0
        return self.arrays[0].shape[0], self.arrays[0].shape[2]

    def add_row(self, tokens: int) -> int:
        """A new empty row with room for ``tokens``; returns its index."""
        if self.rows >= self.max_rows:
            raise RuntimeError("the key/value pool is full")
        self._grow(self.rows + 1, tokens)
        self.lengths.append(0)
        return self.rows - 1

    def remove_row(self, index: int) -> None:
        """Drop row ``index``; the rows after it move up one place. An empty pool frees its memory."""
        later = self.lengths[index + 1 :]
        if later:
            span = max(later)
            for array in self.arrays:
                array[index : self.rows - 1, :, :span] = array[index + 1 : self.rows, :, :span]
        del self.lengths[index]
        if not self.lengths:
            self.arrays = []
            self.version += 1

    def _grow(self, rows: int, tokens: int) -> None:
        have_rows, have_tokens = self.capacity
        if rows <= have_rows and tokens <= have_tokens:
            return
        new_rows = min(max(rows, 2 * have_rows, 2), self.max_rows)  # 2: room for a padding row
        new_tokens = max(have_tokens, -(-tokens // LENGTH_STEP) * LENGTH_STEP)
        kv_heads, head_size = self.row_shape
        grown = []
        for old in self.arrays or [None] * (2 * self.layers):
            array = np.zeros((new_rows, kv_heads, new_tokens, head_size), np.float32)
            if old is not None and self.rows:
                array[: self.rows, :, :have_tokens] = old[: self.rows]
            grown.append(array)
        self.arrays = grown
        self.version += 1


_threads_lock = threading.Lock()
_threads_set = False


def _global_threads(threads: int) -> None:
    """Size the process's onnxruntime thread pool once (the first decoder's ``threads`` stay)."""
    global _threads_set
    import onnxruntime as ort

    with _threads_lock:
        if not _threads_set:
            try:
                ort.set_global_thread_pool_sizes(threads, 1)
            except Exception as exc:  # created already, by someone else in this process
                log.info("onnxruntime's global thread pool exists already (%s)", exc)
            _threads_set = True


# The graph without LoRA branches makes base rows' steps ~20 % faster but is a second session with
# its own copy of the packed weights: kept while that copy is small (the embedded model: +0.2 GB);
# above it, memory wins (a 3B model served at 9.9 GB with both sessions; docs/performance.md).
PLAIN_GRAPH_MAX_BYTES = 1 << 30


class Decoder:
    """Sessions on the converted model: run one chunk for a range of the pool's rows."""

    def __init__(self, model_dir: Path, threads: int, max_rows: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # One thread pool for both sessions: with a pool each, the idle pool's spinning threads
        # took the cores from the other after every switch (+30 ms per request alternating base
        # and adapter rows, measured; the same steps otherwise).
        _global_threads(threads)
        options.use_per_session_threads = False
        plain = model_dir / PLAIN_FILE
        weights = model_dir / (MODEL_FILE + ".data")
        small = not weights.is_file() or weights.stat().st_size <= PLAIN_GRAPH_MAX_BYTES
        self.session = ort.InferenceSession(str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        self.plain = (
            ort.InferenceSession(str(plain), options, providers=["CPUExecutionProvider"])
            if plain.is_file() and small
            else None
        )
        config = json.loads((model_dir / "genai_config.json").read_text())["model"]["decoder"]
        self.pool = KVPool(config["num_hidden_layers"], config["num_key_value_heads"], config["head_size"], max_rows)
        self.lora_shapes: dict[str, tuple[int | None, int | None]] = {}
        for value in self.session.get_inputs():
            if ".lora_" in value.name:
                rows, columns = value.shape[1:]
                self.lora_shapes[value.name] = (
                    rows if isinstance(rows, int) else None,
                    columns if isinstance(columns, int) else None,
                )
        self.adapters: dict[str, Lora] = {}
        self._feeds: OrderedDict[tuple[str, ...], Lora] = OrderedDict()
        self._bound: dict[bool, tuple[tuple, Any, Lora]] = {}  # per graph (plain or not): the last I/O binding

    # Adapters

    def load_adapter(self, name: str, path: Path) -> None:
        """Load (or replace) adapter ``name`` from an ``.onnx_adapter`` file."""
        import onnxruntime as ort

        adapter = ort.AdapterFormat.read_adapter(str(path))
        weights = {key: np.array(value.numpy(), np.float32) for key, value in adapter.get_parameters().items()}
        unknown = sorted(set(weights) - set(self.lora_shapes))
        if unknown:
            raise ValueError(f"adapter {name!r} has inputs the model lacks: {', '.join(unknown[:3])}")
        for key, value in weights.items():
            rows, columns = self.lora_shapes[key]
            if (
                value.ndim != 2
                or (rows is not None and value.shape[0] != rows)
                or (columns is not None and value.shape[1] != columns)
            ):
                raise ValueError(f"adapter {name!r}: {key} has shape {list(value.shape)}, which the model cannot take")
        self.adapters = {**self.adapters, name: weights}  # replaced whole: other threads list it
        self._feeds.clear()
        self._bound.clear()

    def unload_adapter(self, name: str) -> None:
        """Forget adapter ``name``."""
        self.adapters = {key: value for key, value in self.adapters.items() if key != name}
        self._feeds.clear()
        self._bound.clear()

    def lora_feed(self, adapters: tuple[str, ...]) -> Lora:
        """The LoRA inputs for rows on ``adapters`` (one name per row), cached per make-up."""
        feed = self._feeds.get(adapters)
        if feed is None:
            feed = self._stack(adapters)
            self._feeds[adapters] = feed
            while len(self._feeds) > _FEEDS_KEPT:
                self._feeds.popitem(last=False)
        self._feeds.move_to_end(adapters)
        return feed

    def _stack(self, adapters: tuple[str, ...]) -> Lora:
        feed: Lora = {}
        for name, (rows, columns) in self.lora_shapes.items():
            parts = [self.adapters[a].get(name) if a != BASE_ADAPTER else None for a in adapters]
            ranks = [part.shape[1] if rows is not None else part.shape[0] for part in parts if part is not None]
            rank = max(ranks, default=1)
            shape = (rows, rank) if rows is not None else (rank, columns)
            stacked = np.zeros((len(adapters), *shape), np.float32)
            for index, part in enumerate(parts):
                if part is not None:
                    stacked[index, : part.shape[0], : part.shape[1]] = part
            feed[name] = stacked
        return feed

    # Running the model

    def run(self, first: int, ids: np.ndarray, adapters: tuple[str, ...], pad: bool = False) -> np.ndarray:
        """Read ``ids`` (``[rows, tokens]``) into rows ``first..``; the last position's logits per row.

        ``pad``: a decode step; a lone row then runs beside the next row of the pool, which may be
        a prompt being read: the step writes one position past that row's length, which its next
        chunk or step overwrites before anything reads it, and its length stays as it was.
        """
        pool = self.pool
        count, tokens = ids.shape
        if pad and count == 1 and pool.capacity[0] > first + 1:
            ids = np.concatenate([ids, ids])
            adapters = (*adapters, BASE_ADAPTER)
        rows = len(ids)
        lengths = np.asarray((pool.lengths + [0])[first : first + rows], np.int64) + tokens
        plain = self.plain is not None and all(adapter == BASE_ADAPTER for adapter in adapters)
        binding = self._binding(first, rows, adapters, plain)
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids, np.int64))
        mask = (np.arange(int(lengths.max()))[None, :] < lengths[:, None]).astype(np.int64)
        binding.bind_cpu_input("attention_mask", mask)
        (self.plain if plain else self.session).run_with_iobinding(binding)
        for row in range(first, first + count):
            pool.lengths[row] += tokens
        return binding.get_outputs()[0].numpy()[:count, -1].copy()  # the bound buffer is reused by the next run

    def _binding(self, first: int, rows: int, adapters: tuple[str, ...], plain: bool) -> Any:
        """The I/O binding of the pool's rows ``first..first+rows`` and the LoRA inputs, kept while they hold."""
        pool = self.pool
        key = (first, rows, pool.version, adapters)
        bound = self._bound.get(plain)
        if bound is not None and bound[0] == key:
            return bound[1]
        binding = (self.plain if plain else self.session).io_binding()  # ``plain`` only when there is one
        binding.bind_output("logits")
        shape = [rows, pool.row_shape[0], pool.capacity[1], pool.row_shape[1]]
        for layer in range(pool.layers):
            for kind, array in (("key", pool.arrays[2 * layer]), ("value", pool.arrays[2 * layer + 1])):
                address = array[first : first + rows].ctypes.data
                binding.bind_input(f"past_key_values.{layer}.{kind}", "cpu", 0, np.float32, shape, address)
                binding.bind_output(f"present.{layer}.{kind}", "cpu", 0, np.float32, shape, address)
        feed = {} if plain else self.lora_feed(adapters)
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        self._bound[plain] = (key, binding, feed)  # the feed stays alive while the binding points at it
        return binding
