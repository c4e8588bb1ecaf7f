"""Top-k retrieval from Chroma with similarity scores and a relevance floor."""

from __future__ import annotations

from typing import Any

from langchain_chroma import Chroma
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict


class ScoredRetriever(BaseRetriever):
    """Returns at most ``top_k`` chunks whose cosine similarity is at least ``min_relevance``.

    Each document carries its similarity in ``metadata["score"]``. Pass ``filter=`` (a Chroma
    ``where`` clause) to ``invoke`` to limit the search, e.g. to a domain's part of the folder.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Chroma
    top_k: int = 4
    min_relevance: float = 0.35

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        pairs = self.store.similarity_search_with_score(
            query, k=kwargs.get("k", self.top_k), filter=kwargs.get("filter")
        )
        documents = []
        for doc, distance in pairs:
            similarity = 1.0 - float(distance)  # the collection uses cosine distance
            if similarity >= self.min_relevance:
                documents.append(
                    Document(page_content=doc.page_content, metadata={**doc.metadata, "score": similarity}, id=doc.id)
                )
        return documents
