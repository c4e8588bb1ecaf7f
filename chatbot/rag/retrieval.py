"""Top-k retrieval from Chroma with similarity scores and a relevance floor, optionally hybrid.

Hybrid mode fuses the vector ranking with a BM25 keyword ranking (SQLite FTS5, kept up to
date by the sync) by reciprocal rank fusion. Every candidate still needs a cosine similarity
of at least ``min_relevance``, so "nothing relevant, I don't know" keeps its meaning.
"""

from __future__ import annotations

from typing import Any

from langchain_chroma import Chroma
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from chatbot.knowledge.keywords import KeywordIndex
from chatbot.knowledge.store import cosine_similarity, similarity

RRF_K = 60  # the usual reciprocal-rank-fusion constant


def _scored(doc: Document, similarity: float, doc_id: str | None = None) -> Document:
    return Document(page_content=doc.page_content, metadata={**doc.metadata, "score": similarity}, id=doc_id or doc.id)


class ScoredRetriever(BaseRetriever):
    """Returns at most ``top_k`` chunks whose cosine similarity is at least ``min_relevance``.

    Each document carries its similarity in ``metadata["score"]``. Pass ``filter=`` (a Chroma
    ``where`` clause) to ``invoke`` to limit the search, e.g. to a domain's part of the folder,
    ``k=`` to change how many come back and ``floor=`` to lower or raise ``min_relevance`` for
    one search. With ``keywords`` the ranking is hybrid.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Chroma
    top_k: int = 4
    min_relevance: float = 0.35
    keywords: KeywordIndex | None = None
    candidates: int = 20  # per ranking, before fusion
    keyword_weight: float = 0.5  # weight of the BM25 ranking against the vector ranking (1.0)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, where = kwargs.get("k", self.top_k), kwargs.get("filter")
        floor = float(kwargs.get("floor", self.min_relevance))
        if self.keywords is None:
            pairs = self.store.similarity_search_with_score(query, k=k, filter=where)
            scored = [_scored(doc, similarity(distance)) for doc, distance in pairs]
            return [doc for doc in scored if doc.metadata["score"] >= floor]
        return self._hybrid(query, k, where, floor)

    def _hybrid(self, query: str, k: int, where: dict | None, floor: float) -> list[Document]:
        embedding = self.store.embeddings.embed_query(query)
        pairs = self.store.similarity_search_by_vector_with_relevance_scores(
            embedding, k=max(k, self.candidates), filter=where
        )
        vector = [_scored(doc, similarity(distance)) for doc, distance in pairs]
        by_id = {doc.id: doc for doc in vector}
        keyword_ids = self.keywords.search(query, self.candidates)
        unseen = [i for i in keyword_ids if i not in by_id]
        if unseen:
            got = self.store.get(ids=unseen, where=where, include=["documents", "metadatas", "embeddings"])
            for doc_id, text, meta, vec in zip(
                got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
            ):
                by_id[doc_id] = _scored(
                    Document(page_content=text, metadata=meta or {}), cosine_similarity(embedding, list(vec)), doc_id
                )
        fused: dict[str, float] = {}
        rankings = ((1.0, [doc.id for doc in vector]), (self.keyword_weight, [i for i in keyword_ids if i in by_id]))
        for weight, ranking in rankings:
            for rank, doc_id in enumerate(ranking, 1):
                fused[doc_id] = fused.get(doc_id, 0.0) + weight / (RRF_K + rank)
        ranked = sorted(fused, key=lambda doc_id: -fused[doc_id])
        return [by_id[i] for i in ranked if by_id[i].metadata["score"] >= floor][:k]
