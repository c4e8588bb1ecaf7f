"""Convert the base model for onnxruntime, once, cached in the data dir (adapters: ``adapter_export``).

The base model goes through onnxruntime-genai's own model builder with a stand-in adapter that
targets every linear layer of the decoder, so the builder emits a LoRA branch (``x @ A @ B``)
beside each of them. Those branches' weights then become graph inputs with a leading row axis
(``[rows, in, rank]``, ``[rows, rank, out]``), so one run serves rows on different adapters
(:mod:`chatbot.engine.onnx.runtime`); an adapter is a file of those inputs
(``onnxruntime.AdapterFormat``), of any rank. The logits are computed for the last position
only (a prompt's other positions are never sampled). The builder always writes fp32 (it streams
tensors to disk); int4 and int8 come from :mod:`chatbot.engine.onnx.quantize`, one weight at a
time, with the same bytes as the builder's own quantisation and a fraction of its memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from chatbot.engine.onnx.quantize import quantize_matmuls

log = logging.getLogger(__name__)

CONVERT_VERSION = 5  # bump when the graph surgery below changes: old caches are rebuilt
PLAIN_FILE = "model_plain.onnx"  # the same graph without LoRA branches, for batches of base rows
PRECISIONS = ("int4", "int8", "fp32")
# From this size an int4/int8 model's embedding table is stored at int8 too (quantize.py): a 0.5B
# Qwen's is 0.54 GB at fp32; the embedded model's (0.11 GB) stays as the builder writes it.
EMBEDDINGS_INT8_MIN_BYTES = 256 * 2**20
ADAPTER_SUFFIX = ".onnx_adapter"
_RANK = "lora_rank"
_ROWS = "lora_rows"
_LORA_NODE = re.compile(r"/lora_[AB]/")
LORA_PARAM = re.compile(r"layers\.(\d+)\..*?([A-Za-z0-9_]+)\.(lora_[AB])\.MatMul\.weight$")

Progress = Callable[[str], None]


class ConversionError(RuntimeError):
    """The model or an adapter cannot be converted; the message says why."""


def _say(progress: Progress | None, message: str) -> None:
    log.info("onnx: %s", message)
    if progress is not None:
        progress(message)


def model_key(fingerprint: str, precision: str) -> str:
    """Cache key of a converted base model: its weights, the precision, this converter and the builder."""
    import onnxruntime_genai

    text = f"{fingerprint}:{precision}:{CONVERT_VERSION}:{onnxruntime_genai.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def linear_targets(model: object) -> dict[str, tuple[int, int]]:
    """Every linear layer of the decoder's blocks: full module name -> (in_features, out_features)."""
    from chatbot.models.linears import block_linears

    return {name: (module.in_features, module.out_features) for name, module in block_linears(model).items()}


def _stand_in_adapter(folder: Path, base_folder: Path, targets: dict[str, tuple[int, int]]) -> None:
    """A rank-1 adapter on every target, so the builder emits a LoRA branch for each (values unused)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base_folder),
        "r": 1,
        "lora_alpha": 1,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in targets}),
        "inference_mode": True,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    tensors = {}
    for name, (fan_in, fan_out) in targets.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = torch.full((1, fan_in), 0.01)
        tensors[f"base_model.model.{name}.lora_B.weight"] = torch.full((fan_out, 1), 0.01)
    save_file(tensors, str(folder / "adapter_model.safetensors"))


def _run_builder(base_folder: Path, adapter: Path, output: Path, precision: str, work: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "chatbot.engine.onnx.builder",
        "-i",
        str(base_folder),
        "-o",
        str(output),
        "-p",
        precision,
        "-e",
        "cpu",
        "-c",
        str(work / "hf-cache"),
        "--extra_options",
        f"adapter_path={adapter}",
    ]
    log_file = work / "builder.log"
    with log_file.open("w") as sink:
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0 or not (output / "model.onnx").is_file():
        tail = log_file.read_text(errors="replace")[-1500:]
        raise ConversionError(f"the onnxruntime-genai model builder failed (exit {done.returncode}):\n{tail}")


def lora_inputs(model_path: Path) -> dict[str, tuple[int, int]]:
    """The converted model's LoRA inputs: name -> (rows, columns) of one row's A or B, the rank as -1."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    shapes = {}
    for value in graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        if LORA_PARAM.search(value.name) and len(dims) == 3:
            shapes[value.name] = (dims[1], dims[2])
    return shapes


def _free_lora_weights(model_path: Path) -> int:
    """Turn each LoRA branch's weight into a graph input with a row axis; returns how many.

    The builder quantises the branches like every MatMul (MatMulNBits at int4/int8); a branch
    becomes a plain float MatMul again, since its weight now arrives at run time. The language
    model head then reads the last position only.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    dropped: set[str] = set()
    inputs, nodes = [], []
    for node in graph.node:
        if not _LORA_NODE.search(node.name) or node.op_type not in ("MatMul", "MatMulNBits"):
            nodes.append(node)
            continue
        part = "lora_A" if "/lora_A/" in node.name else "lora_B"
        if node.op_type == "MatMulNBits":
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            rows, columns = int(attributes["K"]), int(attributes["N"])
            dropped.update(name for name in node.input[1:] if name)
        else:
            weight = initializers.get(node.input[1])
            if weight is None:
                raise ConversionError(f"LoRA node {node.name} has no weight initializer")
            rows, columns = (int(d) for d in weight.dims)
            dropped.add(node.input[1])
        # the quantiser renames MatMul nodes to MatMul_Q4 / MatMul_Q8
        name = re.sub(r"_Q\d+$", "", node.name).strip("/").replace("/", ".") + ".weight"
        dims: list[int | str] = [_ROWS, rows, _RANK] if part == "lora_A" else [_ROWS, _RANK, columns]
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        nodes.append(helper.make_node("MatMul", [node.input[0], name], list(node.output), name=node.name))
    if not inputs:
        raise ConversionError("the builder made no LoRA branches for this model")
    head = next((node for node in nodes if node.output and node.output[0] == "logits"), None)
    if head is None:
        raise ConversionError("the builder's model has no 'logits' output")
    last = [
        helper.make_tensor(name, TensorProto.INT64, [1], [value])
        for name, value in (("last_start", -1), ("last_end", 2**62), ("last_axis", 1))
    ]
    nodes.insert(
        nodes.index(head),
        helper.make_node("Slice", [head.input[0], "last_start", "last_end", "last_axis"], ["last_hidden"]),
    )
    head.input[0] = "last_hidden"
    kept = [init for init in graph.initializer if init.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept + last)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.extend(inputs)
    del graph.value_info[:]  # shapes the builder inferred before the change; onnxruntime infers again
    # The external weights file is left as written; the orphaned branch weights in it are tiny.
    onnx.save(model, str(model_path))
    return len(inputs)


def _without_lora(model_path: Path, target: Path) -> None:
    """Write ``model_path``'s graph without its LoRA branches to ``target`` (same weights file).

    A branch adds ``x @ A @ B``; for a row on the base model A and B are zeros, so the sum is the
    base projection unchanged, bit for bit: this graph gives base rows the same logits for less work.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    renamed: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if _LORA_NODE.search(node.name):
            continue
        if node.op_type == "Add" and "/lora/" in node.name:
            renamed[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    for node in kept:
        for index, name in enumerate(node.input):
            node.input[index] = renamed.get(name, name)
    lora = {value.name for value in graph.input if LORA_PARAM.search(value.name)}
    inputs = [value for value in graph.input if value.name not in lora]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.input[:]
    graph.input.extend(inputs)
    onnx.save(model, str(target))  # initializers stay in the shared weights file


def convert_model(
    base_folder: Path,
    model: object,
    fingerprint: str,
    cache_dir: Path,
    precision: str = "int8",
    progress: Progress | None = None,
) -> Path:
    """The converted model folder for ``base_folder`` at ``precision``; built once, then reused.

    ``model`` is the transformers model of ``base_folder`` (weights not needed, only its layers).
    A crash mid-way leaves only a ``.partial`` folder, removed on the next try.
    """
    if precision not in PRECISIONS:
        raise ConversionError(f"onnx precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    target = cache_dir / "onnx" / f"{base_folder.name}-{precision}-{model_key(fingerprint, precision)}"
    if (target / "genai_config.json").is_file():
        return target
    targets = linear_targets(model)
    if not targets:
        raise ConversionError("the base model has no linear layers under '.layers.' to put LoRA branches on")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    work = staging / "_work"
    _say(progress, f"converting {base_folder.name} to ONNX ({precision}), once (about a minute)")
    _stand_in_adapter(work / "stand-in", base_folder, targets)
    _say(progress, "running the onnxruntime-genai model builder")
    # The builder writes fp32 one tensor at a time; its own int4/int8 pass holds the whole fp32
    # graph in memory (5.6 GB at 0.5B), so the weights are quantised here instead (``quantize``).
    _run_builder(base_folder, work / "stand-in", staging, "fp32", work)
    _say(progress, "making the LoRA weights inputs")
    count = _free_lora_weights(staging / "model.onnx")
    if precision != "fp32":
        _say(progress, f"quantising the weights to {precision}, one at a time")
        quantized = work / "quantized"
        quantized.mkdir()
        bits = int(precision[3:])
        quantize_matmuls(staging / "model.onnx", quantized / "model.onnx", bits, _LORA_NODE, EMBEDDINGS_INT8_MIN_BYTES)
        for name in ("model.onnx", "model.onnx.data"):
            (quantized / name).replace(staging / name)
    _without_lora(staging / "model.onnx", staging / PLAIN_FILE)
    _say(progress, f"{count} LoRA inputs; done")
    shutil.rmtree(work)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
