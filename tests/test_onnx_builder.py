"""The fixes the app runs onnxruntime-genai's model builder with (``chatbot.engine.onnx.builder``)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
ir = pytest.importorskip("onnx_ir")
pytest.importorskip("onnxruntime_genai")


class _Graph:
    """What ``Model.make_initializer`` touches of the builder: ``make_value`` and the graph."""

    def __init__(self) -> None:
        self.model = ir.Model(ir.Graph([], [], nodes=[]), ir_version=10)

    def make_value(self, name, dtype, shape):
        return ir.Value(name=name, type=ir.TensorType(dtype), shape=shape)


def test_a_transposed_weight_is_cast_into_one_contiguous_copy_with_the_same_bytes():
    from chatbot.engine.onnx import builder

    builder.patch()
    builder.patch()  # twice is once
    from builders.base import Model

    weight = torch.randn(96, 40, dtype=torch.bfloat16)
    holder = _Graph()
    Model.make_initializer(holder, weight.T, "lm_head.MatMul.weight", to=ir.DataType.FLOAT)
    lazy = holder.model.graph.initializers["lm_head.MatMul.weight"].const_value
    assert isinstance(lazy, ir.LazyTensor)
    assert (lazy.dtype, tuple(lazy.shape)) == (ir.DataType.FLOAT, (40, 96))
    evaluated = lazy.raw()  # the thunk the writer evaluates
    # the writer copies a strided tensor before writing it; a contiguous one is written as it is
    assert evaluated.raw.is_contiguous() and evaluated.raw.dtype == torch.float32
    assert lazy.tobytes() == weight.T.float().contiguous().numpy().tobytes()

    # without a cast, the builder's own path is taken unchanged
    plain = torch.arange(6, dtype=torch.int64)
    Model.make_initializer(holder, plain, "ids")
    assert holder.model.graph.initializers["ids"].const_value.numpy().tolist() == list(range(6))


def test_contiguous_cast_keeps_values_and_makes_no_strided_result():
    from chatbot.engine.onnx.builder import contiguous_cast

    weight = torch.randn(8, 5, dtype=torch.bfloat16)
    cast = contiguous_cast(weight.T, torch.float32)
    assert cast.is_contiguous() and torch.equal(cast, weight.T.float())
    assert not weight.T.to(torch.float32).is_contiguous()  # what the builder's own cast gives
