"""A BM25 keyword index of the chunks (SQLite FTS5), kept equal to the Chroma collection by the sync."""

from __future__ import annotations

import re
from pathlib import Path

from langchain_chroma import Chroma

from chatbot.knowledge.sqlite_file import SqliteFile
from chatbot.text import content_words

_SCHEMA = "CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5(id UNINDEXED, text, tokenize='porter unicode61')"
_BATCH = 500


class KeywordIndex(SqliteFile):
    """Chunk texts by vector id; ``reconcile`` adds what Chroma has and removes what it lost."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(db_path, _SCHEMA)

    def ids(self) -> set[str]:
        with self._connect() as db:
            return {row[0] for row in db.execute("SELECT id FROM chunks")}

    def reconcile(self, store: Chroma, stored_ids: set[str] | None = None) -> tuple[int, int]:
        """Make the index hold exactly the collection's chunks; returns (added, removed)."""
        stored = stored_ids if stored_ids is not None else set(store.get(include=[])["ids"])
        indexed = self.ids()
        missing, extra = sorted(stored - indexed), sorted(indexed - stored)
        with self._connect() as db:
            db.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in extra])
            for start in range(0, len(missing), _BATCH):
                batch = store.get(ids=missing[start : start + _BATCH], include=["documents"])
                db.executemany(
                    "INSERT INTO chunks (id, text) VALUES (?, ?)", zip(batch["ids"], batch["documents"], strict=True)
                )
        return len(missing), len(extra)

    def search(self, query: str, k: int) -> list[str]:
        """Ids of the ``k`` best BM25 matches of any of the query's content words."""
        words = sorted(content_words(query))
        if not words:
            return []
        match = " OR ".join('"' + re.sub(r'"', "", word) + '"' for word in words)
        with self._connect() as db:
            rows = db.execute("SELECT id FROM chunks WHERE chunks MATCH ? ORDER BY bm25(chunks) LIMIT ?", (match, k))
            return [row[0] for row in rows]
