"""A GGUF file as a plain safetensors model folder, written one tensor at a time.

transformers can load a GGUF file itself, but it de-quantises every tensor into one state dict
and the model it builds is marked quantised (not trainable, not savable), so the app used to copy
it into a second model: two full copies in memory, at fp32 (an 8B Q4_K_M file of 4.9 GB needed
~64 GB). Here the file is memory-mapped and each tensor is de-quantised, renamed by transformers'
own GGUF name map and tensor processors, and appended to a safetensors shard of at most
``SHARD_BYTES``: the peak is one shard and one tensor, whatever the model's size.

Models up to ``EXACT_PARAMETERS`` keep fp32 weights (the embedded model's values, bit for bit);
larger ones are written in bfloat16, which every engine reads and which halves memory and disk.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chatbot.models.sources import gguf_cache_folder

SHARD_BYTES = 1 << 30
EXACT_PARAMETERS = 1_000_000_000  # at most this many weights stay fp32 (4 GB); above: bfloat16

_convert_lock = threading.Lock()


def convert_gguf(gguf: Path, cache_dir: Path) -> Path:
    """The model folder of ``gguf`` in the cache, converted on first use; later calls return it."""
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
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        write_model_folder(gguf, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # a crash before this line leaves no half-written cache
        return target


def write_model_folder(gguf: Path, folder: Path, shard_bytes: int = SHARD_BYTES) -> torch.dtype:
    """Write config, tokenizer and weights of ``gguf`` into ``folder``; returns the weights' dtype."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    parameters = sum(p.numel() for p in skeleton.parameters())
    dtype = torch.float32 if parameters <= EXACT_PARAMETERS else torch.bfloat16
    weight_map = _write_weights(gguf, skeleton, folder, dtype, shard_bytes)
    missing = set(skeleton.state_dict()) - set(weight_map) - _tied(skeleton)
    if missing:
        raise ValueError(f"{gguf.name}: no tensor for {', '.join(sorted(missing)[:3])}")
    for attribute in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    config.dtype = dtype
    config.architectures = [type(skeleton).__name__]
    config.save_pretrained(folder)
    skeleton.generation_config.eos_token_id = tokenizer.eos_token_id
    skeleton.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    skeleton.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return dtype


def _tied(model: torch.nn.Module) -> set[str]:
    """State-dict names that share their tensor with another (a tied output layer)."""
    seen: dict[int, str] = {}
    tied = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            tied.add(name)
        seen.setdefault(id(tensor), name)
    return tied


def _write_weights(
    gguf: Path, skeleton: torch.nn.Module, folder: Path, dtype: torch.dtype, shard_bytes: int
) -> dict[str, str]:
    from gguf import GGUFReader, dequantize
    from safetensors.torch import save_file
    from tqdm.auto import tqdm
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        load_gguf_checkpoint,
        read_field,
    )

    reader = GGUFReader(gguf)  # memory-mapped: tensors are read as they are de-quantised
    parsed: dict[str, Any] = load_gguf_checkpoint(str(gguf), return_tensors=False)
    architecture = read_field(reader, "general.architecture")[0]
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    names = get_gguf_hf_weights_map(skeleton, processor)
    known = set(skeleton.state_dict())
    shard: dict[str, torch.Tensor] = {}  # the tensors not yet written
    files: list[str] = []
    weight_map: dict[str, str] = {}
    pending = total = 0

    def flush() -> None:
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        files.append(name)
        shard.clear()

    for tensor in tqdm(reader.tensors, desc=f"de-quantising {gguf.name}", unit="tensor"):
        extra: dict[str, Any] = {"config": parsed["config"], "tensors": {}}
        result = processor.process(
            weights=dequantize(tensor.data, tensor.tensor_type),
            name=tensor.name,
            tensor_key_mapping=names,
            parsed_parameters=extra,
        )
        placed = dict(extra["tensors"])  # a processor may place tensors itself (split experts)
        if result.name in names and result.weights is not None:
            placed[names[result.name]] = torch.from_numpy(np.array(result.weights))  # a copy: the map is read-only
        for key, value in placed.items():
            if key not in known:
                continue
            value = value.to(dtype).contiguous()
            shard[key] = value
            pending += value.nbytes
            total += value.nbytes
            if pending >= shard_bytes:
                flush()
                pending = 0
    if shard:
        flush()
    if len(files) == 1:  # one shard: the plain single-file layout
        (folder / files[0]).rename(folder / "model.safetensors")
        weight_map = dict.fromkeys(weight_map, "model.safetensors")
    else:
        count = len(files)
        renamed = {name: name.replace(".safetensors", f"-of-{count:05d}.safetensors") for name in files}
        for old, new in renamed.items():
            (folder / old).rename(folder / new)
        weight_map = {key: renamed[name] for key, name in weight_map.items()}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return weight_map
