"""The persistent Chroma collection and the record manager that tracks what is in it."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import chromadb
from chromadb.api import ClientAPI
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import NotFoundError
from langchain_chroma import Chroma
from langchain_classic.indexes import SQLRecordManager
from langchain_core.embeddings import Embeddings
from sqlalchemy import Engine

from chatbot.database import migrate

log = logging.getLogger(__name__)


def open_client(chroma_dir: Path, chroma_url: str | None = None) -> ClientAPI:
    """Embedded persistent Chroma in ``chroma_dir``, or a Chroma server (``chroma run``) at ``chroma_url``."""
    settings = ChromaSettings(anonymized_telemetry=False)
    if chroma_url:
        url = urlsplit(chroma_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"chroma_url must look like http://host:port, not {chroma_url!r}")
        port = url.port or (443 if url.scheme == "https" else 8000)
        return chromadb.HttpClient(host=url.hostname, port=port, ssl=url.scheme == "https", settings=settings)
    chroma_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(chroma_dir), settings=settings)


SPACE = "cosine"  # the collection's distance is 1 - cosine similarity


def similarity(distance: float) -> float:
    """The cosine similarity of a distance the collection returned (what ``min_relevance`` compares)."""
    return 1.0 - float(distance)


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0 when either is all zeros)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


class _ReopeningCollection:
    """The collection's methods, re-opened by name once when a call finds the collection gone."""

    def __init__(self, store: SharedChroma) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store._current_collection(), name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except NotFoundError:
                self._store.reopen()
                return getattr(self._store._current_collection(), name)(*args, **kwargs)

        return call


class SharedChroma(Chroma):
    """LangChain's Chroma store for a collection another instance may re-create (its index reset for
    a new embedding model, or a first sync): a call that finds the old collection gone re-opens it."""

    def _current_collection(self) -> chromadb.Collection:
        return super()._collection

    @property
    def _collection(self) -> Any:
        return _ReopeningCollection(self)

    def reopen(self) -> None:
        log.info("the collection %s was re-created elsewhere; re-opening it", self._collection_name)
        self._Chroma__ensure_collection()  # type: ignore[attr-defined]


def open_vector_store(
    chroma_dir: Path, collection: str, embeddings: Embeddings, chroma_url: str | None = None
) -> Chroma:
    """Open (or create) the collection, in cosine distance (see :func:`similarity`)."""
    client = open_client(chroma_dir, chroma_url)
    return SharedChroma(
        client=client,
        collection_name=collection,
        embedding_function=embeddings,
        collection_metadata={"hnsw:space": SPACE},
    )


RECIPE_KEY = "chatbot_recipe"


def collection_recipe(store: Chroma) -> str | None:
    """The recipe recorded on the collection (``chatbot.knowledge.recipe``; None before one was)."""
    value = (store._collection.metadata or {}).get(RECIPE_KEY)
    return value if isinstance(value, str) else None


def stored_chunks(store: Chroma) -> int:
    """How many chunks the collection holds."""
    return store._collection.count()


def made_by_this_model(store: Chroma, samples: int = 3, floor: float = 0.999) -> bool:
    """Whether the store's embedding model made its vectors: a few chunks are embedded again and
    compared (bf16 and fp32 vectors of one model agree to 0.9999; another model's do not come near)."""
    stored = store.get(limit=samples, include=["documents", "embeddings"])
    if not len(stored["ids"]) or store.embeddings is None:
        return False
    fresh = store.embeddings.embed_documents(list(stored["documents"]))
    return all(
        len(old) == len(new) and cosine_similarity(old, new) >= floor
        for old, new in zip(stored["embeddings"], fresh, strict=True)
    )


def record_recipe(store: Chroma, recipe: str) -> None:
    """Record the recipe on the collection, where every instance sharing it sees it."""
    # Chroma refuses an update that names the distance again; the space stays in the collection's configuration
    store._collection.modify(metadata={RECIPE_KEY: recipe})


def open_record_manager(engine: Engine, collection: str) -> SQLRecordManager:
    """The record manager of LangChain's indexing API, in ``engine``'s database (its table made by
    the records branch's migration). Instances that share one Chroma server must share it too."""
    migrate(engine, "records")
    return SQLRecordManager(f"chroma/{collection}", engine=engine)
