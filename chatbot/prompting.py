"""The prompts of the retrieval chain and the numbered context blocks they carry."""

from __future__ import annotations

from collections.abc import Sequence

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


def format_blocks(documents: Sequence[Document]) -> str:
    """``[n]`` followed by the chunk text, one block per retrieved chunk, best first.

    File names stay out of the prompt: small models copy them into the answer, and the
    citations already map each number to its file.
    """
    return "\n\n".join(f"[{number}] {document.page_content.strip()}" for number, document in enumerate(documents, 1))
