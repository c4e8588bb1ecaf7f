"""Load the sentence-transformers embedding model offline, as a LangChain ``Embeddings``."""

from __future__ import annotations

import threading
from pathlib import Path

from langchain_core.embeddings import Embeddings
from langchain_huggingface import HuggingFaceEmbeddings

from chatbot.config import EMBEDDED
from chatbot.models.device import resolve_device
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


def load_embeddings(embedding_model: str, device: str = "auto", batch_size: int = 32) -> HuggingFaceEmbeddings:
    """The embedding model with normalised vectors, so cosine similarity is a dot product."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = resolve_embedding_folder(embedding_model)
    return HuggingFaceEmbeddings(
        model_name=str(folder),
        model_kwargs={"device": str(resolve_device(device)), "local_files_only": True},
        encode_kwargs={"normalize_embeddings": True, "batch_size": batch_size},
    )


class LazyEmbeddings(Embeddings):
    """Loads the embedding model on the first text to embed, so a no-op sync never loads it."""

    def __init__(self, embedding_model: str, device: str = "auto") -> None:
        self.embedding_model = embedding_model
        self.device = device
        self._model: HuggingFaceEmbeddings | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> HuggingFaceEmbeddings:
        with self._lock:
            if self._model is None:
                self._model = load_embeddings(self.embedding_model, self.device)
            return self._model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.model.embed_query(text)
