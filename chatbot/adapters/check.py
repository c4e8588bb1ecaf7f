"""Check an adapter folder against the base model (loaded, or its files) before PEFT touches it.

Everything is read without unpickling anything: the JSON config, the TOML manifest and the
safetensors header. Each problem is a sentence naming what is wrong; an empty list means the
adapter fits.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from chatbot.adapters.domains import read_manifest
from chatbot.models.shapes import BaseShapes

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
_PREFIX = "base_model.model."


def read_config(folder: Path) -> dict:
    """``adapter_config.json`` as a dict; ValueError with the reason when it is unusable."""
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"missing {CONFIG}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{CONFIG} is malformed: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{CONFIG} is not a JSON object")
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{CONFIG}: peft_type is {config.get('peft_type')!r}, only LORA adapters are supported")
    if not isinstance(config.get("r"), int) or config["r"] < 1:
        raise ValueError(f"{CONFIG}: r (the LoRA rank) must be a positive integer")
    return config


def weight_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the safetensors header; pickle weights are refused unread."""
    path = folder / WEIGHTS
    if not path.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ValueError(f"pickle weights ({', '.join(pickles)}) are refused; save them as {WEIGHTS}")
        raise ValueError(f"missing {WEIGHTS}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ValueError(f"{WEIGHTS} is not a valid safetensors file: {exc}") from exc


def _module_of(tensor_name: str) -> tuple[str, str]:
    """``base_model.model.X.lora_A.weight`` -> ("X", "lora_A")."""
    name = tensor_name.removeprefix(_PREFIX)
    for part in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"):
        marker = f".{part}"
        if marker in name:
            return name.split(marker)[0], part
    return name.rsplit(".", 1)[0], ""


def check_adapter(folder: Path, base: BaseShapes, fingerprint: str | None = None) -> tuple[list[str], list[str]]:
    """Problems that refuse the adapter, and warnings that do not, for the base model of ``base``
    (:func:`chatbot.models.shapes.shapes_of` a loaded model, or ``shapes_from_folder`` its files)."""
    problems: list[str] = []
    warnings: list[str] = []
    try:
        config = read_config(folder)
        manifest = read_manifest(folder)
        shapes = weight_shapes(folder)
    except ValueError as exc:
        return [str(exc)], warnings
    architecture = base.architecture
    trained_on = manifest.get("base_model", {})
    if isinstance(trained_on, dict):
        if trained_on.get("architecture") and trained_on["architecture"] != architecture:
            problems.append(
                f"trained for a {trained_on['architecture']} base model, but the base model is a {architecture}"
            )
        if fingerprint and trained_on.get("fingerprint") and trained_on["fingerprint"] != fingerprint:
            warnings.append(
                f"trained on base weights {trained_on['fingerprint']}, the loaded ones are {fingerprint} "
                "(same shapes, so it loads; answers may differ from its training)"
            )
    if not shapes:
        problems.append(f"{WEIGHTS} holds no tensors")
    rank = config["r"]
    missing: set[str] = set()
    for tensor, shape in shapes.items():
        module_name, part = _module_of(tensor)
        if module_name not in base.modules:
            missing.add(module_name)
            continue
        layer = base.layers.get(module_name)
        if layer is None or part not in ("lora_A", "lora_B"):
            continue
        out_features, in_features = layer
        expected = (rank, in_features) if part == "lora_A" else (out_features, rank)
        if tuple(shape) != expected:
            problems.append(f"{tensor} has shape {list(shape)}, the base model needs {list(expected)}")
            if len(problems) >= 3:
                break
    if missing:
        listed = ", ".join(sorted(missing)[:3]) + (" ..." if len(missing) > 3 else "")
        problems.append(f"targets {len(missing)} modules the base model does not have ({listed})")
    targets = config.get("target_modules")
    if isinstance(targets, list):
        names = {name.rsplit(".", 1)[-1] for name in base.modules}
        absent = sorted(set(targets) - names)
        if absent:
            problems.append(f"target_modules {absent} do not exist in the base model")
    return problems, warnings
