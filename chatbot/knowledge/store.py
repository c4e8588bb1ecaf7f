"""The persistent Chroma collection and the record manager that tracks what is in it."""

from __future__ import annotations

from pathlib import Path

import chromadb
from chromadb.config import Settings as ChromaSettings
from langchain_chroma import Chroma
from langchain_classic.indexes import SQLRecordManager
from langchain_core.embeddings import Embeddings


def open_vector_store(chroma_dir: Path, collection: str, embeddings: Embeddings) -> Chroma:
    """Open (or create) the persistent collection; cosine distance so scores are similarities."""
    chroma_dir.mkdir(parents=True, exist_ok=True)
    client = chromadb.PersistentClient(path=str(chroma_dir), settings=ChromaSettings(anonymized_telemetry=False))
    return Chroma(
        client=client,
        collection_name=collection,
        embedding_function=embeddings,
        collection_metadata={"hnsw:space": "cosine"},
    )


def open_record_manager(record_db: Path, collection: str) -> SQLRecordManager:
    """The record manager of LangChain's indexing API, in SQLite beside the vectors."""
    record_db.parent.mkdir(parents=True, exist_ok=True)
    manager = SQLRecordManager(f"chroma/{collection}", db_url=f"sqlite:///{record_db}")
    manager.create_schema()
    return manager
