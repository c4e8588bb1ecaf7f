"""A PEFT LoRA adapter as an ``.onnx_adapter`` file of the converted model's LoRA inputs, once per content."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chatbot.digest import files_digest
from chatbot.engine.onnx.convert import ADAPTER_SUFFIX, LORA_PARAM, ConversionError, lora_inputs
from chatbot.files import replacing

_PEFT_TENSOR = re.compile(r"layers\.(\d+)\..*\.([A-Za-z0-9_]+)\.(lora_[AB])\.weight$")


def _scaling(config: dict) -> float:
    rank, alpha = config.get("r"), config.get("lora_alpha", config.get("r"))
    if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, int | float):
        raise ConversionError("adapter_config.json needs a positive whole r and a numeric lora_alpha")
    return float(alpha) / (rank**0.5 if config.get("use_rslora") else rank)


def _refusals(config: dict) -> list[str]:
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type {config.get('peft_type')!r} (only LORA converts)")
    if config.get("use_dora"):
        problems.append("DoRA (use_dora) has no ONNX form here")
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config['bias']!r} (trained biases are not LoRA inputs)")
    if config.get("modules_to_save"):
        problems.append("modules_to_save (full copies of modules) cannot be an adapter file")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        problems.append("rank_pattern/alpha_pattern (per-module ranks) are not supported by the ONNX engine")
    return problems


def export_adapter(folder: Path, model_dir: Path, name: str) -> Path:
    """The ``.onnx_adapter`` file of the PEFT adapter in ``folder`` for the model in ``model_dir``.

    Written once per content of the folder (a changed folder gets a new file; older ones of the
    same name are removed). Raises :class:`ConversionError` naming what cannot be converted.
    """
    sources = [folder / "adapter_config.json", folder / "adapter_model.safetensors"]
    if not all(path.is_file() for path in sources):
        raise ConversionError("needs adapter_config.json and adapter_model.safetensors")
    store = model_dir / "adapters"
    target = store / f"{name}-{files_digest(sources, model_dir.name)[:12]}{ADAPTER_SUFFIX}"
    if target.is_file():
        return target
    config = json.loads(sources[0].read_text())
    problems = _refusals(config)
    if problems:
        raise ConversionError("cannot convert for the ONNX engine: " + "; ".join(problems))
    params = _adapter_params(sources[1], lora_inputs(model_dir / "model.onnx"), _scaling(config))
    import onnxruntime

    store.mkdir(exist_ok=True)
    adapter = onnxruntime.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters({key: onnxruntime.OrtValue.ortvalue_from_numpy(value) for key, value in params.items()})
    with replacing(target) as partial:
        adapter.export_adapter(str(partial))
    for old in store.glob(f"{name}-*{ADAPTER_SUFFIX}"):
        if old != target:
            old.unlink(missing_ok=True)
    return target


# Fused projections (Phi-3) that the builder splits into one LoRA branch per part, in output order.
_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _placed(
    layer: str, module: str, part: str, value, by_key: dict, inputs: dict[str, tuple[int, int]]
) -> list[tuple[str, object]] | None:
    """(model input, array) pairs for one PEFT tensor (A: in x r, B: r x out); None if none fits.

    A fused module's A goes to each part's branch; its B is cut along the output axis by the
    parts' widths, so each branch computes its slice of ``x @ A @ B``.
    """
    name = by_key.get((layer, module, part))
    if name is not None:
        return [(name, value)]
    parts = [by_key.get((layer, piece, part)) for piece in _FUSED.get(module, ())]
    if not parts or None in parts:
        return None
    if part == "lora_A":
        return [(name, value) for name in parts]
    widths = [inputs[name][1] for name in parts]
    if sum(widths) != value.shape[1]:
        raise ConversionError(f"layer {layer} {module}: B has {value.shape[1]} outputs, the model's parts {widths}")
    edges = [sum(widths[:index]) for index in range(len(widths) + 1)]
    return [(name, value[:, start:end]) for name, start, end in zip(parts, edges, edges[1:], strict=False)]


def _adapter_params(weights: Path, inputs: dict[str, tuple[int, int]], scaling: float) -> dict:
    """PEFT's A (r x in) and B (out x r) as the model's inputs: transposed, B times the scaling."""
    import numpy as np
    from safetensors import safe_open

    by_key = {}
    for name in inputs:
        match = LORA_PARAM.search(name)
        if match:
            by_key[match.groups()] = name
    params: dict[str, np.ndarray] = {}
    unplaced: list[str] = []
    with safe_open(str(weights), framework="np") as handle:
        for tensor in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
            match = _PEFT_TENSOR.search(tensor)
            value = np.asarray(handle.get_tensor(tensor), dtype=np.float32).T if match else None
            placed = _placed(*match.groups(), value, by_key, inputs) if match else None
            if placed is None:
                unplaced.append(tensor)
                continue
            part = match.group(3)
            for name, piece in placed:
                rows, columns = inputs[name]
                fixed = rows if part == "lora_A" else columns
                if piece.shape[0 if part == "lora_A" else 1] != fixed:
                    raise ConversionError(f"{tensor} has shape {list(value.shape[::-1])}, which the model cannot take")
                piece = piece * np.float32(scaling) if part == "lora_B" else piece
                params[name] = np.ascontiguousarray(piece)
    if unplaced:
        shown = ", ".join(unplaced[:3]) + (" ..." if len(unplaced) > 3 else "")
        raise ConversionError(f"{len(unplaced)} tensors have no LoRA input in the converted model ({shown})")
    if not params:
        raise ConversionError("the adapter holds no LoRA weights")
    return params
