"""A small SQLite file beside the index (the manifest, the keyword index): opened per call, schema made once."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path


class SqliteFile:
    """A SQLite database at ``db_path`` whose ``schema`` (a SQL script) is applied on opening.

    Each call takes its own connection, so any thread may use it; a ``with self._connect()``
    block is one transaction (committed at its end, rolled back on an exception).
    """

    def __init__(self, db_path: Path, schema: str) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._path = db_path
        with self._connect() as db:
            db.executescript(schema)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self._path, timeout=30)) as db, db:
            yield db
