"""Make the Chroma collection equal the knowledge folder, with LangChain's indexing API.

Per sync: empty the index when it was embedded by another model, or read every file again when the
settings that decide its chunks changed (``chatbot.knowledge.recipe``); repair leftovers of an
interrupted run; hash every file, parse and chunk only new or changed ones; index their chunks
(``scoped_full`` clean-up removes a changed file's old chunks only after its new ones are in); then
delete the chunks of files that are gone. A file that fails to load keeps whatever was indexed of
it before.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

from langchain_chroma import Chroma
from langchain_core.documents import Document
from langchain_core.indexing import index
from langchain_core.indexing.base import RecordManager
from tqdm.auto import tqdm

from chatbot.database import batches
from chatbot.database.lease import Heartbeat, Lease, LeaseHolder
from chatbot.digest import file_sha256
from chatbot.knowledge.chunking import Chunker
from chatbot.knowledge.keywords import KeywordIndex
from chatbot.knowledge.loaders import LoadError, LoadLimits, Page, load_file
from chatbot.knowledge.manifest import RECIPE_META, FileRecord, Manifest, indexed_counts
from chatbot.knowledge.recipe import Recipe, changes, make_recipe
from chatbot.knowledge.scan import scan_folder
from chatbot.knowledge.store import collection_recipe, made_by_this_model, record_recipe, stored_chunks

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)`` while a sync runs."""


@dataclass
class SyncReport:
    """What one sync did; ``errors`` and ``skipped`` map relative paths to reasons."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    chunks_added: int = 0
    chunks_deleted: int = 0
    chunks_skipped: int = 0
    repaired: int = 0
    rebuilt: str | None = None  # why every file was read again (the index's recipe changed)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def wrote_nothing(self) -> bool:
        return not (self.chunks_added or self.chunks_deleted or self.deleted or self.repaired or self.rebuilt)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SyncState:
    """The sync running now (``stage``, ``done`` of ``total``), and how the last one ended."""

    running: bool = False
    stage: str = ""
    done: int = 0
    total: int = 0
    last_report: SyncReport | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class KnowledgeStatus:
    """The knowledge base in one object: what is indexed, the sync now and last, the folder watcher."""

    documents: int
    chunks: int
    last_sync: float | None  # when the last sync finished (epoch seconds)
    files: list[FileRecord]  # every file the last sync saw, errors included
    errors: dict[str, str]
    sync: SyncState
    watcher: str = "off"  # off, idle, waiting (a burst is settling), syncing, stopped, another instance syncs
    watcher_syncs: int = 0
    watcher_error: str | None = None


def _waiting(holder: LeaseHolder | None) -> None:
    log.info("waiting for the sync of %s to end", holder.holder if holder else "another instance")


def _chunk_key(document: Document) -> str:
    return str(document.metadata["chunk_id"])


class KnowledgeSync:
    """The one code path that indexes the knowledge folder (CLI, watcher and UI all call it)."""

    def __init__(
        self,
        root: Path,
        store: Chroma,
        records: RecordManager,
        manifest: Manifest,
        chunker: Chunker,
        max_bytes: int,
        lock_path: Path,
        embedding: Callable[[], str],
        keywords: KeywordIndex | None = None,
        limits: LoadLimits | None = None,
        reader: Callable[[Path, LoadLimits], list[Page]] = load_file,
        run_lease: Lease | None = None,
    ) -> None:
        """``reader`` reads one file within the limits (``load_file``, or a worker process's: ``isolated``);
        ``run_lease``, where instances share the index, lets one of them sync at a time."""
        self.root = root
        self.reader = reader
        self.limits = limits or LoadLimits()
        self._embedding = embedding  # the model's fingerprint, hashed only when a sync or ``pending`` needs it
        self.keywords = keywords
        self.store = store
        self.records = records
        self.manifest = manifest
        self.chunker = chunker
        self.max_bytes = max_bytes
        self._lock_path = lock_path
        self._thread_lock = threading.Lock()
        self._run_lease = run_lease
        self._heartbeat: Heartbeat | None = None
        self.state = SyncState()

    @cached_property
    def recipe(self) -> Recipe:
        """This sync's recipe: the embedding model's fingerprint, the chunk sizes and the load limits."""
        return make_recipe(self._embedding(), self.chunker.chunk_size, self.chunker.chunk_overlap, self.limits)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One sync at a time, across threads and processes (CLI beside a running server) and, with a
        run lease, across the instances that share the index."""
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, self._lock_path.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                if self._run_lease is None:
                    yield
                    return
                with self._run_lease.held(on_wait=_waiting) as heartbeat:
                    self._heartbeat = heartbeat
                    try:
                        yield
                    finally:
                        self._heartbeat = None
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _still_ours(self) -> None:
        """Stop before the next write when another instance may have taken the sync over."""
        if self._heartbeat is not None:
            self._heartbeat.check()

    def sync(self, progress: Progress | None = None, show_progress: bool = False) -> SyncReport:
        """Bring the collection in line with the folder (see the module docstring); ``state`` shows how far it got."""
        state = self.state

        def track(stage: str, done: int, total: int) -> None:
            self._still_ours()
            state.stage, state.done, state.total = stage, done, total
            if progress is not None:
                progress(stage, done, total)

        state.running, state.stage, state.done, state.total = True, "scanning", 0, 0
        try:
            report = self._sync(track, show_progress)
        except Exception as exc:
            state.last_error = str(exc) or type(exc).__name__
            raise
        finally:
            state.running = False
        state.last_report, state.last_error = report, None
        return report

    def _sync(self, progress: Progress, show_progress: bool) -> SyncReport:
        started = time.perf_counter()
        report = SyncReport()
        with self._exclusive():
            report.rebuilt, reread = self._check_recipe()
            report.repaired = self._repair()
            scan = scan_folder(self.root, self.max_bytes)
            report.skipped = dict(scan.skipped)
            known = self.manifest.all()
            changed: list[tuple[str, Path, str, int]] = []
            for key, path in scan.files.items():
                try:
                    sha, size = file_sha256(path), path.stat().st_size
                except OSError as exc:
                    report.errors[key] = f"cannot read: {exc.strerror or exc}"
                    continue
                previous = known.get(key)
                if previous is not None and previous.sha256 == sha and not reread:
                    report.unchanged += 1
                    if previous.error:
                        report.errors[key] = previous.error
                    continue
                changed.append((key, path, sha, size))
            documents, loaded = self._load(changed, report, progress, show_progress)
            self._index(documents, loaded, known, report, progress, show_progress)
            gone = sorted(set(known) - set(scan.files))
            self._still_ours()
            self._delete(gone, report)
            if self.keywords is not None:
                self.keywords.reconcile(self.store)
            if reread:  # only now: an interrupted re-read is redone (its finished files cost a read)
                record_recipe(self.store, self.recipe.to_json())
            self.manifest.set_meta("last_sync", str(time.time()))
            # a copy the CLI reads without opening Chroma (chatbot.app.on_disk)
            self.manifest.set_meta(RECIPE_META, collection_recipe(self.store) or "")
        report.seconds = time.perf_counter() - started
        return report

    def _load(
        self,
        changed: list[tuple[str, Path, str, int]],
        report: SyncReport,
        progress: Progress | None,
        show_progress: bool,
    ) -> tuple[list[Document], list[tuple[str, str, int, int | None, int]]]:
        documents: list[Document] = []
        loaded: list[tuple[str, str, int, int | None, int]] = []
        bar = tqdm(changed, desc="reading", unit="file", disable=not show_progress or not changed)
        for done, (key, path, sha, size) in enumerate(bar, 1):
            if progress:
                progress("reading", done, len(changed))
            try:
                if size == 0:
                    raise LoadError("empty file")
                pages = self.reader(path, self.limits)
                chunks = self.chunker.split(key, pages, path.suffix.lower().lstrip("."))
                if not chunks:
                    raise LoadError("no text found")
            except LoadError as exc:
                report.errors[key] = str(exc)
                self.manifest.record_error(key, sha, size, str(exc))
                log.warning("not indexed: %s: %s", key, exc)
                continue
            page_count = len(pages) if pages and pages[0].number is not None else None
            documents.extend(chunks)
            distinct = len({chunk.id for chunk in chunks})  # a text repeated on one page is one chunk
            loaded.append((key, sha, size, page_count, distinct))
        return documents, loaded

    def _index(
        self,
        documents: list[Document],
        loaded: list[tuple[str, str, int, int | None, int]],
        known: dict[str, FileRecord],
        report: SyncReport,
        progress: Progress | None,
        show_progress: bool,
    ) -> None:
        if not documents:
            return

        def counted(docs: Iterable[Document]) -> Iterator[Document]:
            bar = tqdm(docs, total=len(documents), desc="embedding", unit="chunk", disable=not show_progress)
            for done, document in enumerate(bar, 1):
                self._still_ours()
                if progress and done % 16 == 0:
                    progress("embedding", done, len(documents))
                yield document

        result = index(
            counted(documents),
            self.records,
            self.store,
            cleanup="scoped_full",  # deletes a file's stale chunks only after all its new ones are in
            source_id_key="source",
            key_encoder=_chunk_key,
            batch_size=64,
        )
        report.chunks_added += result["num_added"]
        report.chunks_deleted += result["num_deleted"]
        report.chunks_skipped += result["num_skipped"]
        for key, sha, size, pages, chunks in loaded:
            self.manifest.record_indexed(key, sha, size, pages, chunks)
            previous = known.get(key)
            (report.updated if previous is not None and previous.indexed_at else report.added).append(key)
        if progress:
            progress("embedding", len(documents), len(documents))

    def _delete(self, paths: list[str], report: SyncReport) -> None:
        for key in paths:
            ids = self.records.list_keys(group_ids=[key])
            if ids:
                self.store.delete(ids=ids)  # vectors first: a crash here leaves records to retry
                self.records.delete_keys(ids)
            self.manifest.forget([key])
            report.deleted.append(key)
            report.chunks_deleted += len(ids)

    def _verdict(self) -> tuple[str | None, str]:
        """Why the index must change under this sync's recipe, and how: "nothing", "re-read" or "reset"."""
        stored = Recipe.parse(collection_recipe(self.store))
        if stored is not None and stored.vectors == self.recipe.vectors:
            if stored.reading == self.recipe.reading:
                return None, "nothing"
            return "the index's recipe changed: " + changes(stored.reading, self.recipe.reading), "re-read"
        if not stored_chunks(self.store):
            return None, "reset"  # nothing to re-build, but the manifest may describe another index
        if stored is None:
            if made_by_this_model(self.store):  # an index of an older version: keep its vectors
                return "the index was made by an older version, which did not record its recipe", "re-read"
            return "the index was made by an older version with another embedding model", "reset"
        return "the index's recipe changed: " + changes(stored.vectors, self.recipe.vectors), "reset"

    def pending(self) -> str | None:
        """Why the next sync will read every file again (None when the index matches the settings)."""
        return self._verdict()[0]

    def _check_recipe(self) -> tuple[str | None, bool]:
        """Compare the collection's recipe with this sync's: why every file is read again (None when
        not, or when the collection held nothing), and whether this sync must read them all.

        Another embedding model, or a collection with no recipe, empties the index: vectors of two
        models must never share it, and a manifest must never describe another collection. The
        manifest goes first, then the vectors, then the records (left over, ``_repair`` drops them),
        so a crash at any step leaves a state the next sync finishes; the recipe is recorded after
        the reset, so an interrupted re-build goes on where it stopped.
        """
        reason, needs = self._verdict()
        if needs == "nothing":
            return None, False
        if needs == "re-read":
            return reason, True
        if reason:
            log.info("re-building the index: %s", reason)
        # Also for an empty collection with no recipe (a new collection name, a deleted Chroma
        # folder): the manifest describes another index, and its files must be read again.
        self.manifest.forget(list(self.manifest.all()))
        self.store.reset_collection()  # a new embedding model may have another dimension
        self._drop_records(self.records.list_keys())
        if self.keywords is not None:
            self.keywords.reconcile(self.store, set())
        record_recipe(self.store, self.recipe.to_json())  # every file is new to the emptied index
        return reason, False

    def _drop_records(self, keys: list[str]) -> None:
        """Delete record-manager entries in batches (300,000 keys at once: "too many SQL variables")."""
        for batch in batches(keys):
            self.records.delete_keys(list(batch))

    def _repair(self) -> int:
        """Undo what an interrupted sync left: vectors with no record, records with no vector."""
        stored = set(self.store.get(include=[])["ids"])
        recorded = set(self.records.list_keys())
        orphans = sorted(stored - recorded)
        if orphans:
            self.store.delete(ids=orphans)
        missing = recorded - stored
        if missing:
            # Files that lost chunks are forgotten by the manifest, so this sync re-reads them.
            dirty = [key for key in self.manifest.all() if missing & set(self.records.list_keys(group_ids=[key]))]
            self._drop_records(sorted(missing))
            self.manifest.forget(dirty)
        if orphans or missing:
            log.warning("repaired index: %d orphan vectors, %d lost records", len(orphans), len(missing))
        return len(orphans) + len(missing)

    def file_versions(self) -> dict[str, str]:
        """The content hash of every indexed file, by its path under the knowledge folder."""
        return {path: record.sha256 for path, record in self.manifest.all().items() if record.indexed_at}

    def files(self) -> dict[str, FileRecord]:
        """Every file the last sync saw (indexed or refused), by its path under the knowledge folder."""
        return self.manifest.all()

    def status(self) -> KnowledgeStatus:
        """Counts, files, errors and the sync's state (the watcher is the app's to add); the chunk
        count is the manifest's, which every sync keeps equal to the index's records."""
        files = sorted(self.manifest.all().values(), key=lambda record: record.path)
        documents, chunks, errors = indexed_counts(files)
        last = self.manifest.get_meta("last_sync")
        return KnowledgeStatus(
            documents=documents,
            chunks=chunks,
            last_sync=float(last) if last else None,
            files=files,
            errors=errors,
            sync=replace(self.state),
        )
