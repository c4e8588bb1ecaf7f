"""Load the sentence-transformers embedding model offline, as a LangChain ``Embeddings``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_huggingface import HuggingFaceEmbeddings

from chatbot.config import EMBEDDED
from chatbot.digest import files_digest
from chatbot.models.device import resolve_device, resolve_dtype
from chatbot.models.embedded import ModelNotFoundError, minilm_folder


def resolve_embedding_folder(embedding_model: str) -> Path:
    """Turn the ``embedding_model`` setting into a sentence-transformers folder."""
    if embedding_model == EMBEDDED:
        return minilm_folder()
    path = Path(embedding_model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"embedding_model: {path} is not a sentence-transformers model folder (no config.json)"
        )
    return path


def embedding_fingerprint(folder: Path) -> str:
    """A short hash of the configs and weights of every module the model loads (a Dense layer
    included): two indexes' vectors are comparable only when it is equal."""
    files: list[Path] = []
    for module in [""] + _module_folders(folder):
        place = folder / module
        files += sorted(place.glob("*.json"))
        files += sorted(place.glob("*.safetensors")) or sorted(place.glob("*.bin"))
    stamps = tuple((str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files)
    return _digest(stamps)


def _module_folders(folder: Path) -> list[str]:
    try:
        modules = json.loads((folder / "modules.json").read_text())
        return sorted({str(module["path"]) for module in modules if module.get("path")})
    except (OSError, ValueError, TypeError, KeyError):
        return []  # a plain transformers folder: one module, the folder itself


@cache
def _digest(stamps: tuple[tuple[str, int, int], ...]) -> str:
    # keyed on size and mtime, so a sync re-hashes the weights only when a file was replaced
    return files_digest([Path(name) for name, _, _ in stamps])[:16]


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


class LazyEmbeddings(Embeddings):
    """Loads the embedding model on the first text to embed, so a no-op sync never loads it."""

    def __init__(self, embedding_model: str, device: str = "auto", dtype: str = "auto") -> None:
        self.embedding_model = embedding_model
        self.device = device
        self.dtype = dtype
        self.run: Callable[[Callable[[], Any]], Any] = _inline  # where the torch work runs (see ``run_on``)
        self._model: HuggingFaceEmbeddings | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> HuggingFaceEmbeddings:
        with self._lock:
            if self._model is None:
                self._model = load_embeddings(self.embedding_model, self.device, self.dtype)
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
