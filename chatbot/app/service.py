"""Wires settings, models, knowledge, adapters and the chain into the one object the CLI and UI use."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.adapters.registry import AdapterRegistry, Domain
from chatbot.config import Settings
from chatbot.engine.generation import Generator
from chatbot.knowledge.sync import KnowledgeStatus, KnowledgeSync, Progress, SyncReport
from chatbot.rag.answer import Answer
from chatbot.rag.chain import ChainRequest, RagChain
from chatbot.rag.conversation import Turn, joined_query
from chatbot.vocabulary import BASE_ADAPTER, GenerationParams, InputError, clean_text

if TYPE_CHECKING:
    from chatbot.backends.remote import RemoteAdapters, RemoteChatModel
    from chatbot.chats import ChatStore, ConversationInfo, SavedTurn
    from chatbot.knowledge.watcher import FolderWatcher

log = logging.getLogger(__name__)


@cache
def _embeddings(embedding_model: str, device: str, dtype: str):  # noqa: ANN202 - LazyEmbeddings
    from chatbot.models.embeddings import LazyEmbeddings

    return LazyEmbeddings(embedding_model, device, dtype)


@cache
def _chunker(embedding_model: str, chunk_size: int, chunk_overlap: int):  # noqa: ANN202
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
    """Load the base model once per adapter folder and engine (adapters are loaded into the engine)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

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
        generator = Generator(base, max_batch, prepack, prefill_chunk, max_prompt_tokens)
    registry = AdapterRegistry(adapters_dir, generator, system_prompt)
    registry.refresh()
    return generator, registry


def resolve_engine(engine: str, device_type: str, quantize: str = "none") -> str:
    """ "onnx" or "torch" for the ``engine`` setting: auto takes onnxruntime-genai on a CPU where installed."""
    if engine != "auto":
        return engine
    if device_type != "cpu" or quantize != "none":
        return "torch"
    import importlib.util

    return "onnx" if importlib.util.find_spec("onnxruntime_genai") is not None else "torch"


@dataclass
class SyncActivity:
    """The sync running now (if any) and the last one's result, for the Knowledge tab."""

    running: bool = False
    stage: str = ""
    done: int = 0
    total: int = 0
    last_report: SyncReport | None = None
    last_error: str | None = None


class Chatbot:
    """The application: ``sync`` the knowledge folder, ``ask`` or ``stream`` answers, ``info``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.watchers: list[FolderWatcher] = []
        self.activity = SyncActivity()

    # Knowledge side (no language model needed)
    @cached_property
    def embeddings(self):  # noqa: ANN201
        return _embeddings(self.settings.embedding_model, self.settings.device, self.settings.embedding_dtype)

    @cached_property
    def store(self):  # noqa: ANN201
        from chatbot.knowledge.store import open_vector_store

        s = self.settings
        return open_vector_store(s.chroma_dir, s.collection, self.embeddings, s.chroma_url)

    @cached_property
    def knowledge(self) -> KnowledgeSync:
        from chatbot.knowledge.loaders import LoadLimits
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
            keywords=self.keywords,
            limits=LoadLimits(
                max_chars=s.max_file_chars,
                max_pages=s.max_pdf_pages,
                max_unzipped_bytes=int(s.max_unzipped_mb * 1_000_000),
                max_zip_entries=s.max_zip_entries,
            ),
        )

    @cached_property
    def keywords(self):  # noqa: ANN201 - KeywordIndex
        from chatbot.knowledge.keywords import KeywordIndex

        return KeywordIndex(self.settings.data_dir / "keywords.sqlite")

    def sync(self, progress: Progress | None = None, show_progress: bool = False) -> SyncReport:
        """Make the index equal the knowledge folder (``activity`` shows how far it got)."""
        activity = self.activity

        def track(stage: str, done: int, total: int) -> None:
            activity.stage, activity.done, activity.total = stage, done, total
            if progress is not None:
                progress(stage, done, total)

        activity.running, activity.stage, activity.done, activity.total = True, "scanning", 0, 0
        try:
            report = self.knowledge.sync(progress=track, show_progress=show_progress)
        except Exception as exc:
            activity.last_error = str(exc) or type(exc).__name__
            raise
        finally:
            activity.running = False
        activity.last_report, activity.last_error = report, None
        return report

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

    def engine_load(self) -> dict[str, int]:
        """Answers the local engine holds now, and how many it ended because their reader went away."""
        if self.remote or "_runtime" not in self.__dict__:
            return {"generating": 0, "cancelled": 0}
        engine = self.generator.engine
        return {"generating": engine.busy, "cancelled": engine.cancelled_total}

    def stop_generating(self) -> None:
        """End every open answer now ("shutting down") and refuse new ones; returns at once.

        For the server's first SIGTERM: open streams end with an error event instead of holding
        the shutdown until their last token.
        """
        if not self.remote and "_runtime" in self.__dict__:
            self.generator.engine.stop()

    # Generation side
    @cached_property
    def _runtime(self) -> tuple[Generator, AdapterRegistry]:
        s = self.settings
        runtime = _runtime(
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
        self.embeddings.run_on(runtime[0].engine.call)  # all torch work on one thread (see BatchEngine.call)
        return runtime

    def load(self) -> None:
        """Load the chat model now (a no-op for remote generation).

        Call it before a sync that may embed: once the model is loaded, embedding runs on its
        engine thread, and torch work on a second thread would halve decode speed for good.
        """
        if not self.remote:
            self._runtime  # noqa: B018

    @cached_property
    def _remote(self) -> tuple[RemoteChatModel, RemoteAdapters]:
        from chatbot.backends.remote import RemoteAdapters, RemoteChatModel

        s = self.settings
        llm = RemoteChatModel(
            base_url=s.generation_url,
            api_key=s.generation_api_key,
            base_model=s.generation_base_model,
            extra_body=s.generation_extra_body,
            params=self._params,
        )
        return llm, RemoteAdapters(llm, s.adapters_dir.resolve(), s.system_prompt)

    @property
    def remote(self) -> bool:
        """Whether generation runs on a remote server (``generation_url``)."""
        return bool(self.settings.generation_url)

    @property
    def generator(self) -> Generator:
        if self.remote:
            raise RuntimeError("generation is remote (generation_url is set); there is no local model")
        return self._runtime[0]

    @property
    def adapters(self) -> AdapterRegistry | RemoteAdapters:
        return self._remote[1] if self.remote else self._runtime[1]

    @property
    def _params(self) -> GenerationParams:
        s = self.settings
        return GenerationParams(s.max_new_tokens, s.temperature, s.top_p, s.seed)

    @cached_property
    def chain(self) -> RagChain:
        from chatbot.backends.local import LocalChatModel
        from chatbot.rag.retrieval import ScoredRetriever

        s = self.settings
        llm = self._remote[0] if self.remote else LocalChatModel(generator=self.generator, params=self._params)
        retriever = ScoredRetriever(
            store=self.store,
            top_k=s.top_k,
            min_relevance=s.min_relevance,
            keywords=self.keywords if s.retrieval_mode == "hybrid" else None,
            keyword_weight=s.keyword_weight,
        )
        return RagChain(retriever, llm, context_tokens=s.context_tokens, decline_unsupported=s.decline_unsupported)

    def request(
        self,
        question: str,
        adapter: str | None = None,
        use_retrieval: bool = True,
        history: Sequence[Turn] = (),
        system_prompt: str | None = None,
        cancelled: threading.Event | None = None,
        **generation: Any,
    ) -> ChainRequest:
        """A chain request with the domain's system prompt, scope and generation defaults applied.

        ``history`` is the conversation so far; ``system_prompt`` replaces the domain's; setting
        ``cancelled`` stops the answer. Text is made valid Unicode and checked against
        ``max_message_chars``; bad input raises :class:`~chatbot.vocabulary.InputError` before any work.
        """
        question = self._checked_text(question, "question").strip()
        if not question:
            raise InputError("the question is empty", param="messages")
        history = [
            Turn(self._checked_text(turn.question, "history"), self._checked_text(turn.answer, "history"))
            for turn in history
        ]
        if system_prompt is not None:
            system_prompt = self._checked_text(system_prompt, "system prompt")
        self.adapters.refresh()  # a few stat calls; picks up adapter folders added or removed
        domain: Domain = self.adapters.get(adapter or BASE_ADAPTER)
        generation = {k: v for k, v in generation.items() if v is not None}
        GenerationParams.merged(self._params, {**domain.generation, **generation})  # refuses bad values now
        return ChainRequest(
            question=question,
            adapter=domain.name,
            use_retrieval=use_retrieval,
            system_prompt=domain.system_prompt if system_prompt is None else system_prompt,
            scope=domain.scope,
            generation={**domain.generation, **generation},
            history=history,
            history_turns=self.settings.history_turns,
            search_query=self.search_query(history, question) if use_retrieval else None,
            cancelled=cancelled,
        )

    def _checked_text(self, text: str, what: str) -> str:
        if not isinstance(text, str):
            raise InputError(f"the {what} must be text", param="messages")
        limit = self.settings.max_message_chars
        if len(text) > limit:
            raise InputError(
                f"the {what} has {len(text):,} characters; the limit is {limit:,} (setting max_message_chars)",
                param="messages",
            )
        return clean_text(text)

    def search_query(self, history: Sequence[Turn], question: str) -> str | None:
        """The standalone search query of a follow-up (None for a first question or when turned off)."""
        mode = self.settings.followup_query
        if not history or mode == "off":
            return None
        if mode == "model":
            rewrite = self.chain.condense(list(history), question, self.settings.history_turns)
            if rewrite:
                return rewrite
        return joined_query(history, question)

    def stream(self, question: str, *args: Any, **kwargs: Any) -> Iterator[str | Answer]:
        """Text pieces as they are generated, then the :class:`Answer` (arguments as :meth:`request`)."""
        return self.chain.stream(self.request(question, *args, **kwargs))

    def ask(self, question: str, *args: Any, **kwargs: Any) -> Answer:
        """Answer one question with citations (arguments as :meth:`request`)."""
        return self.chain.ask(self.request(question, *args, **kwargs))

    # Saved conversations
    @cached_property
    def chats(self) -> ChatStore:
        from chatbot.chats import ChatStore

        return ChatStore(self.settings.data_dir / "chats.sqlite")

    def remember(
        self, owner: str, conversation_id: str | None, answer: Answer, channel: str = "ui"
    ) -> tuple[ConversationInfo, SavedTurn] | None:
        """Save a finished answer in ``owner``'s conversation (a new one when the id is None).

        The hash of every file the answer retrieved from is kept, so the conversation can later
        say which of its sources were deleted or changed since. None when saving is turned off.
        """
        if not self.settings.save_conversations:
            return None
        if conversation_id is None:
            conversation_id = self.chats.create(owner, channel=channel).id
        current = self.knowledge.file_versions() if answer.retrieved else {}
        versions = {source.source: current.get(source.source) for source in answer.retrieved}
        turn = self.chats.add_turn(owner, conversation_id, answer, versions)  # checks the owner
        return self.chats.get(owner, conversation_id), turn

    def adapter_rows(self) -> list[dict[str, Any]]:
        """One row per adapter folder (after a refresh), for ``chatbot adapters list`` and the UI."""
        from chatbot.adapters.check import CONFIG, WEIGHTS

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
                "base_model": self.base_model_name if domain.folder is None else None,
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

    @property
    def base_model_name(self) -> str:
        if self.remote:
            return f"{self.settings.generation_base_model} at {self.settings.generation_url}"
        return self.generator.base.name

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
        if load_model and self.remote:
            data["base_model"].update(remote=self.settings.generation_url, name=self.settings.generation_base_model)
            data["adapters"] = [
                {"name": d.name, "description": d.description, "status": "ready"} for d in self.adapters.list()
            ]
        elif load_model:
            from chatbot.models.packed import PackedLinear

            base = self.generator.base
            onnx_dir = getattr(self.generator.engine, "model_dir", None)
            data["base_model"].update(
                engine="onnx" if onnx_dir else "torch",
                onnx_model=str(onnx_dir) if onnx_dir else None,
                name=base.name,
                folder=str(base.folder),
                device=str(base.device),
                dtype=str(base.dtype).removeprefix("torch."),
                quantize=self.settings.quantize,
                prepacked=any(isinstance(m, PackedLinear) for m in base.model.modules()),
            )
            data["adapters"] = [
                {"name": d.name, "description": d.description, "status": "ready" if d.ready else f"error: {d.error}"}
                for d in self.adapters.list()
            ]
        return data
