"""Read one knowledge file into text pages; every failure is a :class:`LoadError` with a reason.

Structured formats (HTML, DOCX) are rendered as Markdown so that their headings become the
``section`` metadata of the chunks, exactly as for ``.md`` files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
from bs4 import BeautifulSoup
from charset_normalizer import from_bytes
from pypdf import PdfReader
from pypdf.errors import PdfReadError, PyPdfError

log = logging.getLogger(__name__)

MARKDOWN_TYPES = frozenset({"md", "markdown", "html", "htm", "docx"})
"""File types whose text is Markdown after loading (headings split into sections)."""


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


def load_text(path: Path) -> list[Page]:
    """Plain text and markdown."""
    return [Page(decode_text(path.read_bytes()))]


def _pdf_pages_pdfium(path: Path) -> list[Page]:
    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise LoadError("encrypted PDF that needs a password") from exc
        raise
    try:
        pages = []
        for number, page in enumerate(document, 1):
            text = page.get_textpage().get_text_range()
            pages.append(Page(text.replace("\r\n", "\n").replace("\r", "\n"), number))
        return pages
    finally:
        document.close()


def _pdf_pages_pypdf(path: Path) -> list[Page]:
    reader = PdfReader(path)
    if reader.is_encrypted and not reader.decrypt(""):
        raise LoadError("encrypted PDF that needs a password")
    return [Page(page.extract_text() or "", number) for number, page in enumerate(reader.pages, 1)]


def load_pdf(path: Path) -> list[Page]:
    """One page per PDF page (numbered from 1), read by PDFium, else by pypdf.

    Encrypted PDFs with an empty user password are opened. Two parsers because each rejects
    valid files the other reads (pypdf stops on some SEC filings with ``LimitReachedError``).
    """
    failures = []
    for name, parse in (("pdfium", _pdf_pages_pdfium), ("pypdf", _pdf_pages_pypdf)):
        try:
            pages = parse(path)
        except LoadError:
            raise
        except (pdfium.PdfiumError, PyPdfError, PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if not any(page.text.strip() for page in pages):
            raise LoadError("PDF has no extractable text (scanned images?)")
        return pages
    raise LoadError("unreadable PDF (" + "; ".join(failures) + ")")


def _html_to_markdown(soup: BeautifulSoup) -> str:
    for tag in soup(["script", "style", "noscript", "template", "svg", "head"]):
        tag.decompose()
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading.replace_with(f"\n\n{'#' * min(level, 3)} {heading.get_text(' ', strip=True)}\n\n")
    text = soup.get_text("\n")
    lines = (re.sub(r"[ \t\xa0]+", " ", line).strip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def load_html(path: Path) -> list[Page]:
    """Visible text of an HTML page; headings become Markdown headings."""
    soup = BeautifulSoup(decode_text(path.read_bytes()), "html.parser")
    return [Page(_html_to_markdown(soup))]


def load_docx(path: Path) -> list[Page]:
    """Paragraphs and tables of a Word document; ``Heading N`` styles become Markdown headings."""
    import docx  # python-docx; imported here because few knowledge folders hold Word files
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise LoadError(f"unreadable DOCX: {type(exc).__name__}: {exc}") from exc
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, docx.table.Table):
            lines.extend(" | ".join(cell.text.strip() for cell in row.cells) for row in block.rows)
            continue
        text = block.text.strip()
        style = (block.style.name if block.style is not None else "") or ""
        match = re.match(r"(?:Heading|Title)\s*(\d?)", style)
        if text and match:
            lines.append(f"\n{'#' * min(int(match.group(1) or 1), 3)} {text}\n")
        elif text:
            lines.append(text)
    return [Page("\n".join(lines).strip())]


def load_csv(path: Path) -> list[Page]:
    """One line per row, each value labelled with its column (``col: value; ...``)."""
    text = decode_text(path.read_bytes())
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        return [Page("")]
    header, body = rows[0], rows[1:]
    lines = ["; ".join(f"{name}: {value}" for name, value in zip(header, row, strict=False) if value) for row in body]
    return [Page("\n".join(line for line in lines if line))]


def _flatten(value: object, prefix: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for number, item in enumerate(value):
            yield from _flatten(item, f"{prefix}[{number}]")
    elif value is not None and value != "":
        yield f"{prefix}: {value}" if prefix else str(value)


def load_json(path: Path) -> list[Page]:
    """One ``path.to.key: value`` line per leaf value."""
    try:
        data = json.loads(decode_text(path.read_bytes()))
    except json.JSONDecodeError as exc:
        raise LoadError(f"invalid JSON: {exc}") from exc
    return [Page("\n".join(_flatten(data)))]


LOADERS: dict[str, Callable[[Path], list[Page]]] = {
    ".md": load_text,
    ".markdown": load_text,
    ".txt": load_text,
    ".pdf": load_pdf,
    ".html": load_html,
    ".htm": load_html,
    ".docx": load_docx,
    ".csv": load_csv,
    ".json": load_json,
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
