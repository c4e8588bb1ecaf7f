"""The knowledge folder's trash: a document the app removes or replaces is moved here, never destroyed.

Deleting from the Knowledge tab, and uploading a file over one of the same name, move the old
file into ``<data_dir>/trash/<id>/file/`` beside an ``entry.json`` that says where it came from, when
and why. It stays there, restorable from the Knowledge tab or ``chatbot restore``, until the
trash is emptied (a separate, confirmed action). The index follows the folder as always: a
trashed file leaves the index at the next sync, a restored one comes back.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from chatbot.knowledge.documents import DocumentError, resolve_document

ENTRY = "entry.json"


@dataclass(frozen=True)
class TrashEntry:
    """One trashed file: ``path`` is where it was, relative to the knowledge folder."""

    id: str
    path: str
    reason: str  # "deleted" or "replaced by an upload"
    trashed_at: float
    size: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def label(self) -> str:
        """How a person picks it from a list: the path, why and when."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.trashed_at))
        return f"{self.path} ({self.reason} {when})"


class Trash:
    """The trash folder of one knowledge folder."""

    def __init__(self, folder: Path, root: Path) -> None:
        self.folder = folder
        self.root = root

    def put(self, relative: str, reason: str = "deleted") -> TrashEntry:
        """Move the document ``relative`` (inside the knowledge folder) into the trash.

        A link is moved as a link, never its target. Raises :class:`DocumentError` for a path
        that is not a document of the folder.
        """
        path = resolve_document(self.root, relative)
        relative = path.relative_to(self.root).as_posix()
        entry_id = f"{time.time_ns():x}-{secrets.token_hex(3)}"
        box = self.folder / entry_id
        (box / "file").mkdir(parents=True)
        size = path.lstat().st_size
        entry = TrashEntry(entry_id, relative, reason, time.time(), size)
        (box / ENTRY).write_text(json.dumps(entry.to_dict()), encoding="utf-8")
        try:
            shutil.move(str(path), str(box / "file" / path.name))  # a rename when both are on one file system
        except OSError:
            shutil.rmtree(box, ignore_errors=True)
            raise
        return entry

    def entries(self) -> list[TrashEntry]:
        """What the trash holds, newest first (a damaged entry is left out, not deleted)."""
        found = []
        if not self.folder.is_dir():
            return found
        for box in self.folder.iterdir():
            try:
                data = json.loads((box / ENTRY).read_text(encoding="utf-8"))
                entry = TrashEntry(**data)
            except (OSError, ValueError, TypeError):
                continue
            if entry.id == box.name and self._file(entry) is not None:
                found.append(entry)
        return sorted(found, key=lambda entry: entry.trashed_at, reverse=True)

    def find(self, key: str) -> TrashEntry:
        """The entry with id ``key``, or the newest one that was at path ``key``."""
        entries = self.entries()
        match = next((e for e in entries if e.id == key), None) or next((e for e in entries if e.path == key), None)
        if match is None:
            raise DocumentError(f"nothing in the trash is {key!r} (chatbot trash lists what is there)")
        return match

    def restore(self, key: str) -> str:
        """Move an entry back to where it was; returns its path in the knowledge folder.

        If a file of that name exists there now, it is never overwritten: the restored copy gets
        a free name beside it ("report (restored).pdf").
        """
        entry = self.find(key)
        source = self._file(entry)
        if source is None:
            raise DocumentError(f"the trashed file of {entry.path!r} is gone")
        target = self.root.joinpath(*entry.path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(self.root.resolve()):
            raise DocumentError(f"cannot restore outside the knowledge folder: {entry.path!r}")
        target = _free_name(target)
        staging = target.parent / f".{target.name}.restore"
        shutil.move(str(source), str(staging))  # hidden while it lands, so a sync never reads half a file
        os.replace(staging, target)
        shutil.rmtree(self.folder / entry.id, ignore_errors=True)
        return target.relative_to(self.root).as_posix()

    def empty(self, key: str | None = None) -> int:
        """Delete one entry (``key``) or everything in the trash for good; returns how many files."""
        doomed = [self.find(key)] if key is not None else self.entries()
        for entry in doomed:
            shutil.rmtree(self.folder / entry.id, ignore_errors=True)
        return len(doomed)

    def _file(self, entry: TrashEntry) -> Path | None:
        box = self.folder / entry.id
        candidate = box / "file" / Path(entry.path).name
        return candidate if candidate.is_file() or candidate.is_symlink() else None


def _free_name(target: Path) -> Path:
    if not target.exists() and not target.is_symlink():
        return target
    for number in range(1, 1000):
        label = "restored" if number == 1 else f"restored {number}"
        candidate = target.with_name(f"{target.stem} ({label}){target.suffix}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
    raise DocumentError(f"no free name to restore {target.name} beside the existing one")
