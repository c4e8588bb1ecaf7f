"""The result of one question: answer text, cited and retrieved sources, adapter, timings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from langchain_core.documents import Document

SNIPPET_CHARS = 300


@dataclass
class SourceRef:
    """A numbered context block as shown to the user (``source`` is relative to the knowledge folder)."""

    n: int
    source: str
    page: int | None
    snippet: str
    score: float
    section: str | None = None
    chunk_id: str | None = None
    cited_by: Literal["model", "attribution"] | None = None

    @classmethod
    def from_document(cls, n: int, document: Document) -> SourceRef:
        meta = document.metadata
        text = " ".join(document.page_content.split())
        snippet = text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"
        return cls(
            n=n,
            source=str(meta.get("source", "")),
            page=meta.get("page"),
            snippet=snippet,
            score=round(float(meta.get("score", 0.0)), 4),
            section=meta.get("section"),
            chunk_id=meta.get("chunk_id"),
        )


@dataclass
class Answer:
    """What ``ask`` returns; :meth:`to_json` is the documented JSON contract."""

    question: str
    answer: str
    adapter: str
    sources: list[SourceRef] = field(default_factory=list)
    retrieved: list[SourceRef] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    used_retrieval: bool = True
    abstained: bool = False
    model_citations: int = 0
    usage: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "adapter": self.adapter,
            "sources": [asdict(source) for source in self.sources],
            "retrieved": [asdict(source) for source in self.retrieved],
            "timings": {key: round(value, 4) for key, value in self.timings.items()},
            "used_retrieval": self.used_retrieval,
            "abstained": self.abstained,
            "model_citations": self.model_citations,
            "usage": self.usage,
        }
