"""What an index was made with, recorded on its collection, so a change of settings is never half-applied.

Two parts, because they cost different amounts to change:

- ``vectors``: the embedding model's fingerprint. Vectors of two models (possibly of two dimensions)
  cannot share a collection, so another model empties it and every file is embedded again.
- ``reading``: what decides a file's chunks (chunk sizes, the load limits, :data:`INDEX_VERSION`).
  Another reading recipe makes the next sync read every file again; chunks that come out the same
  keep their vectors (the record manager skips them), the others replace them file by file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from chatbot.knowledge.loaders import LoadLimits

INDEX_VERSION = 2
"""Bump when a change to the loaders or the chunker changes what a file yields: every file is read again once."""

_NAMES = {
    "embedding": "embedding model",
    "version": "index version",
    "max_chars": "max_file_chars",
    "max_pages": "max_pdf_pages",
}


@dataclass(frozen=True)
class Recipe:
    """The two parts of an index's recipe (see the module docstring)."""

    vectors: dict[str, Any]
    reading: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"vectors": self.vectors, "reading": self.reading}, sort_keys=True)

    @classmethod
    def parse(cls, text: str | None) -> Recipe | None:
        """The recipe recorded as ``text``; None when there is none or it cannot be read."""
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("vectors"), dict):
            return None
        reading = data.get("reading")
        return cls(data["vectors"], reading if isinstance(reading, dict) else {})


def make_recipe(embedding: str, chunk_size: int, chunk_overlap: int, limits: LoadLimits) -> Recipe:
    """The recipe of an index embedded by the model with fingerprint ``embedding``."""
    reading = {"version": INDEX_VERSION, "chunk_size": chunk_size, "chunk_overlap": chunk_overlap, **asdict(limits)}
    return Recipe({"embedding": embedding}, reading)


def changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two parts of a recipe, in words ("chunk_size 200 -> 100")."""
    keys = sorted(set(old) | set(new))
    return ", ".join(
        f"{_NAMES.get(key, key)} {old.get(key)} -> {new.get(key)}" for key in keys if old.get(key) != new.get(key)
    )
