"""Split loaded pages into chunks measured in embedding-model tokens, keeping structure in metadata."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from langchain_core.documents import Document
from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from chatbot.knowledge.loaders import MARKDOWN_TYPES, Page

_MARKDOWN_HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3")]


def chunk_id(source: str, page: int | None, text: str) -> str:
    """Stable id of a chunk: the same text at the same place always gets the same id."""
    return hashlib.sha256(f"{source}\x00{page}\x00{text}".encode()).hexdigest()[:32]


def top_folder(source: str) -> str:
    """The first folder of a relative path ("" for files at the top), used by knowledge scopes."""
    return source.split("/", 1)[0] if "/" in source else ""


class Chunker:
    """Turns the pages of one file into LangChain documents ready for indexing."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, chunk_size: int, chunk_overlap: int) -> None:
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap

        def tokens(text: str) -> int:
            # verbose=False: measuring a long section is not feeding it to the model, so no
            # "sequence length is longer than the specified maximum" warning
            return len(tokenizer.encode(text, add_special_tokens=False, verbose=False))

        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size, chunk_overlap=chunk_overlap, length_function=tokens
        )
        self._markdown = MarkdownHeaderTextSplitter(_MARKDOWN_HEADERS, strip_headers=False)

    @classmethod
    def for_embedding_model(cls, folder: Path, chunk_size: int, chunk_overlap: int) -> Chunker:
        """A chunker that counts tokens with the embedding model's own tokenizer."""
        return cls(AutoTokenizer.from_pretrained(folder), chunk_size, chunk_overlap)

    def _sections(self, page: Page, file_type: str) -> list[Document]:
        if page.records:
            return [
                Document(page_content=record.text, metadata={"section": record.label} if record.label else {})
                for record in page.records
            ]
        if file_type in MARKDOWN_TYPES:
            sections = self._markdown.split_text(page.text)
            for section in sections:
                titles = [section.metadata.pop(key) for _, key in _MARKDOWN_HEADERS if key in section.metadata]
                if titles:
                    section.metadata["section"] = " > ".join(titles)
            return sections
        return [Document(page_content=page.text)]

    def split(self, source: str, pages: Sequence[Page], file_type: str) -> list[Document]:
        """Chunks of one file, each with ``source``, ``page`` (PDFs), ``section`` and ``chunk_id``."""
        chunks: list[Document] = []
        for page in pages:
            if not page.text.strip():
                continue
            for section in self._sections(page, file_type):
                for piece in self._splitter.split_text(section.page_content):
                    text = piece.strip()
                    if not text:
                        continue
                    metadata: dict[str, str | int] = {
                        "source": source,
                        "folder": top_folder(source),
                        "file_type": file_type,
                    }
                    if page.number is not None:
                        metadata["page"] = page.number
                    if "section" in section.metadata:
                        metadata["section"] = section.metadata["section"]
                    metadata["chunk_id"] = chunk_id(source, page.number, text)
                    chunks.append(Document(page_content=text, metadata=metadata, id=metadata["chunk_id"]))
        return chunks
