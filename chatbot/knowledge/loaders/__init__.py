"""Read one knowledge file into text pages; every failure is a :class:`LoadError` with a reason.

One module per family of formats. Structured formats (HTML, DOCX, PPTX) are rendered as Markdown
so that their headings become the ``section`` metadata of the chunks, exactly as for ``.md``
files; tables and JSON are read into records, each its own chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from chatbot.knowledge.loaders.base import MARKDOWN_TYPES, LoadError, LoadLimits, Page, Record
from chatbot.knowledge.loaders.json_records import RECORD_CHARS, load_json, load_jsonl
from chatbot.knowledge.loaders.office import check_zip, load_docx, load_pptx
from chatbot.knowledge.loaders.pdf import load_pdf
from chatbot.knowledge.loaders.tables import load_csv, load_xlsx
from chatbot.knowledge.loaders.text import decode_text, load_html, load_text

__all__ = [
    "LOADERS",
    "MARKDOWN_TYPES",
    "RECORD_CHARS",
    "LoadError",
    "LoadLimits",
    "Page",
    "Record",
    "check_zip",
    "decode_text",
    "load_file",
    "supported",
    "unsupported_reason",
]

log = logging.getLogger(__name__)


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
