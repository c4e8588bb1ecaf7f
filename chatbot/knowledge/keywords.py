"""A keyword index of the chunks, kept equal to the Chroma collection by the sync.

On SQLite it is FTS5, ranked by BM25; on PostgreSQL its own full-text search (English stemming,
a GIN index), ranked by ``ts_rank`` over the chunk's distinct words (compared with FTS5 in
docs/serving.md). Any other database keeps the texts but cannot search them (:class:`KeywordSearchUnavailable`).
"""

from __future__ import annotations

import re
from pathlib import Path

from langchain_chroma import Chroma
from sqlalchemy import Column, Engine, MetaData, String, Table, Text, delete, insert, select, text

from chatbot.database import as_engine, batches, migrate
from chatbot.text import content_words

_chunks = Table(  # the keywords branch's migration makes it (FTS5 on SQLite)
    "keyword_chunks",
    MetaData(),
    Column("collection", String(200), primary_key=True),
    Column("id", String(200), primary_key=True),
    Column("text", Text, nullable=False),
)
_FTS5 = text(
    "SELECT id FROM keyword_chunks WHERE keyword_chunks MATCH :match AND collection = :collection "
    "ORDER BY bm25(keyword_chunks) LIMIT :k"
)
# ts_rank normalisation 8: divided by the chunk's number of distinct words (of ts_rank and ts_rank_cd
# with normalisation 0, 1, 2 or 8, the closest to FTS5's BM25 in hybrid recall@4: docs/serving.md)
_POSTGRES = text(
    "SELECT id FROM keyword_chunks, to_tsquery('english', :match) AS query "
    "WHERE collection = :collection AND terms @@ query ORDER BY ts_rank(terms, query, 8) DESC, id LIMIT :k"
)


class KeywordSearchUnavailable(RuntimeError):
    """The database has no full-text search the app knows (only SQLite and PostgreSQL do)."""


class KeywordIndex:
    """One collection's chunk texts by vector id; ``reconcile`` adds what Chroma has and removes what it lost."""

    def __init__(self, database: Engine | Path, collection: str) -> None:
        engine = as_engine(database)
        migrate(engine, "keywords", collection=collection)
        self.engine = engine
        self.collection = collection

    def ids(self) -> set[str]:
        with self.engine.connect() as db:
            return set(db.execute(select(_chunks.c.id).where(_chunks.c.collection == self.collection)).scalars())

    def reconcile(self, store: Chroma, stored_ids: set[str] | None = None) -> tuple[int, int]:
        """Make the index hold exactly the collection's chunks; returns (added, removed)."""
        stored = stored_ids if stored_ids is not None else set(store.get(include=[])["ids"])
        indexed = self.ids()
        missing, extra = sorted(stored - indexed), sorted(indexed - stored)
        mine = _chunks.c.collection == self.collection
        with self.engine.begin() as db:
            for ids in batches(extra):
                db.execute(delete(_chunks).where(mine, _chunks.c.id.in_(ids)))
            for ids in batches(missing):
                batch = store.get(ids=list(ids), include=["documents"])
                rows = [
                    {"collection": self.collection, "id": i, "text": document}
                    for i, document in zip(batch["ids"], batch["documents"], strict=True)
                ]
                if rows:
                    db.execute(insert(_chunks), rows)
        return len(missing), len(extra)

    def search(self, query: str, k: int) -> list[str]:
        """Ids of the ``k`` best matches of any of the query's content words."""
        words = sorted(content_words(query))
        if not words:
            return []
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            statement, match = _FTS5, " OR ".join('"' + re.sub(r'"', "", word) + '"' for word in words)
        elif dialect == "postgresql":
            # each word a quoted lexeme; to_tsquery stems it and drops stop words
            statement, match = _POSTGRES, " | ".join("'" + re.sub(r"['\\\\:&|!()<>*]", "", w) + "'" for w in words)
        else:
            raise KeywordSearchUnavailable(f"hybrid retrieval needs SQLite or PostgreSQL, not {dialect}")
        with self.engine.connect() as db:
            return list(db.execute(statement, {"match": match, "collection": self.collection, "k": k}).scalars())
