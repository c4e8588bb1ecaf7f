"""What every loader shares: the page and records a file is read into, the limits it is read
within, and the error it fails with."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MARKDOWN_TYPES = frozenset({"md", "markdown", "html", "htm", "docx", "pptx"})
"""File types whose text is Markdown after loading (headings split into sections)."""


class LoadError(Exception):
    """A file could not be read; the message is the reason shown to the user."""


@dataclass(frozen=True)
class LoadLimits:
    """Bounds checked before or while a file is read, so a small hostile file cannot take the machine.

    ``max_chars``: text extracted per file; ``max_pages``: pages per PDF; ``max_unzipped_bytes``
    and ``max_zip_entries``: what a zip-based file (.docx, .xlsx, .pptx) may expand to, from its directory,
    before anything is decompressed.
    """

    max_chars: int = 5_000_000
    max_pages: int = 2000
    max_unzipped_bytes: int = 200_000_000
    max_zip_entries: int = 10_000


class Budget:
    """Counts extracted characters against ``LoadLimits.max_chars``."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, text: str) -> str:
        self.used += len(text)
        if self.used > self.limit:
            raise LoadError(f"more than {self.limit:,} characters of text (setting max_file_chars)")
        return text


@dataclass(frozen=True)
class Record:
    """One of a file's own units (a CSV row, a JSON object) and where it is (``row 12``, ``items[3]``)."""

    text: str
    label: str = ""


@dataclass(frozen=True)
class Page:
    """Text of one page (PDFs) or of a whole file (``number`` is None).

    ``records``: the file's units, which the chunker keeps apart (each its own chunk, split only
    when longer than a chunk, its label the chunk's ``section``); ``text`` is then their lines.
    """

    text: str
    number: int | None = None
    records: tuple[Record, ...] = ()

    @classmethod
    def of_records(cls, records: Iterable[Record]) -> Page:
        """One page of records, empty ones left out."""
        kept = tuple(record for record in records if record.text)
        return cls("\n".join(record.text for record in kept), records=kept)
