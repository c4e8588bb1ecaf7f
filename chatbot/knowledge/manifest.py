"""What the last sync saw of each file: content hash, counts, time and error, per collection, in SQL."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, Text, delete, insert, select, update

from chatbot.database import as_engine, batches, migrate

_meta = MetaData()  # the tables of the manifest branch's migration
_files = Table(
    "knowledge_files",
    _meta,
    Column("collection", String(200), primary_key=True),
    Column("path", String(4096), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("pages", Integer),
    Column("chunks", Integer, nullable=False),
    Column("indexed_at", Float),
    Column("error", Text),
)
_notes = Table(
    "knowledge_meta",
    _meta,
    Column("collection", String(200), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("value", Text),
)
_FIELDS = ("path", "sha256", "size", "pages", "chunks", "indexed_at", "error")


@dataclass(frozen=True)
class FileRecord:
    """One row of the manifest: the last attempt for a file, and what is indexed of it."""

    path: str
    sha256: str
    size: int
    pages: int | None
    chunks: int
    indexed_at: float | None
    error: str | None


RECIPE_META = "recipe"  # the index's recipe as the last sync left it (chatbot.knowledge.recipe)


def indexed_counts(records: Iterable[FileRecord]) -> tuple[int, int, dict[str, str]]:
    """Documents indexed, their chunks, and the error of each file that has one."""
    documents = chunks = 0
    errors = {}
    for record in records:
        if record.indexed_at:
            documents += 1
            chunks += record.chunks
        if record.error:
            errors[record.path] = record.error
    return documents, chunks, errors


class Manifest:
    """The files table of one collection; a row is written only after its file's chunks are committed."""

    def __init__(self, database: Engine | Path, collection: str) -> None:
        engine = as_engine(database)
        migrate(engine, "manifest", collection=collection)
        self.engine = engine
        self.collection = collection

    def _mine(self, table: Table):  # noqa: ANN202 - a SQL condition
        return table.c.collection == self.collection

    def all(self) -> dict[str, FileRecord]:
        columns = [_files.c[name] for name in _FIELDS]
        with self.engine.connect() as db:
            rows = db.execute(select(*columns).where(self._mine(_files)))
            return {row[0]: FileRecord(*row) for row in rows}

    def record_indexed(self, path: str, sha256: str, size: int, pages: int | None, chunks: int) -> None:
        values = {
            "sha256": sha256,
            "size": size,
            "pages": pages,
            "chunks": chunks,
            "indexed_at": time.time(),
            "error": None,
        }
        self._put(_files, {"path": path}, values)

    def record_error(self, path: str, sha256: str, size: int, error: str) -> None:
        """Remember a failed attempt; counts and time of the last good index are kept."""
        self._put(_files, {"path": path}, {"sha256": sha256, "size": size, "error": error}, new={"chunks": 0})

    def _put(self, table: Table, key: dict, values: dict, new: dict | None = None) -> None:
        """Update this collection's row of ``key`` with ``values``, or insert it (with ``new`` too)."""
        with self.engine.begin() as db:
            where = [self._mine(table), *(table.c[name] == value for name, value in key.items())]
            if not db.execute(update(table).where(*where).values(**values)).rowcount:
                db.execute(insert(table).values(collection=self.collection, **key, **(new or {}), **values))

    def forget(self, paths: list[str]) -> None:
        with self.engine.begin() as db:
            for batch in batches(paths):
                db.execute(delete(_files).where(self._mine(_files), _files.c.path.in_(batch)))

    def set_meta(self, key: str, value: str) -> None:
        self._put(_notes, {"key": key}, {"value": value})

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as db:
            return db.execute(select(_notes.c.value).where(self._mine(_notes), _notes.c.key == key)).scalar()
