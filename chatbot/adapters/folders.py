"""The adapter folders under ``adapters/`` and each one's verdict, without touching a model.

The registry attaches the folders that pass to the running engine; ``chatbot adapters list``
shows the same verdicts from the base model's files, without loading it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from chatbot.adapters.check import check_adapter
from chatbot.adapters.domains import Domain, apply_manifest, read_manifest
from chatbot.models.shapes import BaseShapes
from chatbot.vocabulary import BASE_ADAPTER, AdapterId

log = logging.getLogger(__name__)


def adapter_folders(folder: Path, unnameable: Callable[[str], None] = lambda _name: None) -> dict[str, Path]:
    """Every sub-folder that can be an adapter, by name (hidden and ``_`` folders left out);
    ``unnameable`` is told each folder whose name cannot be an adapter's (:class:`AdapterId`)."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        if not path.is_dir() or path.name.startswith((".", "_")):
            continue
        if AdapterId.valid(path.name):
            found[path.name] = path
        else:
            unnameable(path.name)
    return found


def folder_mtime(path: Path) -> float:
    """The newest modification time of the files in an adapter folder (a change reloads it)."""
    return max((p.stat().st_mtime for p in path.iterdir() if p.is_file()), default=0.0)


def inspect_adapter(
    name: str, path: Path, base: BaseShapes, fingerprint: str | None, system_prompt: str, mtime: float = 0.0
) -> Domain:
    """The :class:`Domain` of the folder ``path``: its manifest applied, its ``error`` set when it
    does not fit ``base`` (never raised: a bad folder is that folder's problem)."""
    domain = Domain(name, name, "", system_prompt, folder=path, mtime=mtime)
    try:
        if name == BASE_ADAPTER:
            raise ValueError(f"the name {BASE_ADAPTER!r} is reserved for the model without adapter")
        apply_manifest(domain, read_manifest(path))
        problems, domain.warnings = check_adapter(path, base, fingerprint)
        if problems:
            raise ValueError("; ".join(problems))
    except Exception as exc:  # noqa: BLE001 - any failure is this folder's, never the caller's
        domain.error = str(exc) or type(exc).__name__
    return domain
