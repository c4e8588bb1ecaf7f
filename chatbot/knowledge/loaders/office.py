"""Word documents and slide decks (zip-based Office files), and the zip checks they share with spreadsheets."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from chatbot.knowledge.loaders.base import Budget, LoadError, LoadLimits, Page

T = TypeVar("T")


def check_zip(path: Path, limits: LoadLimits) -> None:
    """Refuse a zip whose directory declares too many entries or too many uncompressed bytes.

    ``zipfile`` never inflates an entry past the size its directory declares, so the declared
    total bounds what reading it can cost (a 1 MB file holding 1 GiB of XML is refused here).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise LoadError(f"unreadable {path.suffix.lstrip('.').upper()}: not a valid zip: {exc}") from exc
    if len(entries) > limits.max_zip_entries:
        raise LoadError(f"{len(entries):,} zip entries; the limit is {limits.max_zip_entries:,} (max_zip_entries)")
    total = sum(entry.file_size for entry in entries)
    if total > limits.max_unzipped_bytes:
        limit_mb = limits.max_unzipped_bytes / 1e6
        raise LoadError(f"expands to {total / 1e6:,.0f} MB; the limit is {limit_mb:,.0f} MB (max_unzipped_mb)")


def open_zipped(path: Path, limits: LoadLimits, reader: Callable[[str], T], errors: tuple[type[Exception], ...]) -> T:
    """A zip-based document opened by its library once its directory passed the limits; the
    library's ``errors`` become a :class:`LoadError` naming the type."""
    check_zip(path, limits)
    errors += (zipfile.BadZipFile, KeyError, ValueError)
    try:
        return reader(str(path))
    except errors as exc:
        raise LoadError(f"unreadable {path.suffix.lstrip('.').upper()}: {type(exc).__name__}: {exc}") from exc


def _table_row(cells: Iterable) -> str:
    return " | ".join(cell.text.strip() for cell in cells)


def load_docx(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """Paragraphs and tables of a Word document; ``Heading N`` styles become Markdown headings."""
    import docx  # python-docx; imported here because few knowledge folders hold Word files
    from docx.opc.exceptions import PackageNotFoundError

    document = open_zipped(path, limits, docx.Document, (PackageNotFoundError,))
    budget = Budget(limits.max_chars)
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, docx.table.Table):
            lines.extend(budget.take(_table_row(row.cells)) for row in block.rows)
            continue
        text = budget.take(block.text.strip())
        style = (block.style.name if block.style is not None else "") or ""
        match = re.match(r"(?:Heading|Title)\s*(\d?)", style)
        if text and match:
            lines.append(f"\n{'#' * min(int(match.group(1) or 1), 3)} {text}\n")
        elif text:
            lines.append(text)
    return [Page("\n".join(lines).strip())]


def _shape_lines(shapes: Iterable, budget: Budget) -> Iterator[str]:
    """The text of slide shapes in order: paragraphs of text frames, table rows, groups' members."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    for shape in shapes:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shape_lines(shape.shapes, budget)
        elif shape.has_text_frame:
            for paragraph in shape.text_frame.paragraphs:
                if text := paragraph.text.strip():
                    yield budget.take(text)
        elif getattr(shape, "has_table", False):  # only graphic frames have the attribute
            for row in shape.table.rows:
                yield budget.take(_table_row(row.cells))


def load_pptx(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """One page per slide (its number the page's): the title as a Markdown heading (the chunks'
    ``section``), then its text boxes and tables in order, then the speaker notes."""
    import pptx  # python-pptx; imported here because few knowledge folders hold slide decks
    from pptx.exc import PackageNotFoundError

    deck = open_zipped(path, limits, pptx.Presentation, (PackageNotFoundError,))
    budget = Budget(limits.max_chars)
    pages = []
    for number, slide in enumerate(deck.slides, 1):
        title = slide.shapes.title
        lines = [f"# {budget.take(title.text.strip())}"] if title is not None and title.text.strip() else []
        lines += _shape_lines((shape for shape in slide.shapes if shape != title), budget)
        if slide.has_notes_slide and (notes := slide.notes_slide.notes_text_frame.text.strip()):
            lines.append(budget.take(f"Notes: {notes}"))
        pages.append(Page("\n\n".join(lines), number))
    return pages
