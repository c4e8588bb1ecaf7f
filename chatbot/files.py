"""Whole-or-nothing file writes: a reader (or a crash) never sees half a file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """Yield a partial path beside ``target`` to write; on success it is renamed over ``target``.

    If the block raises, the partial file is removed and ``target`` keeps its previous bytes.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
