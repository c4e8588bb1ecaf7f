"""Find the files of the knowledge folder that should be indexed, and say why others are not."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from chatbot.knowledge.loaders import supported, unsupported_reason

_TEMPORARY_SUFFIXES = (".swp", ".swo", ".swx", ".tmp", ".temp", ".part", ".crdownload", ".partial", "~")


@dataclass
class ScanResult:
    """Indexable files by relative path, and skipped ones with the reason."""

    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def is_ignored_name(name: str) -> bool:
    """Hidden files, editor swap files and office lock files are never indexed."""
    return name.startswith((".", "~$")) or name.lower().endswith(_TEMPORARY_SUFFIXES)


def relative_key(root: Path, path: Path) -> str:
    """The path of a file relative to the knowledge folder, with forward slashes."""
    return path.relative_to(root).as_posix()


def scan_folder(root: Path, max_bytes: int) -> ScanResult:
    """Walk ``root`` recursively without following links out of it."""
    result = ScanResult()
    root_real = root.resolve()
    if not root.is_dir():
        return result
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        kept_dirs = []
        for name in sorted(dirs):
            path = here / name
            if is_ignored_name(name):
                continue
            if path.is_symlink():
                reason = _link_problem(path, root_real)
                if reason:
                    result.skipped[relative_key(root, path)] = reason
                    continue
                # a link to a folder inside the knowledge folder would index files twice
                result.skipped[relative_key(root, path)] = "symlinked folder (not followed)"
                continue
            kept_dirs.append(name)
        dirs[:] = kept_dirs
        for name in sorted(names):
            path = here / name
            key = relative_key(root, path)
            if is_ignored_name(name):
                continue
            if path.is_symlink():
                # outside: never read; inside: the target is indexed under its own path already
                result.skipped[key] = _link_problem(path, root_real) or "symlink to a file in the knowledge folder"
                continue
            if not supported(path):
                result.skipped[key] = unsupported_reason(path)
                continue
            try:
                size = path.stat().st_size
            except OSError as exc:
                result.skipped[key] = f"cannot read: {exc.strerror}"
                continue
            if size > max_bytes:
                result.skipped[key] = f"larger than the {max_bytes / 1e6:g} MB limit ({size / 1e6:.1f} MB)"
                continue
            result.files[key] = path
    return result


def _link_problem(path: Path, root_real: Path) -> str | None:
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "broken symlink"
    if not target.is_relative_to(root_real):
        return "symlink points outside the knowledge folder (not followed)"
    return None
