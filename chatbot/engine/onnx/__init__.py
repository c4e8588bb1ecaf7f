"""The ONNX engine: the model converted by onnxruntime-genai's builder, its adapters, batched runs on onnxruntime."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from chatbot.engine.generation import Generator
from chatbot.models.base import BaseModel


def onnx_generator(
    base: BaseModel,
    cache_dir: Path,
    precision: str = "int8",
    max_batch: int = 8,
    prefill_chunk: int = 256,
    max_prompt_tokens: int = 0,
    threads: int = 0,
    exact_batches: bool = False,
) -> Generator:
    """A :class:`Generator` on the ONNX engine; converts the base model first if not cached yet."""
    from chatbot.engine.onnx.convert import convert_model
    from chatbot.engine.onnx.engine import OnnxEngine

    model_dir = convert_model(base.folder, base.model, base.fingerprint, cache_dir, precision)
    engine = partial(
        OnnxEngine, model_dir, max_batch=max_batch, prefill_chunk=prefill_chunk, threads=threads, exact=exact_batches
    )
    return Generator(base, max_batch, False, prefill_chunk, max_prompt_tokens, engine=engine)
