"""Wires settings, models, knowledge, adapters and the chain into the one object the CLI and UI use."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.adapters import AdapterRegistry, Domain
from chatbot.answer import Answer
from chatbot.chain import ChainRequest, RagChain
from chatbot.config import Settings
from chatbot.generation import BASE_ADAPTER, GenerationParams, Generator
from chatbot.knowledge.sync import KnowledgeStatus, KnowledgeSync, Progress, SyncReport

if TYPE_CHECKING:
    from chatbot.knowledge.watcher import FolderWatcher

log = logging.getLogger(__name__)


@cache
def _embeddings(embedding_model: str, device: str):  # noqa: ANN202 - HuggingFaceEmbeddings
    from chatbot.models.embeddings import LazyEmbeddings

    return LazyEmbeddings(embedding_model, device)


@cache
def _chunker(embedding_model: str, chunk_size: int, chunk_overlap: int):  # noqa: ANN202
    from chatbot.knowledge.chunking import Chunker
    from chatbot.models.embeddings import resolve_embedding_folder

    return Chunker.for_embedding_model(resolve_embedding_folder(embedding_model), chunk_size, chunk_overlap)


@cache
def _runtime(
    base_model: str, cache_dir: Path, device: str, dtype: str, adapters_dir: Path, system_prompt: str, threads: int
) -> tuple[Generator, AdapterRegistry]:
    """Load the base model once per adapter folder (adapters are injected into its modules)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    from chatbot.models.base import load_base_model

    hf_logging.disable_progress_bar()
    generator = Generator(load_base_model(base_model, cache_dir, device, dtype))
    registry = AdapterRegistry(adapters_dir, generator, system_prompt)
    registry.refresh()
    return generator, registry


class Chatbot:
    """The application: ``sync`` the knowledge folder, ``ask`` or ``stream`` answers, ``info``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.watchers: list[FolderWatcher] = []

    # Knowledge side (no language model needed)
    @cached_property
    def embeddings(self):  # noqa: ANN201
        return _embeddings(self.settings.embedding_model, self.settings.device)

    @cached_property
    def store(self):  # noqa: ANN201
        from chatbot.knowledge.store import open_vector_store

        s = self.settings
        return open_vector_store(s.chroma_dir, s.collection, self.embeddings, s.chroma_url)

    @cached_property
    def knowledge(self) -> KnowledgeSync:
        from chatbot.knowledge.manifest import Manifest
        from chatbot.knowledge.store import open_record_manager

        s = self.settings
        return KnowledgeSync(
            root=s.knowledge_dir,
            store=self.store,
            records=open_record_manager(s.record_db, s.collection, s.record_db_url),
            manifest=Manifest(s.data_dir / "manifest.sqlite"),
            chunker=_chunker(s.embedding_model, s.chunk_size, s.chunk_overlap),
            max_bytes=int(s.max_file_mb * 1_000_000),
            lock_path=s.data_dir / "sync.lock",
        )

    def sync(self, progress: Progress | None = None, show_progress: bool = False) -> SyncReport:
        """Make the index equal the knowledge folder."""
        return self.knowledge.sync(progress=progress, show_progress=show_progress)

    def status(self) -> KnowledgeStatus:
        return self.knowledge.status()

    def watch(self, on_sync: Callable[[SyncReport], object] | None = None, debounce_s: float = 1.0) -> FolderWatcher:
        """Start watching the knowledge folder; each settled burst of changes runs one sync."""
        from chatbot.knowledge.watcher import FolderWatcher

        def resync() -> None:
            report = self.sync()
            if on_sync is not None:
                on_sync(report)

        watcher = FolderWatcher(self.settings.knowledge_dir, resync, debounce_s=debounce_s).start()
        self.watchers.append(watcher)
        return watcher

    def watch_adapters(self, debounce_s: float = 1.0) -> FolderWatcher:
        """Start watching the adapters folder, so dropped-in or removed adapters show up at once."""
        from chatbot.knowledge.watcher import FolderWatcher

        watcher = FolderWatcher(self.settings.adapters_dir, self.adapters.refresh, debounce_s=debounce_s).start()
        self.watchers.append(watcher)
        return watcher

    def close(self) -> None:
        """Stop the watchers."""
        while self.watchers:
            self.watchers.pop().stop()

    # Generation side
    @cached_property
    def _runtime(self) -> tuple[Generator, AdapterRegistry]:
        s = self.settings
        return _runtime(
            s.base_model,
            s.models_cache_dir.resolve(),
            s.device,
            s.dtype,
            s.adapters_dir.resolve(),
            s.system_prompt,
            s.threads,
        )

    @property
    def generator(self) -> Generator:
        return self._runtime[0]

    @property
    def adapters(self) -> AdapterRegistry:
        return self._runtime[1]

    @cached_property
    def chain(self) -> RagChain:
        from chatbot.llm import LocalChatModel
        from chatbot.retrieval import ScoredRetriever

        s = self.settings
        params = GenerationParams(s.max_new_tokens, s.temperature, s.top_p, s.seed)
        retriever = ScoredRetriever(store=self.store, top_k=s.top_k, min_relevance=s.min_relevance)
        return RagChain(retriever, LocalChatModel(generator=self.generator, params=params))

    def request(
        self, question: str, adapter: str | None = None, use_retrieval: bool = True, **generation: Any
    ) -> ChainRequest:
        """A chain request with the domain's system prompt, scope and generation defaults applied."""
        question = question.strip()
        if not question:
            raise ValueError("the question is empty")
        self.adapters.refresh()  # a few stat calls; picks up adapter folders added or removed
        domain: Domain = self.adapters.get(adapter or BASE_ADAPTER)
        return ChainRequest(
            question=question,
            adapter=domain.name,
            use_retrieval=use_retrieval,
            system_prompt=domain.system_prompt,
            scope=domain.scope,
            generation={**domain.generation, **{k: v for k, v in generation.items() if v is not None}},
        )

    def stream(
        self, question: str, adapter: str | None = None, use_retrieval: bool = True, **generation: Any
    ) -> Iterator[str | Answer]:
        """Text pieces as they are generated, then the :class:`Answer`."""
        return self.chain.stream(self.request(question, adapter, use_retrieval, **generation))

    def ask(self, question: str, adapter: str | None = None, use_retrieval: bool = True, **generation: Any) -> Answer:
        """Answer one question with citations."""
        return self.chain.ask(self.request(question, adapter, use_retrieval, **generation))

    def adapter_rows(self) -> list[dict[str, Any]]:
        """One row per adapter folder (after a refresh), for ``chatbot adapters list`` and the UI."""
        from chatbot.adapter_check import CONFIG, WEIGHTS

        self.adapters.refresh()
        rows = []
        for domain in self.adapters.list():
            row: dict[str, Any] = {
                "name": domain.name,
                "display_name": domain.display_name,
                "description": domain.description,
                "status": "ready" if domain.ready else "refused",
                "error": domain.error,
                "warnings": domain.warnings,
                "base_model": self.generator.base.name if domain.folder is None else None,
                "rank": None,
                "size_bytes": 0,
                "folder": str(domain.folder) if domain.folder else None,
                "metrics": domain.manifest.get("training", {}),
            }
            if domain.folder is not None:
                trained_on = domain.manifest.get("base_model", {})
                row["base_model"] = trained_on.get("name") if isinstance(trained_on, dict) else str(trained_on)
                weights = domain.folder / WEIGHTS
                row["size_bytes"] = weights.stat().st_size if weights.is_file() else 0
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    row["rank"] = json.loads((domain.folder / CONFIG).read_text()).get("r")
            rows.append(row)
        return rows

    def info(self, load_model: bool = True) -> dict[str, Any]:
        """Models, paths and counts, for ``chatbot info``."""
        from chatbot.models.base import resolve_model_source
        from chatbot.models.embeddings import resolve_embedding_folder

        s = self.settings
        status = self.status()
        data: dict[str, Any] = {
            "base_model": {"setting": s.base_model, "source": str(resolve_model_source(s.base_model))},
            "embedding_model": {
                "setting": s.embedding_model,
                "folder": str(resolve_embedding_folder(s.embedding_model)),
            },
            "paths": {
                "knowledge_dir": str(s.knowledge_dir.resolve()),
                "adapters_dir": str(s.adapters_dir.resolve()),
                "data_dir": str(s.data_dir.resolve()),
            },
            "knowledge": {
                "documents": status.documents,
                "chunks": status.chunks,
                "last_sync": status.last_sync,
                "errors": status.errors,
            },
        }
        if load_model:
            base = self.generator.base
            data["base_model"].update(
                name=base.name,
                folder=str(base.folder),
                device=str(base.device),
                dtype=str(base.dtype).removeprefix("torch."),
            )
            data["adapters"] = [
                {"name": d.name, "description": d.description, "status": "ready" if d.ready else f"error: {d.error}"}
                for d in self.adapters.list()
            ]
        return data
