"""Read one knowledge file into text pages; every failure is a :class:`LoadError` with a reason.

Structured formats (HTML, DOCX, PPTX) are rendered as Markdown so that their headings become the
``section`` metadata of the chunks, exactly as for ``.md`` files.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import logging
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pypdfium2 as pdfium
from charset_normalizer import from_bytes
from pypdf import PdfReader
from pypdf.errors import PdfReadError, PyPdfError

from chatbot.knowledge.web_page import page_text

log = logging.getLogger(__name__)
T = TypeVar("T")

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


class _Budget:
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
    return [Page(_Budget(limits.max_chars).take(decode_text(path.read_bytes())))]


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
        budget = _Budget(limits.max_chars)
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
    budget = _Budget(limits.max_chars)
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


def load_html(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """Main content of a saved web page (trafilatura); all visible text for snippets, or when
    no main content is found."""
    return [Page(page_text(_Budget(limits.max_chars).take(decode_text(path.read_bytes()))))]


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


def _open_zipped(path: Path, limits: LoadLimits, reader: Callable[[str], T], errors: tuple[type[Exception], ...]) -> T:
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

    document = _open_zipped(path, limits, docx.Document, (PackageNotFoundError,))
    budget = _Budget(limits.max_chars)
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


def _shape_lines(shapes: Iterable, budget: _Budget) -> Iterator[str]:
    """The text of slide shapes in order: paragraphs of text frames, table rows, groups' members."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    for shape in shapes:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shape_lines(shape.shapes, budget)
        elif shape.has_text_frame:
            for paragraph in shape.text_frame.paragraphs:
                if text := paragraph.text.strip():
                    yield budget.take(text)
        elif getattr(shape, "has_table", False) and shape.has_table:
            for row in shape.table.rows:
                yield budget.take(_table_row(row.cells))


def load_pptx(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """One page per slide (its number the page's): the title as a Markdown heading (the chunks'
    ``section``), then its text boxes and tables in order, then the speaker notes."""
    import pptx  # python-pptx; imported here because few knowledge folders hold slide decks
    from pptx.exc import PackageNotFoundError

    deck = _open_zipped(path, limits, pptx.Presentation, (PackageNotFoundError,))
    budget = _Budget(limits.max_chars)
    pages = []
    for number, slide in enumerate(deck.slides, 1):
        title = slide.shapes.title
        lines = [f"# {budget.take(title.text.strip())}"] if title is not None and title.text.strip() else []
        lines += _shape_lines((shape for shape in slide.shapes if shape != title), budget)
        if slide.has_notes_slide and (notes := slide.notes_slide.notes_text_frame.text.strip()):
            lines.append(budget.take(f"Notes: {notes}"))
        pages.append(Page("\n\n".join(lines), number))
    return pages


def _labelled(names: list[str], values: list[str]) -> str:
    """A row's non-empty values, each labelled with its column: ``name: Lamp; price: 12``."""
    return "; ".join(f"{name}: {value}" for name, value in zip(names, values, strict=False) if value)


def load_csv(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """One record per row, each value labelled with its column (``col: value; ...``)."""
    budget = _Budget(limits.max_chars)
    text = decode_text(path.read_bytes())
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(io.StringIO(text), dialect)
    header = next(rows, None)
    if header is None:
        return [Page("")]
    header = [name.strip() or f"column {number}" for number, name in enumerate(header, 1)]
    return [
        Page.of_records(
            Record(budget.take(_labelled(header, row)), f"row {number}")  # numbered as a spreadsheet would
            for number, row in enumerate(rows, 2)
        )
    ]


def _cell(value: object) -> str:
    if isinstance(value, datetime.datetime):
        return value.date().isoformat() if value.time() == datetime.time() else value.isoformat(sep=" ")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def load_xlsx(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """One record per row of every sheet, its values labelled with the column headers (the sheet's
    first row with two values or more) and located as ``Sheet row 12``; formulas give their last
    computed value."""
    import openpyxl  # imported here because few knowledge folders hold spreadsheets
    from openpyxl.utils import get_column_letter
    from openpyxl.utils.exceptions import InvalidFileException

    def reader(name: str) -> openpyxl.Workbook:
        return openpyxl.load_workbook(name, read_only=True, data_only=True)

    book = _open_zipped(path, limits, reader, (InvalidFileException, TypeError))
    budget = _Budget(limits.max_chars)
    records: list[Record] = []
    cells = 0
    try:
        for sheet in book.worksheets:
            sheet.reset_dimensions()  # rows as stored: a declared A1:XFD1048576 is not padded out
            header: list[str] | None = None
            for number, row in enumerate(sheet.iter_rows(values_only=True), 1):
                cells += len(row)  # empty cells cost time too: bounded like characters
                if cells > limits.max_chars:
                    raise LoadError(f"more than {limits.max_chars:,} cells (setting max_file_chars)")
                values = [_cell(value) if value is not None else "" for value in row]
                if header is None and sum(map(bool, values)) >= 2:
                    header = [name or get_column_letter(column) for column, name in enumerate(values, 1)]
                    continue
                if header is None:  # a title above the table, or a sheet of one column
                    text = "; ".join(value for value in values if value)
                else:
                    extra = [get_column_letter(column) for column in range(len(header) + 1, len(values) + 1)]
                    text = _labelled(header + extra, values)
                records.append(Record(budget.take(text), f"{sheet.title} row {number}"))
    finally:
        book.close()
    return [Page.of_records(records)]


RECORD_CHARS = 1000
"""A JSON object or list whose lines fit in this many characters (about a 200-token chunk) is one
record; a larger one is split into its members, its plain values gathered into records this size.
The file's own top level (under any one-key wrappers) is always split: its keys are its sections,
its items its records."""


def _json_records(value: object, prefix: str, budget: _Budget, top: bool = False) -> list[tuple[str, list[str]]]:
    """The records of one JSON value (``top``: the file's), each its path and its ``path.to.key: value`` lines."""
    if isinstance(value, dict):
        members = [(f"{prefix}.{key}" if prefix else str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        members = [(f"{prefix}[{number}]", item) for number, item in enumerate(value)]
    else:
        if value is None or value == "":
            return []
        return [(prefix, [budget.take(f"{prefix}: {value}" if prefix else str(value))])]
    lines: list[str] = []  # the whole value's, in order
    plain: list[str] = []
    records: list[tuple[str, list[str]]] = []
    for name, item in members:
        found = _json_records(item, name, budget, top and len(members) == 1)
        lines.extend(line for _, record in found for line in record)
        if isinstance(item, dict | list):
            records.extend(found)
        else:
            plain.extend(line for _, record in found for line in record)
    if _chars(lines) <= RECORD_CHARS and not top:
        return [(prefix, lines)] if lines else []
    return [(prefix, group) for group in _fill(plain)] + records


def _chars(lines: list[str]) -> int:
    return sum(len(line) + 1 for line in lines)


def _fill(lines: list[str]) -> list[list[str]]:
    """Consecutive lines gathered into records of at most ``RECORD_CHARS`` (a longer line is one alone)."""
    records: list[list[str]] = []
    size = 0
    for line in lines:
        if records and size + len(line) + 1 <= RECORD_CHARS:
            records[-1].append(line)
            size += len(line) + 1
        else:
            records.append([line])
            size = len(line) + 1
    return records


def _parsed(text: str, where: str = "") -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadError(f"invalid JSON{where}: {exc}") from exc
    except RecursionError as exc:
        raise LoadError(f"JSON nested too deeply{where}") from exc


def load_json(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """Records of ``path.to.key: value`` lines: each object or list that fits a chunk is one."""
    records = _json_records(_parsed(decode_text(path.read_bytes())), "", _Budget(limits.max_chars), top=True)
    return [Page.of_records(Record("\n".join(lines), path) for path, lines in records)]


def load_jsonl(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """JSON Lines: each line's value read as a ``.json`` file's, its records located as ``line 12``."""
    budget = _Budget(limits.max_chars)
    records: list[Record] = []
    for number, line in enumerate(decode_text(path.read_bytes()).splitlines(), 1):
        if line.strip():
            found = _json_records(_parsed(line, f" on line {number}"), "", budget)
            records += [Record("\n".join(lines), f"line {number} {where}".strip()) for where, lines in found]
    return [Page.of_records(records)]


LOADERS: dict[str, Callable[[Path, LoadLimits], list[Page]]] = {
    ".md": load_text,
    ".markdown": load_text,
    ".txt": load_text,
    ".pdf": load_pdf,
    ".html": load_html,
    ".htm": load_html,
    ".docx": load_docx,
    ".xlsx": load_xlsx,
    ".pptx": load_pptx,
    ".csv": load_csv,
    ".json": load_json,
    ".jsonl": load_jsonl,
}


_SAVE_AS = {".doc": ".docx", ".xls": ".xlsx", ".ppt": ".pptx"}  # old binary Office formats and their successors


def supported(path: Path) -> bool:
    """Whether a loader exists for this file's extension."""
    return path.suffix.lower() in LOADERS


def unsupported_reason(path: Path) -> str:
    """Why a file is not read, with what to do for an old Office format."""
    newer = _SAVE_AS.get(path.suffix.lower())
    hint = f" (an old binary Office format: save it as {newer})" if newer else ""
    return f"unsupported file type {path.suffix or '(none)'}{hint}"


def load_file(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """Read ``path`` with the loader for its type within ``limits``; raises :class:`LoadError`."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise LoadError(unsupported_reason(path))
    try:
        return loader(path, limits)
    except LoadError:
        raise
    except RecursionError as exc:
        raise LoadError("nested too deeply to read") from exc
    except Exception as exc:  # a parser bug must not stop the sync of other files
        log.exception("loader failed on %s", path)
        raise LoadError(f"{type(exc).__name__}: {exc}") from exc
