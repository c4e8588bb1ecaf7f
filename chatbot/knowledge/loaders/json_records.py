"""JSON and JSON Lines, as records of ``path.to.key: value`` lines."""

from __future__ import annotations

import json
from pathlib import Path

from chatbot.knowledge.loaders.base import Budget, LoadError, LoadLimits, Page, Record
from chatbot.knowledge.loaders.text import decode_text

RECORD_CHARS = 1000
"""A JSON object or list whose lines fit in this many characters (about a 200-token chunk) is one
record; a larger one is split into its members, its plain values gathered into records this size.
The file's own top level (under any one-key wrappers) is always split: its keys are its sections,
its items its records."""


def _json_records(value: object, prefix: str, budget: Budget, top: bool = False) -> list[tuple[str, list[str]]]:
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
    records = _json_records(_parsed(decode_text(path.read_bytes())), "", Budget(limits.max_chars), top=True)
    return [Page.of_records(Record("\n".join(lines), path) for path, lines in records)]


def load_jsonl(path: Path, limits: LoadLimits = LoadLimits()) -> list[Page]:
    """JSON Lines: each line one record (split like any JSON value over ``RECORD_CHARS``), located as ``line 12``."""
    budget = Budget(limits.max_chars)
    records: list[Record] = []
    for number, line in enumerate(decode_text(path.read_bytes()).splitlines(), 1):
        if line.strip():
            found = _json_records(_parsed(line, f" on line {number}"), "", budget)
            records += [Record("\n".join(lines), f"line {number} {where}".strip()) for where, lines in found]
    return [Page.of_records(records)]
