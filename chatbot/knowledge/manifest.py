"""What the last sync saw of each file: content hash, counts, time and error, in SQLite."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from chatbot.knowledge.sqlite_file import SqliteFile

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    pages INTEGER,
    chunks INTEGER NOT NULL DEFAULT 0,
    indexed_at REAL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


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


class Manifest(SqliteFile):
    """The files table; a row is written only after its file's chunks are committed."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(db_path, _SCHEMA)

    def all(self) -> dict[str, FileRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT path, sha256, size, pages, chunks, indexed_at, error FROM files")
            return {row[0]: FileRecord(*row) for row in rows}

    def record_indexed(self, path: str, sha256: str, size: int, pages: int | None, chunks: int) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (path, sha256, size, pages, chunks, time.time()),
            )

    def record_error(self, path: str, sha256: str, size: int, error: str) -> None:
        """Remember a failed attempt; counts and time of the last good index are kept."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO files (path, sha256, size, chunks, error) VALUES (?, ?, ?, 0, ?) "
                "ON CONFLICT(path) DO UPDATE SET sha256=excluded.sha256, size=excluded.size, "
                "error=excluded.error",
                (path, sha256, size, error),
            )

    def forget(self, paths: list[str]) -> None:
        with self._connect() as db:
            db.executemany("DELETE FROM files WHERE path = ?", [(path,) for path in paths])

    def set_meta(self, key: str, value: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None
