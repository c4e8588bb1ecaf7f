"""A base model's architecture and layer shapes, from a loaded model or from its files alone.

An adapter is checked against these (``chatbot.adapters.check``). Read from the files (config.json
and the safetensors headers, no weights, no torch) they let ``chatbot adapters list`` judge every
adapter folder in a fraction of a second, with the verdict the loaded model would give.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open


@dataclass(frozen=True)
class BaseShapes:
    """``architecture`` (config.json's first), every module name, and each weighted layer's
    ``(out_features, in_features)``."""

    architecture: str
    modules: frozenset[str]
    layers: dict[str, tuple[int, int]]


def shapes_of(model: Any) -> BaseShapes:
    """The shapes of a loaded ``torch.nn.Module`` (a transformers model)."""
    modules, layers = set(), {}
    for name, module in model.named_modules():
        modules.add(name)
        weight = getattr(module, "weight", None)
        if weight is None or len(weight.shape) < 2:
            continue
        out_features = getattr(module, "out_features", weight.shape[0])
        in_features = getattr(module, "in_features", weight.shape[-1])
        layers[name] = (int(out_features), int(in_features))
    architecture = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    return BaseShapes(architecture, frozenset(modules), layers)


def shapes_from_folder(folder: Path) -> BaseShapes:
    """The shapes of the model in ``folder``, read from config.json and the safetensors headers.

    A tied output layer is not stored: with ``tie_word_embeddings`` it has the input embedding's
    shape. ValueError when the folder holds no readable config or weights.
    """
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder}: no readable config.json ({exc})") from exc
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder}: no safetensors weights")
    layers: dict[str, tuple[int, int]] = {}
    for path in files:
        with safe_open(str(path), framework="numpy") as handle:
            for tensor in handle.keys():  # noqa: SIM118 - a handle, not a dict
                module, _, kind = tensor.rpartition(".")
                shape = handle.get_slice(tensor).get_shape()
                if kind == "weight" and len(shape) >= 2:
                    layers[module] = (int(shape[0]), int(shape[-1]))
    embedding = next((name for name in layers if name.endswith("embed_tokens")), None)
    if "lm_head" not in layers and embedding and config.get("tie_word_embeddings", True):
        layers["lm_head"] = layers[embedding]
    modules = {""}
    for name in layers:
        parts = name.split(".")
        modules.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    architecture = (config.get("architectures") or [config.get("model_type", "unknown")])[0]
    return BaseShapes(str(architecture), frozenset(modules), layers)
