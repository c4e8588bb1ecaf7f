"""Wires settings, models, knowledge, adapters and the chain into the one object the CLI and UI use."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.adapters.domains import Domain, UnknownAdapterError
from chatbot.adapters.registry import AdapterRegistry
from chatbot.app.info import AdapterRow, AppInfo, adapter_row, describe
from chatbot.app.runtime import (
    chunker_for,
    embedding_fingerprint_for,
    embeddings_for,
    evidence_embeddings_for,
    load_limits_for,
    local_runtime,
)
from chatbot.config import EMBEDDED, Settings
from chatbot.database import database_for, migrate, ping, reason, shared_engine
from chatbot.database.lease import Lease
from chatbot.engine.generation import Generator
from chatbot.knowledge.sync import KnowledgeStatus, KnowledgeSync, Progress, SyncReport
from chatbot.rag.answer import Answer, answer_of_reply
from chatbot.rag.answerability import Answerability, AnswerabilityFitError
from chatbot.rag.answerability import load as load_answerability
from chatbot.rag.answerability import read as read_answerability
from chatbot.rag.chain import ChainRequest, RagChain
from chatbot.rag.conversation import Turn
from chatbot.vocabulary import BASE_ADAPTER, GenerationParams, InputError, clean_text

if TYPE_CHECKING:
    from chatbot.app.election import SyncerElection
    from chatbot.app.watcher import FolderWatcher
    from chatbot.backends.remote import RemoteAdapters, RemoteChatModel
    from chatbot.chats import ChatStore, ConversationInfo, SavedTurn
    from chatbot.knowledge.trash import Trash


class Chatbot:
    """The application: ``sync`` the knowledge folder, ``ask`` or ``stream`` answers, ``info``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.watchers: list[FolderWatcher] = []
        self.election: SyncerElection | None = None
        self._fits: dict[Path, tuple[int, Answerability]] = {}  # adapters' own fits by file, with its version

    # Knowledge side (no language model needed)
    @cached_property
    def embeddings(self):  # noqa: ANN201
        return embeddings_for(self.settings)

    @cached_property
    def evidence_embeddings(self):  # noqa: ANN201
        """What scores the evidence sentences (the embedding model, with the evidence scorer's LoRA)."""
        return evidence_embeddings_for(self.settings)

    @cached_property
    def store(self):  # noqa: ANN201
        from chatbot.knowledge.store import open_vector_store

        s = self.settings
        return open_vector_store(s.chroma_dir, s.collection, self.embeddings, s.chroma_url)

    @cached_property
    def knowledge(self) -> KnowledgeSync:
        from chatbot.knowledge.isolated import isolated_reader
        from chatbot.knowledge.loaders import load_file
        from chatbot.knowledge.manifest import Manifest
        from chatbot.knowledge.store import open_record_manager

        s = self.settings
        records = shared_engine(s.record_db_url) if s.record_db_url else database_for(s.database_url, s.record_db)
        return KnowledgeSync(
            root=s.knowledge_dir,
            store=self.store,
            records=open_record_manager(records, s.collection),
            manifest=Manifest(database_for(s.database_url, s.manifest_db), s.collection),
            chunker=chunker_for(s),
            max_bytes=int(s.max_file_mb * 1_000_000),
            lock_path=s.data_dir / "sync.lock",
            embedding=lambda: embedding_fingerprint_for(s),
            keywords=self.keywords,
            limits=load_limits_for(s),
            reader=isolated_reader(s.load_memory_mb, s.load_timeout_s).read if s.read_in_worker else load_file,
            run_lease=self._lease("sync") if self.shared else None,
        )

    @cached_property
    def trash(self) -> Trash:
        """Where documents the app removes or replaces go, restorable until it is emptied."""
        from chatbot.knowledge.trash import Trash

        return Trash(self.settings.data_dir / "trash", self.settings.knowledge_dir)

    @cached_property
    def keywords(self):  # noqa: ANN201 - KeywordIndex
        from chatbot.knowledge.keywords import KeywordIndex

        s = self.settings
        return KeywordIndex(database_for(s.database_url, s.keywords_db), s.collection)

    def sync(self, progress: Progress | None = None, show_progress: bool = False) -> SyncReport:
        """Make the index equal the knowledge folder (``status().sync`` shows how far it got)."""
        return self.knowledge.sync(progress=progress, show_progress=show_progress)

    def suggested_questions(self, limit: int = 4) -> list[str]:
        """A few questions about what is indexed (its headings, else its file names), for an empty chat."""
        from chatbot.knowledge.suggestions import suggested_questions

        try:
            found = self.store.get(limit=2000, include=["metadatas"])
        except Exception:  # noqa: BLE001 - a store that cannot answer leaves the chat without suggestions
            return []
        return suggested_questions(found.get("metadatas") or [], limit)

    def status(self) -> KnowledgeStatus:
        """The knowledge base: counts, files, errors, the sync now and last, the folder watcher."""
        status = self.knowledge.status()
        watcher = next((w for w in self.watchers if w.root == self.settings.knowledge_dir), None)
        if watcher is None:
            return status
        state = watcher.status
        shown = state.state
        if self.election is not None and not self.election.is_syncer and state.running:
            shown = "another instance syncs"  # this one's watcher only wakes it when it is elected
        return replace(status, watcher=shown, watcher_syncs=state.syncs, watcher_error=state.last_error)

    def watch(self, on_sync: Callable[[SyncReport], object] | None = None, debounce_s: float = 1.0) -> FolderWatcher:
        """Start watching the knowledge folder; each settled burst of changes runs one sync."""
        from chatbot.app.watcher import FolderWatcher

        def resync() -> None:
            if self.election is not None and not self.election.is_syncer:
                return  # another instance syncs this folder
            report = self.sync()
            if on_sync is not None:
                on_sync(report)

        watcher = FolderWatcher(self.settings.knowledge_dir, resync, debounce_s=debounce_s).start()
        self.watchers.append(watcher)
        if self.shared and self.election is None:
            from chatbot.app.election import SyncerElection

            self.election = SyncerElection(self._lease("syncer"), on_elected=resync).start()
        return watcher

    @property
    def shared(self) -> bool:
        """Whether other instances may share this one's state (``database_url`` is set)."""
        return bool(self.settings.database_url)

    @cached_property
    def instance_id(self) -> str:
        """This process as the other instances see it (host, pid and a random tag)."""
        return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def _lease(self, role: str) -> Lease:
        s = self.settings
        engine = database_for(s.database_url, s.manifest_db)
        migrate(engine, "manifest", collection=s.collection)  # the leases table
        return Lease(engine, f"{role}:{s.collection}", self.instance_id, ttl_s=s.sync_lease_s)

    def problems(self) -> dict[str, str]:
        """What this instance cannot reach now: ``database`` and ``vector_store``, with the reason."""
        s = self.settings
        found = {}
        away = ping(database_for(s.database_url, s.manifest_db))
        if away:
            found["database"] = away
        try:
            self.store._client.heartbeat()
        except Exception as exc:  # noqa: BLE001 - whatever the client raises, the store is away
            found["vector_store"] = reason(exc)
        return found

    def syncer(self) -> dict[str, Any]:
        """Who syncs the knowledge folder: this instance, another (its id), or nobody right now."""
        if self.election is None:
            return {"syncer": "this instance" if self.watchers else None, "syncs_here": bool(self.watchers)}
        try:
            holder = self.election.holder()
        except Exception:  # noqa: BLE001 - the database is away; problems() says so
            holder = None
        found = {"syncer": holder, "syncs_here": self.election.is_syncer, "instance_id": self.instance_id}
        return {**found, "election_error": self.election.last_error} if self.election.last_error else found

    def watch_adapters(self, debounce_s: float = 1.0) -> FolderWatcher:
        """Start watching the adapters folder, so dropped-in or removed adapters show up at once."""
        from chatbot.app.watcher import FolderWatcher

        watcher = FolderWatcher(self.settings.adapters_dir, self.adapters.refresh, debounce_s=debounce_s).start()
        self.watchers.append(watcher)
        return watcher

    def close(self) -> None:
        """Stop the watchers, and give the sync lease up."""
        while self.watchers:
            self.watchers.pop().stop()
        if self.election is not None:
            self.election.stop()
            self.election = None

    def engine_load(self) -> dict[str, int]:
        """Answers the local engine holds now, how many it ended because their reader went away, and
        how many ran to their end."""
        if self.remote or "_runtime" not in self.__dict__:
            return {"generating": 0, "cancelled": 0, "finished": 0}
        engine = self.generator.engine
        return {"generating": engine.busy, "cancelled": engine.cancelled_total, "finished": engine.finished_total}

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
        runtime = local_runtime(self.settings)
        for embeddings in {id(e): e for e in (self.embeddings, self.evidence_embeddings)}.values():
            embeddings.run_on(runtime[0].engine.call)  # all torch work on one thread (see BatchEngine.call)
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
        return RagChain(
            retriever,
            llm,
            context_tokens=s.context_tokens,
            decline_unsupported=s.decline_unsupported,
            answerability=load_answerability(s.answerability_fit),
            answerability_threshold=s.answerability_threshold,
            evidence=self.evidence_embeddings.embed_documents if s.quote_evidence else None,
            evidence_agreement=self.evidence_agreement,
            evidence_margin=s.evidence_margin,
            quote_relevance=s.quote_relevance if s.quote_relevance < s.min_relevance else None,
        )

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
        history = [  # a client sends back the replies it was shown: their evidence lines are not the answers
            Turn(
                self._checked_text(turn.question, "history"),
                answer_of_reply(self._checked_text(turn.answer, "history")),
            )
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
            history_answers=self.history_answers,
            followup_query=self.settings.followup_query,
            cancelled=cancelled,
            answerability=self._adapter_fit(domain),
        )

    @property
    def evidence_agreement(self) -> float:
        """The share of an answer's new words its evidence sentence must hold (auto: 0.5 for the
        embedded model, which copies plausible but wrong spans; off for others, which paraphrase)."""
        chosen = self.settings.evidence_agreement
        if chosen is None:
            return 0.5 if self._embedded_answers else 0.0
        return chosen

    @property
    def history_answers(self) -> bool:
        """Whether the model sees earlier answers (``history_content``; auto: not the embedded model)."""
        content = self.settings.history_content
        if content == "auto":
            return not self._embedded_answers
        return content == "full"

    @property
    def _embedded_answers(self) -> bool:
        """Whether the embedded model writes the answers (the "auto" settings are sized for it)."""
        return not self.settings.generation_url and self.settings.base_model == EMBEDDED

    def _adapter_fit(self, domain: Domain) -> Answerability | None:
        """The adapter's own answerability fit (read once per version of the file), or None: the app's.

        A fit that cannot be read refuses the adapter by name (like a bad ``domain.toml``).
        """
        path = domain.answerability_fit
        if path is None:
            return None
        try:
            version = path.stat().st_mtime_ns
            cached = self._fits.get(path)
            if cached is None or cached[0] != version:
                cached = self._fits[path] = (version, read_answerability(path))
        except (OSError, AnswerabilityFitError) as exc:
            raise UnknownAdapterError(f"adapter {domain.name!r} refused: {exc}") from exc
        return cached[1]

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

    def stream(self, question: str, *args: Any, **kwargs: Any) -> Iterator[str | Answer]:
        """Text pieces as they are generated, then the :class:`Answer` (arguments as :meth:`request`)."""
        return self.chain.stream(self.request(question, *args, **kwargs))

    def ask(self, question: str, *args: Any, **kwargs: Any) -> Answer:
        """Answer one question with citations (arguments as :meth:`request`)."""
        return self.chain.ask(self.request(question, *args, **kwargs))

    # Saved conversations
    @cached_property
    def chats(self) -> ChatStore:
        from chatbot.chats import open_chats

        return open_chats(self.settings)

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

    def adapter_rows(self) -> list[AdapterRow]:
        """One row per adapter folder (after a refresh), for ``chatbot adapters list`` and the UI."""
        self.adapters.refresh()
        return [adapter_row(domain, self.base_model_name) for domain in self.adapters.list()]

    @property
    def base_model_name(self) -> str:
        if self.remote:
            return f"{self.settings.generation_base_model} at {self.settings.generation_url}"
        return self.generator.base.name

    def info(self, load_model: bool = True) -> AppInfo:
        """Models, paths, knowledge counts and (with the model loaded) adapters, for ``chatbot info``."""
        return describe(self, load_model)
