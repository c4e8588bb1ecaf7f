"""The knowledge folder as the UI sees it: open, add and delete documents, never outside the folder."""

from __future__ import annotations

import re
import shutil
import unicodedata
from collections.abc import Callable
from pathlib import Path

from chatbot.knowledge.loaders import LOADERS, supported, unsupported_reason
from chatbot.knowledge.scan import is_ignored_name

MAX_NAME = 120


class DocumentError(ValueError):
    """A document path or upload that is refused; the message says why."""


def _checked_parts(relative: str) -> list[str]:
    parts = relative.replace("\\", "/").split("/")
    if "\x00" in relative or len(relative) > 4096:
        raise DocumentError("not a path inside the knowledge folder")
    if not relative or relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise DocumentError(f"not a path inside the knowledge folder: {relative!r}")
    if any(is_ignored_name(part) for part in parts):
        raise DocumentError(f"hidden or temporary files are not served: {relative!r}")
    return parts


def resolve_document(root: Path, relative: str) -> Path:
    """The file ``relative`` names inside ``root``; links may not lead out of the folder."""
    path = root.joinpath(*_checked_parts(relative))
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise DocumentError(f"no such document: {relative}") from exc
    if not real.is_relative_to(root.resolve()) or not real.is_file():
        raise DocumentError(f"no such document: {relative}")
    return path


def sanitize_filename(name: str) -> str:
    """A safe file name: the last path component, NFKC, only letters, digits, ``._-`` and spaces."""
    base = unicodedata.normalize("NFKC", name.replace("\\", "/").rsplit("/", 1)[-1])
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    stem = re.sub(r"[^\w. -]+", "_", stem, flags=re.UNICODE).strip(" ._") or "upload"
    suffix = re.sub(r"[^A-Za-z0-9]+", "", suffix).lower()
    clean = f"{stem[: MAX_NAME - len(suffix) - 1]}.{suffix}" if suffix else stem[:MAX_NAME]
    if is_ignored_name(clean):
        raise DocumentError(f"refused file name {name!r}")
    return clean


def sanitize_folder(folder: str) -> list[str]:
    """A sub-folder given by a user, as sanitised path components ("" is the top level)."""
    parts = [part for part in folder.replace("\\", "/").split("/") if part.strip()]
    if any(part.strip() in (".", "..") for part in parts):
        raise DocumentError(f"refused folder {folder!r}")
    return [sanitize_filename(part) for part in parts]


def check_uploaded(source: Path, upload_folder: Path) -> Path:
    """``source`` if it is a regular file that the upload handler wrote into ``upload_folder``.

    A forged upload naming any other path (a server file) is refused: Gradio checks this itself
    only for apps it launched, not for one mounted on a FastAPI app as this one is.
    """
    try:
        real = source.resolve(strict=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise DocumentError(f"{source.name}: not an uploaded file") from exc
    if source.is_symlink() or not real.is_file() or not real.is_relative_to(upload_folder.resolve()):
        raise DocumentError(f"{source.name}: not an uploaded file")
    return real


def save_upload(
    root: Path,
    source: Path,
    name: str,
    folder: str = "",
    max_bytes: int | None = None,
    keep_old: Callable[[str], object] | None = None,
) -> str:
    """Copy an uploaded file into the knowledge folder; returns its relative path.

    The copy is written under a hidden name and renamed, so a sync never reads half a file.
    An existing document with the same name is replaced (a new version): ``keep_old`` is called
    with its relative path first (the app moves it to the trash); without it the upload is refused.
    """
    clean = sanitize_filename(name)
    if not supported(Path(clean)):
        raise DocumentError(f"{clean}: {unsupported_reason(Path(clean))}; supported: {', '.join(sorted(LOADERS))}")
    size = source.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise DocumentError(f"{clean}: larger than the {max_bytes / 1e6:g} MB limit ({size / 1e6:.1f} MB)")
    target_dir = root.joinpath(*sanitize_folder(folder))
    target_dir.mkdir(parents=True, exist_ok=True)
    if not target_dir.resolve().is_relative_to(root.resolve()):
        raise DocumentError(f"refused folder {folder!r}")
    target = target_dir / clean
    relative = target.relative_to(root).as_posix()
    if target.exists() or target.is_symlink():
        if keep_old is None:
            raise DocumentError(f"{relative} exists already; delete it first or upload under another name")
        keep_old(relative)
    staging = target_dir / f".{clean}.upload"
    shutil.copyfile(source, staging)
    staging.replace(target)
    return relative
