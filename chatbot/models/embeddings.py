"""Load the sentence-transformers embedding model offline, as a LangChain ``Embeddings``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from langchain_core.embeddings import Embeddings
from langchain_huggingface import HuggingFaceEmbeddings

from chatbot.models.device import resolve_device, resolve_dtype
from chatbot.models.sources import embedding_fingerprint, resolve_embedding_folder  # noqa: F401 - re-exported


def load_embeddings(
    embedding_model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 32
) -> HuggingFaceEmbeddings:
    """The embedding model with normalised vectors, so cosine similarity is a dot product."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = resolve_embedding_folder(embedding_model)
    torch_device = resolve_device(device)
    return HuggingFaceEmbeddings(
        model_name=str(folder),
        model_kwargs={
            "device": str(torch_device),
            "local_files_only": True,
            "model_kwargs": {"dtype": resolve_dtype(dtype, torch_device)},
        },
        encode_kwargs={"normalize_embeddings": True, "batch_size": batch_size},
    )


EVIDENCE_LORA = Path(__file__).with_name("evidence_lora.safetensors")  # chatbot/training/evidence_scorer.py


def merge_lora(model: torch.nn.Module, weights: Path) -> int:
    """Add a LoRA's ``B @ A * alpha / r`` into the linear layers of ``model`` it was trained on
    (its record beside the weights gives ``rank`` and ``alpha``); returns how many layers changed."""
    from safetensors.torch import load_file

    record = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    scale = record["alpha"] / record["rank"]
    tensors = load_file(str(weights))
    modules = dict(model.named_modules())
    merged = 0
    for name, a in tensors.items():
        if ".lora_A." not in name:
            continue
        target = name.split(".lora_A.")[0]
        b = tensors[name.replace(".lora_A.", ".lora_B.")]
        layer = modules[target]
        with torch.no_grad():
            layer.weight += (b.float() @ a.float() * scale).to(layer.weight.dtype)
        merged += 1
    return merged


class LazyEmbeddings(Embeddings):
    """Loads the embedding model on the first text to embed, so a no-op sync never loads it.

    With ``lora`` (the evidence scorer) that LoRA is merged into the model's weights once loaded.
    """

    def __init__(
        self, embedding_model: str, device: str = "auto", dtype: str = "auto", lora: Path | None = None
    ) -> None:
        self.embedding_model = embedding_model
        self.device = device
        self.dtype = dtype
        self.lora = lora
        self.run: Callable[[Callable[[], Any]], Any] = _inline  # where the torch work runs (see ``run_on``)
        self._model: HuggingFaceEmbeddings | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> HuggingFaceEmbeddings:
        with self._lock:
            if self._model is None:
                model = load_embeddings(self.embedding_model, self.device, self.dtype)
                if self.lora is not None:
                    merge_lora(model._client[0].auto_model, self.lora)  # noqa: SLF001 - its SentenceTransformer
                self._model = model
            return self._model

    def run_on(self, runner: Callable[[Callable[[], Any]], Any]) -> None:
        """Run loading and embedding through ``runner`` (the chat model's engine thread)."""
        self.run = runner

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if self.run is _inline:  # nothing else to keep going: one call, sorted by length as a whole
            return self.model.embed_documents(texts)
        vectors: list[list[float]] = []
        for start in range(0, len(texts), _TASK_SIZE):  # short tasks, so running chats keep streaming
            batch = texts[start : start + _TASK_SIZE]
            vectors.extend(self.run(lambda batch=batch: self.model.embed_documents(batch)))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self.run(lambda: self.model.embed_query(text))


_TASK_SIZE = 32


def _inline(task: Callable[[], Any]) -> Any:
    return task()
