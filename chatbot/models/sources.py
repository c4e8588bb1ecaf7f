"""Where the configured models are on disk, and what names and fingerprints they carry.

Light on purpose (no torch, no transformers): ``chatbot info`` and ``chatbot adapters list`` use
it without loading a model.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from chatbot.config import EMBEDDED
from chatbot.digest import files_digest
from chatbot.models.embedded import ModelNotFoundError, minilm_folder, smollm2_gguf
from chatbot.models.hub import cached_snapshot, fetch, parse_hub_id


def weights_fingerprint(folder: Path) -> str:
    """sha256 over the names and bytes of the safetensors files in ``folder`` (first 16 hex)."""
    return files_digest(sorted(folder.glob("*.safetensors")))[:16]


def resolve_model_source(base_model: str, cache_dir: Path | None = None) -> Path:
    """Turn the ``base_model`` setting into a model folder or a ``.gguf`` file on disk; a hub id
    (``owner/name[@revision]``) is fetched into ``cache_dir`` once (:mod:`chatbot.models.hub`)."""
    if base_model == EMBEDDED:
        return smollm2_gguf()
    path = Path(base_model).expanduser()
    if not path.exists() and cache_dir is not None and parse_hub_id(base_model):
        return fetch(base_model, cache_dir)
    if not path.exists():
        hint = ", or a hub id such as Qwen/Qwen2.5-1.5B-Instruct" if parse_hub_id(base_model) is None else ""
        raise ModelNotFoundError(f"base_model: {path} does not exist (a model folder or a .gguf file{hint})")
    if path.is_dir() and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise ModelNotFoundError(
                f"base_model: {path} has no config.json and {len(ggufs)} .gguf files (need exactly one)"
            )
        return ggufs[0]
    if path.is_file() and path.suffix != ".gguf":
        raise ModelNotFoundError(f"base_model: {path} is a file but not a .gguf file")
    return path


def gguf_cache_folder(gguf: Path, cache_dir: Path) -> Path:
    """Where :func:`chatbot.models.gguf.convert_gguf` writes the model folder of ``gguf``."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir / "models" / f"{gguf.stem}-{key}"


def model_folder_on_disk(base_model: str, cache_dir: Path) -> Path | None:
    """The folder the engines load for ``base_model``; None for a GGUF file not converted yet or a
    hub id not fetched yet (nothing is converted or fetched here)."""
    if parse_hub_id(base_model):
        return cached_snapshot(base_model, cache_dir)
    source = resolve_model_source(base_model)
    if source.suffix != ".gguf":
        return source
    folder = gguf_cache_folder(source, cache_dir)
    return folder if (folder / "config.json").is_file() else None


def display_name(base_model: str, source: Path) -> str:
    """The name a person sees for the base model of ``source``."""
    if base_model == EMBEDDED:
        return "SmolLM2-135M-Instruct"
    if parse_hub_id(base_model):
        return base_model
    return source.stem if source.is_file() else source.name


def resolve_embedding_folder(embedding_model: str) -> Path:
    """Turn the ``embedding_model`` setting into a sentence-transformers folder."""
    if embedding_model == EMBEDDED:
        return minilm_folder()
    path = Path(embedding_model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"embedding_model: {path} is not a sentence-transformers model folder (no config.json)"
        )
    return path


def embedding_fingerprint(folder: Path) -> str:
    """A short hash of the configs and weights of every module the model loads (a Dense layer
    included): two indexes' vectors are comparable only when it is equal."""
    files: list[Path] = []
    for module in [""] + _module_folders(folder):
        place = folder / module
        files += sorted(place.glob("*.json"))
        files += sorted(place.glob("*.safetensors")) or sorted(place.glob("*.bin"))
    stamps = tuple((str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files)
    return _digest(stamps)


def _module_folders(folder: Path) -> list[str]:
    try:
        modules = json.loads((folder / "modules.json").read_text())
        return sorted({str(module["path"]) for module in modules if module.get("path")})
    except (OSError, ValueError, TypeError, KeyError):
        return []  # a plain transformers folder: one module, the folder itself


@cache
def _digest(stamps: tuple[tuple[str, int, int], ...]) -> str:
    # keyed on size and mtime, so a sync re-hashes the weights only when a file was replaced
    return files_digest([Path(name) for name, _, _ in stamps])[:16]
