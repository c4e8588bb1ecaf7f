"""Tables: CSV files and spreadsheets, a record per row."""

from __future__ import annotations

import csv
import datetime
import io
from pathlib import Path

from chatbot.knowledge.loaders.base import Budget, LoadError, LoadLimits, Page, Record
from chatbot.knowledge.loaders.office import open_zipped
from chatbot.knowledge.loaders.text import decode_text


def _labelled(names: list[str], values: list[str]) -> str:
    """A row's non-empty values, each labelled with its column: ``name: Lamp; price: 12``."""
    return "; ".join(f"{name}: {value}" for name, value in zip(names, values, strict=False) if value)


def load_csv(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """One record per row, each value labelled with its column (``col: value; ...``)."""
    budget = Budget(limits.max_chars)
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

    book = open_zipped(path, limits, reader, (InvalidFileException, TypeError))
    budget = Budget(limits.max_chars)
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
