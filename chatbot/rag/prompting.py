"""The prompts of the retrieval chain and the numbered context blocks they carry."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

RAG_INSTRUCTIONS = (
    "Answer the question using only the numbered context blocks. "
    "After each sentence, cite the block it comes from as [1], [2]. "
    "If the blocks do not contain the answer, say: I don't know."
)

RAG_PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "{system_prompt}\n\n" + RAG_INSTRUCTIONS),
        MessagesPlaceholder("history", optional=True),
        ("human", "Context:\n{context}\n\nQuestion: {question}"),
    ]
)

PLAIN_PROMPT = ChatPromptTemplate.from_messages(
    [("system", "{system_prompt}"), MessagesPlaceholder("history", optional=True), ("human", "{question}")]
)


_HEADING_LINE = re.compile(r"^\s*#{1,6}\s.*$\n?", re.M)


def block_text(text: str) -> str:
    """A chunk as the prompt shows it: without its Markdown heading lines."""
    return _HEADING_LINE.sub("", text).strip()


def format_blocks(documents: Sequence[Document]) -> str:
    """``[n]`` followed by the chunk text, one block per retrieved chunk, best first.

    File names and Markdown heading lines stay out of the prompt: small models copy them into
    the answer (a heading that repeats the question was pasted back as the whole answer), and the
    citations already map each number to its file and section.
    """
    return "\n\n".join(
        f"[{number}] {block_text(document.page_content)}" for number, document in enumerate(documents, 1)
    )


def fit_blocks(documents: Sequence[Document], budget: int, count: Callable[[str], int]) -> list[Document]:
    """The best-ranked blocks that fit in ``budget`` tokens, in rank order.

    Blocks are kept whole while they fit; the first one that does not is cut at its last
    sentence end that fits (when at least one sentence does), and the rest are dropped. So a
    block is never cut mid-sentence and the [n] numbering stays that of the kept blocks.
    """
    from chatbot.text import sentences

    kept: list[Document] = []
    left = budget
    for document in documents:
        cost = count(document.page_content)
        if cost <= left:
            kept.append(document)
            left -= cost
            continue
        text = ""
        for sentence, separator in sentences(document.page_content):
            if count(text + sentence) > left:
                break
            text += sentence + separator
        if text.strip():
            metadata = {**document.metadata, "trimmed": True}
            kept.append(Document(page_content=text.strip(), metadata=metadata, id=document.id))
        break
    return kept
