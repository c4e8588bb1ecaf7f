"""Load the base causal language model offline (a GGUF file is converted once: ``models.gguf``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from chatbot.models.device import resolve_device, resolve_dtype
from chatbot.models.embedded import ModelNotFoundError
from chatbot.models.gguf import convert_gguf
from chatbot.models.shapes import BaseShapes, shapes_of
from chatbot.models.sources import (  # noqa: F401 - re-exported
    display_name,
    resolve_model_source,
    weights_fingerprint,
)

log = logging.getLogger(__name__)


@dataclass
class BaseModel:
    """The loaded base model with what the rest of the app needs to know about it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    folder: Path
    device: torch.device
    dtype: torch.dtype

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the weights files, so adapters can name the exact base they fit."""
        return weights_fingerprint(self.folder)

    @cached_property
    def shapes(self) -> BaseShapes:
        """Its architecture and layer shapes, which an adapter must fit."""
        return shapes_of(self.model)


def load_base_model(
    base_model: str,
    cache_dir: Path,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str = "none",
    weights: bool = True,
) -> BaseModel:
    """Load the configured base model (embedded, folder or GGUF) for inference.

    ``quantize="int8"`` stores the linear layers' weights as int8 (CPU only; see ``models.quantize``).
    ``weights=False``: the model's layers without their weights (on torch's meta device), for an
    engine that runs converted weights and needs only the shapes, the tokenizer and the config.
    """
    source = resolve_model_source(base_model, cache_dir)
    folder = convert_gguf(source, cache_dir) if source.suffix == ".gguf" else source
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.chat_template is None:
        raise ModelNotFoundError(f"base_model: {folder} has no chat template; use an instruct model")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if quantize == "int8" and torch_device.type != "cpu":
        raise ValueError("quantize = 'int8' is for CPUs; on a GPU use dtype float16 or bfloat16 instead")
    name = display_name(base_model, source)
    if not weights:
        return BaseModel(_skeleton(folder), tokenizer, name, folder, torch_device, torch_dtype)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).to(torch_device)
    model.eval()
    if quantize == "int8":
        from chatbot.models.quantize import quantize_int8

        quantize_int8(model)

    return BaseModel(model, tokenizer, name, folder, torch_device, torch_dtype)


def _skeleton(folder: Path) -> PreTrainedModel:
    """The model of ``folder`` with its layers on the meta device (no memory for weights)."""
    from transformers import AutoConfig, GenerationConfig

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.eval()
