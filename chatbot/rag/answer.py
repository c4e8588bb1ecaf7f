"""The result of one question: answer text, cited and retrieved sources, adapter, timings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from langchain_core.documents import Document

from chatbot.rag.reasons import plain_reason
from chatbot.vocabulary import BASE_ADAPTER, AdapterId

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
    cited_by: Literal["model", "attribution", "quote"] | None = None  # quote: the reply quotes this block
    quote: str | None = None  # the sentence of the block that best supports the answer's claims
    support: float | None = None  # citation check: lowest share of a citing sentence found in the block
    supported: bool | None = None  # the citation check (grounding.judge) passed
    problems: list[str] | None = None  # why it did not: number, name, structure, echo, negation, words

    @property
    def place(self) -> str | None:
        """Where in its file the block is, for people: ``page 3`` (``slide 3`` in a slide deck)."""
        if self.page is None:
            return None
        return f"{'slide' if self.source.lower().endswith('.pptx') else 'page'} {self.page}"

    @classmethod
    def from_document(cls, n: int, document: Document, quote: str | None = None) -> SourceRef:
        """The block ``n``; with a ``quote`` the snippet is the text around it."""
        meta = document.metadata
        return cls(
            n=n,
            source=str(meta.get("source", "")),
            page=meta.get("page"),
            snippet=focus_snippet(document.page_content, quote),
            score=round(float(meta.get("score", 0.0)), 4),
            section=meta.get("section"),
            chunk_id=meta.get("chunk_id"),
            quote=quote,
        )


def focus_snippet(content: str, quote: str | None = None, limit: int = SNIPPET_CHARS) -> str:
    """About ``limit`` characters of ``content`` (whitespace collapsed), centred on ``quote`` if found."""
    text = " ".join(content.split())
    if len(text) <= limit:
        return text
    start = 0
    at = text.find(quote) if quote else -1
    if at > 0:
        start = max(0, min(at - (limit - len(quote)) // 2, len(text) - limit))
    end = start + limit
    return ("…" if start else "") + text[start:end].strip() + ("…" if end < len(text) else "")


EVIDENCE_LINE = "From your documents: {}"  # under a checked answer: its evidence, as quoted_sentences writes it


def quoted_sentences(evidence: Sequence[Evidence]) -> str:
    """Evidence sentences as a reply quotes them: each verbatim in curly quotes with its block's ``[n]``."""
    return " ".join(f"\u201c{quote.text}\u201d [{quote.n}]" for quote in evidence)


@dataclass
class Evidence:
    """A sentence of retrieved block ``n``, quoted verbatim because it best answers the question."""

    n: int
    source: str
    page: int | None
    section: str | None
    text: str
    score: float


@dataclass
class Answer:
    """What ``ask`` returns; :meth:`to_json` is the documented JSON contract."""

    question: str
    answer: str
    adapter: AdapterId
    sources: list[SourceRef] = field(default_factory=list)
    retrieved: list[SourceRef] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    used_retrieval: bool = True
    abstained: bool = False  # the answer is a decline ("I don't know ...")
    decline_reason: str | None = None  # why (chain.NOTHING_RETRIEVED, MODEL_DECLINED, ...)
    withheld: str | None = None  # the model's answer, when the chain declined in its place
    model_citations: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    search_query: str | None = None  # what was searched, when a follow-up was made standalone
    answerability: float | None = None  # P(the blocks answer the question), rag/answerability.py
    signals: dict[str, float] | None = None  # what that estimate was made from
    truncated: bool = False  # the model was stopped at its token limit: the answer may be cut short
    evidence: list[Evidence] = field(default_factory=list)  # the retrieved sentences that best answer it
    quoted: bool = False  # the reply quotes the evidence instead of an answer the checks withheld
    dropped: list[str] = field(default_factory=list)  # answer sentences left out: no retrieved block supports them

    @property
    def reply(self) -> str:
        """What a person is shown (the page, ``chatbot ask``, the API's ``content``): the answer, and
        under an answer that passed the checks its evidence sentences, quoted with their blocks,
        but those the answer already says. A decline's quote is its answer already."""
        if self.abstained or self.quoted or not self.evidence:
            return self.answer
        said = " ".join(self.answer.lower().split())
        unsaid = [quote for quote in self.evidence if " ".join(quote.text.lower().split()) not in said]
        if not unsaid:
            return self.answer
        return f"{self.answer}\n\n{EVIDENCE_LINE.format(quoted_sentences(unsaid))}"

    @property
    def why(self) -> str | None:
        """Why it was declined or quoted, in plain words (``decline_reason`` is the machine's)."""
        return plain_reason(self.decline_reason, self.question)

    @property
    def unsupported(self) -> list[int]:
        """Cited block numbers that the citation check flagged."""
        return [source.n for source in self.sources if source.supported is False]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Answer:
        """The answer :meth:`to_json` wrote (fields it does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        for key in ("sources", "retrieved"):
            values[key] = [SourceRef(**source) for source in values.get(key) or []]
        values["evidence"] = [Evidence(**quote) for quote in values.get("evidence") or []]
        values["adapter"] = AdapterId(values.get("adapter") or BASE_ADAPTER)
        return cls(**values)

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
            "decline_reason": self.decline_reason,
            "why": self.why,
            "withheld": self.withheld,
            "model_citations": self.model_citations,
            "usage": self.usage,
            "search_query": self.search_query,
            "answerability": self.answerability,
            "signals": {key: round(value, 4) for key, value in self.signals.items()} if self.signals else None,
            "unsupported_citations": self.unsupported,
            "truncated": self.truncated,
            "evidence": [asdict(quote) for quote in self.evidence],
            "quoted": self.quoted,
            "dropped": self.dropped,
            "reply": self.reply,
        }


def answer_of_reply(reply: str) -> str:
    """The answer part of a shown reply (its evidence line removed), for a conversation's history."""
    return reply.split("\n\n" + EVIDENCE_LINE.format("\u201c"), 1)[0]


def last_answer(events: Iterable[str | Answer]) -> Answer:
    """Read a chain's stream (text pieces, then the :class:`Answer`) to its end; the answer."""
    answer = None
    for event in events:
        if isinstance(event, Answer):
            answer = event
    if answer is None:
        raise RuntimeError("the chain ended without an answer")
    return answer
