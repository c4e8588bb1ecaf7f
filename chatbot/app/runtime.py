"""The process-wide models: embeddings, chunker, and the chat engine with its adapters, loaded once.

Each is cached on the settings that shape it, so every ``Chatbot`` of a process (the server, the
UI, tests) shares one copy of the weights.
"""

from __future__ import annotations

import importlib.util
import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from chatbot.config import Settings

if TYPE_CHECKING:
    from chatbot.adapters.registry import AdapterRegistry
    from chatbot.engine.generation import Generator
    from chatbot.knowledge.chunking import Chunker
    from chatbot.knowledge.loaders import LoadLimits
    from chatbot.models.embeddings import LazyEmbeddings

log = logging.getLogger(__name__)


def resolve_engine(engine: str, device_type: str, quantize: str = "none") -> str:
    """ "onnx" or "torch" for the ``engine`` setting: auto takes onnxruntime on a CPU where installed."""
    if engine != "auto":
        return engine
    if device_type != "cpu" or quantize != "none":
        return "torch"
    return "onnx" if importlib.util.find_spec("onnxruntime_genai") is not None else "torch"


def embeddings_for(settings: Settings) -> LazyEmbeddings:
    """The embedding model of ``settings`` (shared by every chatbot with the same model, device, dtype)."""
    return _embeddings(settings.embedding_model, settings.device, settings.embedding_dtype)


def load_limits_for(settings: Settings) -> LoadLimits:
    """The bounds every file is read under (characters, pages, unzipped bytes, zip entries)."""
    from chatbot.knowledge.loaders import LoadLimits

    s = settings
    return LoadLimits(
        max_chars=s.max_file_chars,
        max_pages=s.max_pdf_pages,
        max_unzipped_bytes=int(s.max_unzipped_mb * 1_000_000),
        max_zip_entries=s.max_zip_entries,
    )


def chunker_for(settings: Settings) -> Chunker:
    """The chunker of ``settings``: sizes in the embedding model's tokens."""
    return _chunker(settings.embedding_model, settings.chunk_size, settings.chunk_overlap)


def embedding_fingerprint_for(settings: Settings) -> str:
    """The fingerprint of the embedding model of ``settings`` (what the index's vectors were made by)."""
    from chatbot.models.embeddings import embedding_fingerprint, resolve_embedding_folder

    return embedding_fingerprint(resolve_embedding_folder(settings.embedding_model))


def local_runtime(settings: Settings) -> tuple[Generator, AdapterRegistry]:
    """The chat engine and its adapter registry for ``settings``, loaded on first use."""
    s = settings
    return _runtime(
        s.base_model,
        s.models_cache_dir.resolve(),
        s.device,
        s.dtype,
        s.quantize,
        s.prepack,
        s.adapters_dir.resolve(),
        s.system_prompt,
        s.threads,
        s.max_batch,
        s.prefill_chunk_tokens,
        s.max_prompt_tokens,
        s.engine,
        s.onnx_precision,
        s.exact_batches,
    )


def evidence_embeddings_for(settings: Settings) -> LazyEmbeddings:
    """What scores evidence sentences: with the embedded embedding model, it with the shipped
    evidence-scorer LoRA merged (trained for that model only); with any other, the model itself."""
    from chatbot.config import EMBEDDED
    from chatbot.models.embeddings import EVIDENCE_LORA

    if settings.embedding_model != EMBEDDED or not EVIDENCE_LORA.is_file():
        return embeddings_for(settings)
    return _embeddings(settings.embedding_model, settings.device, settings.embedding_dtype, EVIDENCE_LORA)


@cache
def _embeddings(embedding_model: str, device: str, dtype: str, lora: Path | None = None) -> LazyEmbeddings:
    from chatbot.models.embeddings import LazyEmbeddings

    return LazyEmbeddings(embedding_model, device, dtype, lora)


@cache
def _chunker(embedding_model: str, chunk_size: int, chunk_overlap: int) -> Chunker:
    from chatbot.knowledge.chunking import Chunker
    from chatbot.models.embeddings import resolve_embedding_folder

    return Chunker.for_embedding_model(resolve_embedding_folder(embedding_model), chunk_size, chunk_overlap)


@cache
def _runtime(
    base_model: str,
    cache_dir: Path,
    device: str,
    dtype: str,
    quantize: str,
    prepack: bool,
    adapters_dir: Path,
    system_prompt: str,
    threads: int,
    max_batch: int,
    prefill_chunk: int,
    max_prompt_tokens: int,
    engine: str,
    onnx_precision: str,
    exact_batches: bool,
) -> tuple[Generator, AdapterRegistry]:
    if threads:
        import torch

        torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    from chatbot.adapters.registry import AdapterRegistry
    from chatbot.engine.generation import Generator
    from chatbot.models.base import load_base_model
    from chatbot.models.device import resolve_device

    hf_logging.disable_progress_bar()
    chosen = resolve_engine(engine, resolve_device(device).type, quantize)
    generator = None
    if chosen == "onnx":
        from chatbot.engine.onnx import onnx_generator

        base = load_base_model(base_model, cache_dir, "cpu", "float32", weights=False)
        try:
            generator = onnx_generator(
                base, cache_dir, onnx_precision, max_batch, prefill_chunk, max_prompt_tokens, threads, exact_batches
            )
        except Exception as exc:
            if engine == "onnx":
                raise
            log.warning("the ONNX engine is unavailable (%s); using transformers", exc)
    if generator is None:
        base = load_base_model(base_model, cache_dir, device, dtype, quantize)
        generator = Generator(base, max_batch, prepack, prefill_chunk, max_prompt_tokens, exact=exact_batches)
    registry = AdapterRegistry(adapters_dir, generator, system_prompt)
    registry.refresh()
    return generator, registry
