"""Block-quantise a converted model's MatMul weights to int8 or int4, one weight at a time.

The onnxruntime-genai builder quantises by turning the whole graph, every weight at fp32, into
one protobuf in memory and handing it to onnxruntime's ``MatMulNBitsQuantizer``: its peak was
5.6 GB for a 0.5B model (0.99 GB of bf16 weights), which puts a 3B model near 34 GB
(docs/performance.md). Here the builder writes fp32 (it streams each tensor to disk), and each
MatMul weight is then read from that file, quantised with the same onnxruntime kernel and the
builder's own settings (blocks of 32, symmetric, ``accuracy_level`` 4), and written as the
quantised weight of a ``MatMulNBits`` node: the same bytes as the builder's (tested), one weight
in memory at a time.

A large embedding table (``embeddings_min_bytes``) is stored at int8 as well: its ``Gather``
becomes a ``GatherBlockQuantized`` over blocks of 32 of each row, the layout and kernel of an
8-bit ``MatMulNBits`` weight. The builder keeps it at fp32 (its quantised gather is 4-bit only):
0.93 GB of a Qwen2.5-1.5B's converted model on disk, 0.24 GB at int8 (docs/performance.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

BLOCK = 32
ACCURACY_LEVEL = 4  # int8 activations on CPU, as the builder sets for int4 and int8


class _Quantized:
    """Quantised blocks and their scales, two initializers computed once, when the first of them
    is written, and let go after the second."""

    result: tuple[np.ndarray, np.ndarray] | None = None

    def _compute(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def packed(self) -> object:
        import onnx_ir as ir

        self.result = self._compute()
        return ir.Tensor(self.result[0])

    def scales(self) -> object:
        import onnx_ir as ir

        result = self.result or self._compute()
        self.result = None  # written: let it go
        return ir.Tensor(result[1])


class _Blocks(_Quantized):
    """One MatMul weight's blocks and scales."""

    def __init__(self, tensor: object, bits: int) -> None:
        self.tensor, self.bits = tensor, bits

    def _compute(self) -> tuple[np.ndarray, np.ndarray]:
        from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

        fp32 = np.ascontiguousarray(self.tensor.numpy(), dtype=np.float32)  # type: ignore[attr-defined]
        rows, cols = fp32.shape
        blocks = -(-rows // BLOCK)
        if blocks * BLOCK > rows:
            fp32 = np.pad(fp32, ((0, blocks * BLOCK - rows), (0, 0)))
        packed = np.zeros((cols, blocks, BLOCK * self.bits // 8), dtype=np.uint8)
        scales = np.zeros((cols, blocks), dtype=np.float32)
        zero_points = np.zeros((cols, -(-blocks * self.bits // 8)), dtype=np.uint8)  # unused: symmetric
        kernel = quantize_matmul_8bits if self.bits == 8 else quantize_matmul_4bits
        kernel(packed, fp32, scales, zero_points, BLOCK, cols, rows, True)
        del fp32  # a view of the mapped file: gone before the file is unmapped
        _release(self.tensor)
        return packed, scales


class _EmbeddingBlocks(_Quantized):
    """An embedding table's rows at int8 in blocks of 32 and their scales, computed a slice of
    rows at a time. ``columns(first, last)`` reads rows ``first..last`` transposed, ``[hidden, n]``
    (a tied model's output-layer matrix is already that way round)."""

    ROWS = 8192  # rows per slice: ~100 MB of fp32 at a hidden size of 3072

    def __init__(
        self, columns: Callable[[int, int], np.ndarray], rows: int, hidden: int, done: Callable[[], None]
    ) -> None:
        self.columns, self.rows, self.hidden, self.done = columns, rows, hidden, done
        self.values: tuple[object, object] | None = None  # its initializers, once made

    def _compute(self) -> tuple[np.ndarray, np.ndarray]:
        from onnxruntime.capi._pybind_state import quantize_matmul_8bits

        blocks = self.hidden // BLOCK
        packed = np.zeros((self.rows, blocks, BLOCK), dtype=np.uint8)
        scales = np.zeros((self.rows, blocks), dtype=np.float32)
        for first in range(0, self.rows, self.ROWS):
            last = min(first + self.ROWS, self.rows)
            fp32 = np.ascontiguousarray(self.columns(first, last), dtype=np.float32)
            unused = np.zeros((last - first, blocks), dtype=np.uint8)  # zero points: symmetric
            part, part_scales = packed[first:last], scales[first:last]
            quantize_matmul_8bits(part, fp32, part_scales, unused, BLOCK, last - first, self.hidden, True)
        self.done()
        return packed.reshape(self.rows, self.hidden), scales


def quantize_matmuls(
    source: Path, target: Path, bits: int, skip: re.Pattern[str], embeddings_min_bytes: int | None = None
) -> int:
    """Write ``source`` to ``target`` (with ``target``.data beside it) with every MatMul whose
    weight is a constant fp32 matrix, except nodes named by ``skip``, as an ``bits``-bit
    ``MatMulNBits``; returns how many. An embedding table of at least ``embeddings_min_bytes``
    (None: none) is stored at int8 too. ``target`` must not be in ``source``'s folder."""
    import onnx_ir as ir

    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, not {bits}")
    model = ir.load(str(source))  # external weights stay in their file until read
    graph = model.graph
    count = 0
    for node in list(graph):
        if node.op_type != "MatMul" or node.domain != "" or len(node.inputs) != 2 or skip.search(node.name or ""):
            continue
        weight = node.inputs[1]
        tensor = weight.const_value if weight is not None else None
        if tensor is None or len(tensor.shape) != 2 or tensor.dtype != ir.DataType.FLOAT:
            continue
        _untie(graph, weight, embeddings_min_bytes)
        if len(weight.uses()) != 1:
            continue
        rows, cols = (int(d) for d in tensor.shape)
        blocks = -(-rows // BLOCK)
        lazy = _Blocks(tensor, bits)
        packed = ir.Value(
            name=f"{weight.name}_Q{bits}",
            const_value=ir.LazyTensor(lazy.packed, ir.DataType.UINT8, ir.Shape([cols, blocks, BLOCK * bits // 8])),
        )
        scales = ir.Value(
            name=f"{weight.name}_scales",
            const_value=ir.LazyTensor(lazy.scales, ir.DataType.FLOAT, ir.Shape([cols, blocks])),
        )
        graph.register_initializer(packed)
        graph.register_initializer(scales)
        replacement = ir.node(
            "MatMulNBits",
            [node.inputs[0], packed, scales],
            {"K": rows, "N": cols, "bits": bits, "block_size": BLOCK, "accuracy_level": ACCURACY_LEVEL},
            domain="com.microsoft",
            name=f"{node.name}_Q{bits}",
        )
        ir.convenience.replace_nodes_and_values(graph, node, [node], [replacement], node.outputs, replacement.outputs)
        graph.initializers.pop(weight.name)
        count += 1
    if embeddings_min_bytes is not None:
        _quantize_gathers(graph, embeddings_min_bytes)
    # one writer: each weight's blocks are computed once, just before they are written
    # small constants (the Slice bounds shape inference reads) stay in the graph file
    ir.save(model, str(target), external_data=target.name + ".data", size_threshold_bytes=1024, max_workers=1)
    return count


def _release(tensor: object) -> None:
    """Unmap an external tensor's file: each maps the whole weights file, and the pages it read
    would otherwise stay in the process's memory until the end."""
    release = getattr(tensor, "release", None)
    if release is not None:
        release()


def _transposed(tensor: object) -> object:
    import onnx_ir as ir

    copy = np.array(tensor.numpy().T, order="C")  # type: ignore[attr-defined] - a copy, not a view
    _release(tensor)
    return ir.Tensor(copy)


def _untie(graph: object, weight: object, embeddings_min_bytes: int | None = None) -> None:
    """Give the Transposes that read ``weight`` (a tied model's embeddings read the output layer's
    matrix) their own transposed fp32 copy, as the builder's quantised graphs do, or, from
    ``embeddings_min_bytes``, their Gathers an int8 copy; the MatMul is then the weight's only
    reader and it can be quantised."""
    import onnx_ir as ir

    for user, _ in list(weight.uses()):  # type: ignore[attr-defined]
        if user.op_type != "Transpose" or list(user.attributes.get_ints("perm", [1, 0])) != [1, 0]:
            continue
        tensor = weight.const_value  # type: ignore[attr-defined]
        rows, cols = (int(d) for d in tensor.shape)
        # the [hidden, vocabulary] matrix: its columns are the table's rows
        columns = partial(_columns, tensor)
        name = f"{weight.name}_embedding"  # type: ignore[attr-defined]
        if _quantize_table(graph, user.outputs[0], tensor, columns, cols, rows, name, embeddings_min_bytes):
            graph.remove(user, safe=True)  # type: ignore[attr-defined]
            continue
        copy = ir.Value(
            name=f"{weight.name}_transposed",  # type: ignore[attr-defined]
            const_value=ir.LazyTensor(partial(_transposed, tensor), ir.DataType.FLOAT, ir.Shape([cols, rows])),
        )
        graph.register_initializer(copy)  # type: ignore[attr-defined]
        ir.convenience.replace_all_uses_with(user.outputs[0], copy)
        graph.remove(user, safe=True)  # type: ignore[attr-defined]


def _columns(tensor: object, first: int, last: int) -> np.ndarray:
    return tensor.numpy()[:, first:last]  # type: ignore[attr-defined]


def _rows_transposed(tensor: object, first: int, last: int) -> np.ndarray:
    return tensor.numpy()[first:last].T  # type: ignore[attr-defined]


def _is_row_gather(node: object, table: object) -> bool:
    """``node`` is a plain ``Gather`` of rows (axis 0) of ``table``."""
    return (
        node.op_type == "Gather"  # type: ignore[attr-defined]
        and node.domain == ""  # type: ignore[attr-defined]
        and node.inputs[0] is table  # type: ignore[attr-defined]
        and node.attributes.get_int("axis", 0) == 0  # type: ignore[attr-defined]
    )


def _gather_quantized(graph: object, gather: object, blocks: _EmbeddingBlocks, name: str) -> None:
    """Replace ``gather`` by a ``GatherBlockQuantized`` over ``blocks`` (their initializers made once)."""
    import onnx_ir as ir

    values = blocks.values
    if values is None:
        shape = ir.Shape([blocks.rows, blocks.hidden])
        packed = ir.Value(name=f"{name}_Q8", const_value=ir.LazyTensor(blocks.packed, ir.DataType.UINT8, shape))
        scales_shape = ir.Shape([blocks.rows, blocks.hidden // BLOCK])
        scales = ir.Value(
            name=f"{name}_scales", const_value=ir.LazyTensor(blocks.scales, ir.DataType.FLOAT, scales_shape)
        )
        graph.register_initializer(packed)  # type: ignore[attr-defined]
        graph.register_initializer(scales)  # type: ignore[attr-defined]
        values = blocks.values = (packed, scales)
    replacement = ir.node(
        "GatherBlockQuantized",
        [values[0], gather.inputs[1], values[1]],  # type: ignore[attr-defined]
        {"gather_axis": 0, "quantize_axis": 1, "block_size": BLOCK, "bits": 8},
        domain="com.microsoft",
        name=f"{gather.name}_Q8",  # type: ignore[attr-defined]
    )
    outputs = gather.outputs  # type: ignore[attr-defined]
    ir.convenience.replace_nodes_and_values(graph, gather, [gather], [replacement], outputs, replacement.outputs)


def _quantize_table(
    graph: object,
    table: object,
    tensor: object,
    columns: Callable[[int, int], np.ndarray],
    rows: int,
    hidden: int,
    name: str,
    min_bytes: int | None,
) -> bool:
    """Replace the Gathers of ``table`` (``rows`` x ``hidden`` fp32, read through ``columns``) by
    int8 ones, when it is at least ``min_bytes`` and only row Gathers read it; whether it did."""
    gathers = [reader for reader, _ in table.uses()]  # type: ignore[attr-defined]
    if min_bytes is None or rows * hidden * 4 < min_bytes or hidden % BLOCK or not gathers:
        return False
    if not all(_is_row_gather(gather, table) for gather in gathers):
        return False
    blocks = _EmbeddingBlocks(columns, rows, hidden, partial(_release, tensor))
    for gather in gathers:
        _gather_quantized(graph, gather, blocks, name)
    return True


def _quantize_gathers(graph: object, min_bytes: int) -> None:
    """Store each constant fp32 table of at least ``min_bytes`` that only row Gathers read at int8."""
    import onnx_ir as ir

    for initializer in list(graph.initializers.values()):  # type: ignore[attr-defined]
        tensor = initializer.const_value
        if tensor is None or len(tensor.shape) != 2 or tensor.dtype != ir.DataType.FLOAT:
            continue
        rows, hidden = (int(d) for d in tensor.shape)
        columns = partial(_rows_transposed, tensor)
        if _quantize_table(graph, initializer, tensor, columns, rows, hidden, initializer.name, min_bytes):
            graph.initializers.pop(initializer.name)  # type: ignore[attr-defined]
