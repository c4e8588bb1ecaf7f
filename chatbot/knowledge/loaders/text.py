"""Plain text, Markdown and saved web pages."""

from __future__ import annotations

from pathlib import Path

from charset_normalizer import from_bytes

from chatbot.knowledge.loaders.base import Budget, LoadError, LoadLimits, Page
from chatbot.knowledge.web_page import page_text


def _looks_binary(data: bytes) -> bool:
    sample = data[:8192]
    if b"\x00" in sample:
        return True
    control = sum(byte < 32 and byte not in (9, 10, 12, 13, 27) for byte in sample)
    return control > len(sample) * 0.05


def decode_text(data: bytes) -> str:
    """Decode bytes as UTF-8, else as the most likely encoding; refuse binary content."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 has NUL bytes, so check its BOM first
        return data.decode("utf-16")
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


def load_text(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """Plain text and markdown."""
    return [Page(Budget(limits.max_chars).take(decode_text(path.read_bytes())))]


def load_html(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """Main content of a saved web page (trafilatura); all visible text for snippets, or when
    no main content is found."""
    return [Page(page_text(Budget(limits.max_chars).take(decode_text(path.read_bytes()))))]
