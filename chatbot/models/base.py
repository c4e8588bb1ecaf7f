"""Load the base causal language model offline, converting GGUF files once to safetensors."""

from __future__ import annotations

import logging
import shutil
import sys
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from chatbot.models.device import resolve_device, resolve_dtype
from chatbot.models.embedded import ModelNotFoundError
from chatbot.models.shapes import BaseShapes, shapes_of
from chatbot.models.sources import (  # noqa: F401 - re-exported
    display_name,
    gguf_cache_folder,
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


_convert_lock = threading.Lock()


def convert_gguf(gguf: Path, cache_dir: Path) -> Path:
    """Dequantise a GGUF file into a plain safetensors model folder, once; return the folder.

    transformers marks GGUF-loaded models as quantised (not trainable, not savable), so the
    weights are copied into a model built from the same config and saved as safetensors.
    """
    target = gguf_cache_folder(gguf, cache_dir)
    with _convert_lock:
        if (target / "config.json").is_file():
            return target
        size_mb = gguf.stat().st_size / 1e6
        print(  # the one slow step of a first start: say what it is, once
            f"first start: de-quantising {gguf.name} ({size_mb:,.0f} MB) into a model folder, once "
            f"(the embedded model takes about 5 s here); later starts load {target}",
            file=sys.stderr,
            flush=True,
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantised.config
        for attribute in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(config, attribute):
                delattr(config, attribute)
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantised.state_dict())
        plain.generation_config.eos_token_id = tokenizer.eos_token_id
        plain.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # a crash before this line leaves no half-written cache
        return target


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
