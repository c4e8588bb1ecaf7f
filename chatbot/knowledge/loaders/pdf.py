"""PDFs, page by page: PDFium first, pypdf when PDFium rejects a file."""

from __future__ import annotations

from pathlib import Path

import pypdfium2 as pdfium
from pypdf import PdfReader
from pypdf.errors import PdfReadError, PyPdfError

from chatbot.knowledge.loaders.base import Budget, LoadError, LoadLimits, Page


def _check_pages(count: int, limits: LoadLimits) -> None:
    if count > limits.max_pages:
        raise LoadError(f"PDF has {count:,} pages; the limit is {limits.max_pages:,} (setting max_pdf_pages)")


def _pdf_pages_pdfium(path: Path, limits: LoadLimits) -> list[Page]:
    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise LoadError("encrypted PDF that needs a password") from exc
        raise
    try:
        _check_pages(len(document), limits)
        budget = Budget(limits.max_chars)
        pages = []
        for number, page in enumerate(document, 1):
            text = budget.take(page.get_textpage().get_text_range())
            pages.append(Page(text.replace("\r\n", "\n").replace("\r", "\n"), number))
        return pages
    finally:
        document.close()


def _pdf_pages_pypdf(path: Path, limits: LoadLimits) -> list[Page]:
    reader = PdfReader(path)
    if reader.is_encrypted and not reader.decrypt(""):
        raise LoadError("encrypted PDF that needs a password")
    _check_pages(len(reader.pages), limits)
    budget = Budget(limits.max_chars)
    return [Page(budget.take(page.extract_text() or ""), number) for number, page in enumerate(reader.pages, 1)]


def load_pdf(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """One page per PDF page (numbered from 1), read by PDFium, else by pypdf.

    Encrypted PDFs with an empty user password are opened. Two parsers because each rejects
    valid files the other reads (pypdf stops on some SEC filings with ``LimitReachedError``).
    """
    failures = []
    for name, parse in (("pdfium", _pdf_pages_pdfium), ("pypdf", _pdf_pages_pypdf)):
        try:
            pages = parse(path, limits)
        except LoadError:
            raise
        except (pdfium.PdfiumError, PyPdfError, PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if not any(page.text.strip() for page in pages):
            raise LoadError("PDF has no extractable text (scanned images?)")
        return pages
    raise LoadError("unreadable PDF (" + "; ".join(failures) + ")")
