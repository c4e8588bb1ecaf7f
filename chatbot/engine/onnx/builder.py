"""onnxruntime-genai's model builder, run with fixes for configs it does not read yet.

``python -m chatbot.engine.onnx.builder ARGS`` is ``python -m onnxruntime_genai.models.builder
ARGS`` after :func:`patch`. Each fix names the builder version it was written against; a builder
that reads the config itself makes the fix a no-op.

- Gemma 3 (builder 0.18, transformers 5): transformers keeps Gemma 3's rotary settings per layer
  type (``{"full_attention": {...}, "sliding_attention": {...}}``); the builder reads a flat
  ``rope_parameters`` and fails with ``KeyError: 'rope_type'``. Its global-layer theta would also
  fall back to 10,000 (Gemma 3's is 1,000,000), and a linear scaling of the global layers would
  reach the sliding layers' cache too. The fix flattens the settings to what the builder reads and
  builds each cache with its own layer type's scaling.
- Memory (builder 0.18): an initializer cast to another dtype (every weight: bf16 -> fp32) is
  evaluated on save as ``tensor.to(dtype)``, which keeps a transposed weight's strides, and the
  writer then makes a contiguous copy: two fp32 copies of each, 3.2 GB for a 3B model's 128k x
  3072 output layer. The fix casts straight into a contiguous tensor (the same bytes written), so
  a 3B model's build peaks 1.6 GB lower (docs/performance.md).
"""

from __future__ import annotations

import runpy
import sys
from typing import Any


def _rope_by_layer_type(config: Any) -> dict[str, dict] | None:
    text = getattr(config, "text_config", None) or config
    rope = getattr(text, "rope_parameters", None)
    if isinstance(rope, dict) and isinstance(rope.get("full_attention"), dict):
        return rope
    return None


def _rescale(parameters: dict) -> float:
    return float(parameters.get("factor", 1.0)) if parameters.get("rope_type") == "linear" else 1.0


def contiguous_cast(tensor: Any, dtype: Any) -> Any:
    """``tensor`` cast to the torch ``dtype`` in one new contiguous tensor, whatever its strides."""
    import torch

    return tensor.to(dtype, memory_format=torch.contiguous_format)


def _patch_casts(model_class: Any) -> None:
    import onnx_ir as ir
    import torch
    from onnx_ir.tensor_adapters import TorchTensor, to_torch_dtype

    original = model_class.make_initializer

    def make_initializer(self, tensor, /, name, *, to=None, raw=False):
        if to is None or raw or not isinstance(tensor, torch.Tensor):
            return original(self, tensor, name, to=to, raw=raw)
        dtype = to_torch_dtype(to)
        lazy = ir.LazyTensor(
            lambda: TorchTensor(contiguous_cast(tensor, dtype), name=name),
            dtype=to,
            shape=ir.Shape(tensor.shape),
            name=name,
        )
        value = self.make_value(name, lazy.dtype, lazy.shape)
        value.const_value = lazy
        self.model.graph.register_initializer(value)

    model_class.make_initializer = make_initializer


def patch() -> None:
    """Teach the builder transformers 5's Gemma 3 rotary settings, and to cast weights without a second copy."""
    import onnxruntime_genai.models  # noqa: F401 - puts the builder's folder on sys.path, as it imports it
    from builders import Gemma3Model  # the builder imports its classes under this top-level name
    from builders.base import Model

    if getattr(Gemma3Model, "_chatbot_patched", False):
        return
    _patch_casts(Model)
    original_init = Gemma3Model.__init__

    def __init__(self, config, *args, **kwargs):  # noqa: N807 - replaces the class's own
        by_type = _rope_by_layer_type(config)
        if by_type is not None:
            full = by_type["full_attention"]
            sliding = by_type.get("sliding_attention", full)
            self._chatbot_rope_scales = (_rescale(full), _rescale(sliding))
            text = getattr(config, "text_config", None)
            for target in [config] if text is None else [config, text]:
                target.rope_parameters = dict(full)
                target.rope_theta = full.get("rope_theta", 10000.0)
                target.rope_local_base_freq = sliding.get("rope_theta", 10000.0)
        original_init(self, config, *args, **kwargs)

    def make_rotary_embedding_multi_cache(self):
        global_scale, local_scale = getattr(self, "_chatbot_rope_scales", (None, None))
        self.cos_cache_global_name, self.sin_cache_global_name = "cos_cache_global", "sin_cache_global"
        if global_scale is not None:
            self.rope_attrs["rescale_factors"] = global_scale
        super(Gemma3Model, self).make_rotary_embedding_caches(
            cos_cache_name=self.cos_cache_global_name, sin_cache_name=self.sin_cache_global_name
        )
        self.rope_attrs["create_caches"] = True
        self.rope_attrs["theta"] = self.rope_local_theta
        if local_scale is not None:
            self.rope_attrs["rescale_factors"] = local_scale
        self.cos_cache_local_name, self.sin_cache_local_name = "cos_cache_local", "sin_cache_local"
        super(Gemma3Model, self).make_rotary_embedding_caches(
            cos_cache_name=self.cos_cache_local_name, sin_cache_name=self.sin_cache_local_name
        )

    Gemma3Model.__init__ = __init__
    Gemma3Model.make_rotary_embedding_multi_cache = make_rotary_embedding_multi_cache
    Gemma3Model._chatbot_patched = True


if __name__ == "__main__":
    patch()
    sys.argv[0] = "onnxruntime_genai.models.builder"
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)
