"""Block-quantise a converted model's MatMul weights to int8 or int4, one weight at a time.

The onnxruntime-genai builder quantises by turning the whole graph, every weight at fp32, into
one protobuf in memory and handing it to onnxruntime's ``MatMulNBitsQuantizer``: its peak was
5.6 GB for a 0.5B model (0.99 GB of bf16 weights), which puts a 3B model near 34 GB
(docs/performance.md). Here the builder writes fp32 (it streams each tensor to disk), and each
MatMul weight is then read from that file, quantised with the same onnxruntime kernel and the
builder's own settings (blocks of 32, symmetric, ``accuracy_level`` 4), and written as the
quantised weight of a ``MatMulNBits`` node: the same bytes as the builder's (tested), one weight
in memory at a time.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

BLOCK = 32
ACCURACY_LEVEL = 4  # int8 activations on CPU, as the builder sets for int4 and int8


class _Blocks:
    """One weight's quantised blocks and scales, computed when the first of them is written."""

    def __init__(self, tensor: object, bits: int) -> None:
        self.tensor, self.bits = tensor, bits
        self.result: tuple[np.ndarray, np.ndarray] | None = None

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

    def packed(self) -> object:
        import onnx_ir as ir

        self.result = self._compute()
        return ir.Tensor(self.result[0])

    def scales(self) -> object:
        import onnx_ir as ir

        result = self.result or self._compute()
        self.result = None  # written: let it go
        return ir.Tensor(result[1])


def quantize_matmuls(source: Path, target: Path, bits: int, skip: re.Pattern[str]) -> int:
    """Write ``source`` to ``target`` (with ``target``.data beside it) with every MatMul whose
    weight is a constant fp32 matrix, except nodes named by ``skip``, as an ``bits``-bit
    ``MatMulNBits``; returns how many. ``target`` must not be in ``source``'s folder."""
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
        _untie(graph, weight)
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


def _untie(graph: object, weight: object) -> None:
    """Give the Transposes that read ``weight`` (a tied model's embeddings read the output layer's
    matrix) their own transposed fp32 copy, as the builder's quantised graphs do; the MatMul is
    then the weight's only reader and it can be quantised."""
    import onnx_ir as ir

    for user, _ in list(weight.uses()):  # type: ignore[attr-defined]
        if user.op_type != "Transpose" or list(user.attributes.get_ints("perm", [1, 0])) != [1, 0]:
            continue
        tensor = weight.const_value  # type: ignore[attr-defined]
        rows, cols = (int(d) for d in tensor.shape)
        copy = ir.Value(
            name=f"{weight.name}_transposed",  # type: ignore[attr-defined]
            const_value=ir.LazyTensor(partial(_transposed, tensor), ir.DataType.FLOAT, ir.Shape([cols, rows])),
        )
        graph.register_initializer(copy)  # type: ignore[attr-defined]
        ir.convenience.replace_all_uses_with(user.outputs[0], copy)
        graph.remove(user, safe=True)  # type: ignore[attr-defined]
