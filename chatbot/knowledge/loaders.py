"""Read one knowledge file into text pages; every failure is a :class:`LoadError` with a reason."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from charset_normalizer import from_bytes
from pypdf import PdfReader
from pypdf.errors import PdfReadError

log = logging.getLogger(__name__)


class LoadError(Exception):
    """A file could not be read; the message is the reason shown to the user."""


@dataclass(frozen=True)
class Page:
    """Text of one page (PDFs) or of a whole file (``number`` is None)."""

    text: str
    number: int | None = None


def _looks_binary(data: bytes) -> bool:
    sample = data[:8192]
    if b"\x00" in sample:
        return True
    control = sum(byte < 32 and byte not in (9, 10, 12, 13) for byte in sample)
    return control > len(sample) * 0.05


def decode_text(data: bytes) -> str:
    """Decode bytes as UTF-8, else as the most likely encoding; refuse binary content."""
    if _looks_binary(data):
        raise LoadError("binary content, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    best = from_bytes(data).best()
    if best is None:
        raise LoadError("cannot tell the text encoding")
    return str(best)


def load_text(path: Path) -> list[Page]:
    """Plain text and markdown."""
    return [Page(decode_text(path.read_bytes()))]


def load_pdf(path: Path) -> list[Page]:
    """One page per PDF page (numbered from 1); encrypted PDFs with an empty password are opened."""
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError("encrypted PDF that needs a password")
        pages = [Page(page.extract_text() or "", number) for number, page in enumerate(reader.pages, 1)]
    except LoadError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(f"unreadable PDF: {type(exc).__name__}: {exc}") from exc
    if not any(page.text.strip() for page in pages):
        raise LoadError("PDF has no extractable text (scanned images?)")
    return pages


LOADERS: dict[str, Callable[[Path], list[Page]]] = {
    ".md": load_text,
    ".markdown": load_text,
    ".txt": load_text,
    ".pdf": load_pdf,
}


def supported(path: Path) -> bool:
    """Whether a loader exists for this file's extension."""
    return path.suffix.lower() in LOADERS


def load_file(path: Path) -> list[Page]:
    """Read ``path`` with the loader for its type; raises :class:`LoadError`."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise LoadError(f"unsupported file type {path.suffix or '(none)'}")
    try:
        return loader(path)
    except LoadError:
        raise
    except Exception as exc:  # a parser bug must not stop the sync of other files
        log.exception("loader failed on %s", path)
        raise LoadError(f"{type(exc).__name__}: {exc}") from exc
