"""The persistent Chroma collection and the record manager that tracks what is in it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import chromadb
from chromadb.api import ClientAPI
from chromadb.config import Settings as ChromaSettings
from langchain_chroma import Chroma
from langchain_classic.indexes import SQLRecordManager
from langchain_core.embeddings import Embeddings


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


def open_vector_store(
    chroma_dir: Path, collection: str, embeddings: Embeddings, chroma_url: str | None = None
) -> Chroma:
    """Open (or create) the collection, in cosine distance (see :func:`similarity`)."""
    client = open_client(chroma_dir, chroma_url)
    return Chroma(
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


def open_record_manager(record_db: Path, collection: str, db_url: str | None = None) -> SQLRecordManager:
    """The record manager of LangChain's indexing API: SQLite beside the vectors, or ``db_url``.

    Instances that share one Chroma server must share the record manager too (one SQLAlchemy URL).
    """
    if not db_url:
        record_db.parent.mkdir(parents=True, exist_ok=True)
        db_url = f"sqlite:///{record_db}"
    manager = SQLRecordManager(f"chroma/{collection}", db_url=db_url)
    manager.create_schema()
    return manager
