"""sha256 of files, streamed: the knowledge manifest, the model fingerprint and conversion caches use it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    """sha256 (hex) of the bytes of ``path``."""
    digest = hashlib.sha256()
    _feed(digest, path)
    return digest.hexdigest()


def files_digest(paths: Iterable[Path], *extra: str) -> str:
    """sha256 (hex) over ``extra`` and then the name and bytes of each of ``paths``, in order."""
    digest = hashlib.sha256("\x00".join(extra).encode())
    for path in paths:
        digest.update(path.name.encode())
        _feed(digest, path)
    return digest.hexdigest()


def _feed(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
