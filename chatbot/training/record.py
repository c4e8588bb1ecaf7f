"""Write a trained adapter folder: PEFT weights, ``domain.toml``, ``training.json``, ``loss.png``.

The folder is assembled beside its final place and renamed into it, so the running server's
registry never sees a half-written adapter.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import tomli_w

from chatbot.adapters.check import WEIGHTS
from chatbot.adapters.domains import MANIFEST
from chatbot.models.base import BaseModel
from chatbot.training.trainer import TrainConfig, TrainResult

TRAINING_RECORD = "training.json"
LOSS_PLOT = "loss.png"


def plot_losses(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training and validation loss against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    train = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
    validation = [(entry["step"], entry["eval_loss"]) for entry in history if "eval_loss" in entry]
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=110)
    if train:
        axes.plot(*zip(*train, strict=True), label="training loss")
    if validation:
        axes.plot(*zip(*validation, strict=True), marker="o", label="validation loss")
    axes.set(xlabel="step", ylabel="loss (assistant tokens)", title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _halve_weights(path: Path) -> None:
    """Store LoRA weights in bfloat16: half the size, and PEFT casts them back to the model's dtype."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {name: tensor.to(torch.bfloat16) for name, tensor in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})


def write_adapter(
    folder: Path,
    result: TrainResult,
    base: BaseModel,
    *,
    display_name: str,
    description: str,
    system_prompt: str,
    config: TrainConfig,
    data: dict[str, Any],
    knowledge_scope: dict[str, Any] | None = None,
    generation: dict[str, Any] | None = None,
) -> Path:
    """Save the adapter and its record into ``folder`` (replacing it); return the folder."""
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    result.model.save_pretrained(staging, safe_serialization=True)
    (staging / "README.md").unlink(missing_ok=True)  # PEFT's empty model card; domain.toml says it all
    _halve_weights(staging / WEIGHTS)
    metrics = result.metrics()
    manifest: dict[str, Any] = {
        "display_name": display_name,
        "description": description,
        "system_prompt": system_prompt,
        "base_model": {
            "name": base.name,
            "architecture": (base.model.config.architectures or [type(base.model).__name__])[0],
            "fingerprint": base.fingerprint,
        },
        "generation": generation or {},
        "training": {
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "recipe": data.get("recipe", "chat"),
            "data": data.get("source", ""),
            "seed": config.seed,
            "validation_perplexity": metrics["validation_perplexity"],
            "base_validation_perplexity": metrics["base_validation_perplexity"],
            "record": TRAINING_RECORD,
        },
    }
    if knowledge_scope:
        manifest["knowledge_scope"] = knowledge_scope
    (staging / MANIFEST).write_text(tomli_w.dumps(manifest), encoding="utf-8")
    record = {"config": config.__dict__, "data": data, "metrics": metrics, "history": result.history}
    (staging / TRAINING_RECORD).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    plot_losses(result.history, staging / LOSS_PLOT, f"{display_name} adapter")
    previous = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(previous, ignore_errors=True)
    if folder.exists():
        folder.rename(previous)
    staging.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)
    return folder
