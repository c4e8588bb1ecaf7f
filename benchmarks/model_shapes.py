"""Random-weight models of public instruct models' shapes, built locally (nothing downloaded).

    .venv/bin/python benchmarks/model_shapes.py qwen2.5-1.5b [--out DIR] [--adapters]

Speed and memory do not depend on the weights' values, so a model with a public config's shapes,
its vocabulary size included, and random bf16 weights measures what the real one would. The
tokenizer is the embedded model's (its ids are a subset of every vocabulary here; the chat
template is SmolLM2's; the output rows of ids past it are 0, so generation never picks one).
The shapes are copied from each model's published config.json.
``--adapters`` also writes two random rank-8 LoRA adapters on every linear layer of the blocks
(the app's training recipe) into ``FOLDER-adapters/``, for the mixed-adapter loads of run.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".chatbot" / "bench-models"

_QWEN25 = {  # what Qwen2.5's sizes share
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "num_key_value_heads": 2,
}
SHAPES: dict[str, dict] = {
    "qwen2.5-0.5b": {
        **_QWEN25,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
    },
    "qwen2.5-1.5b": {
        **_QWEN25,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
    },
    "llama-3.2-3b": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
    },
}


def build(shape: str, out: Path | None = None, seed: int = 0) -> Path:
    """The folder of a random-weight bf16 model of ``shape``; built once, then reused."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from chatbot.models.base import load_base_model

    folder = out or WORK / shape
    if (folder / "config.json").is_file():
        return folder
    tokenizer = load_base_model("embedded", REPO / ".chatbot" / "cache", "cpu", "float32", weights=False).tokenizer
    values = dict(SHAPES[shape])
    model_type = values.pop("model_type")
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = AutoConfig.for_model(model_type, **values, **ids, pad_token_id=tokenizer.pad_token_id)
    started = time.perf_counter()
    torch.manual_seed(seed)
    with torch.no_grad():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        for parameter in model.parameters():  # small values, so activations stay in range
            parameter.normal_(0.0, 0.02) if parameter.dim() > 1 else parameter.fill_(1.0)
        # ids past the tokenizer's vocabulary decode to nothing: their logits are 0, below the best
        # of the others, so generation stays on text, as a real model's would
        model.get_output_embeddings().weight[len(tokenizer) :] = 0.0
    partial = folder.with_name(folder.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(folder)
    count = sum(p.numel() for p in model.parameters())
    print(f"{shape}: {count / 1e9:.2f}B parameters, bf16, {time.perf_counter() - started:.0f} s -> {folder}")
    return folder


ADAPTERS = ("alpha", "beta")


def adapters(folder: Path, rank: int = 8, seed: int = 0) -> Path:
    """Two random LoRA adapters for the model in ``folder`` (written once, then reused), in the
    app's adapter layout; only the shapes are read, never the weights."""
    import tomli_w
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    from chatbot.adapters.check import WEIGHTS
    from chatbot.adapters.domains import MANIFEST
    from chatbot.models.base import load_base_model
    from chatbot.models.linears import block_linear_names, block_linears

    target = folder.with_name(folder.name + "-adapters")
    if all((target / name / WEIGHTS).is_file() for name in ADAPTERS):
        return target
    skeleton = load_base_model(str(folder), REPO / ".chatbot" / "cache", "cpu", "float32", weights=False).model
    generator = torch.Generator().manual_seed(seed)
    for name in ADAPTERS:
        tensors = {}
        for module, layer in block_linears(skeleton).items():
            prefix = f"base_model.model.{module}"
            shapes = {"lora_A": (rank, layer.in_features), "lora_B": (layer.out_features, rank)}
            for part, shape in shapes.items():
                values = torch.randn(shape, generator=generator) * 0.02
                tensors[f"{prefix}.{part}.weight"] = values.to(torch.bfloat16)
        partial = target / f".{name}.partial"
        partial.mkdir(parents=True, exist_ok=True)
        config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=block_linear_names(skeleton))
        config.base_model_name_or_path = str(folder)
        config.task_type = "CAUSAL_LM"
        config.save_pretrained(partial)
        save_file(tensors, partial / WEIGHTS, metadata={"format": "pt"})
        manifest = {
            "display_name": name.title(),
            "description": f"Random rank-{rank} LoRA weights for speed figures (benchmarks/model_shapes.py).",
            "system_prompt": "You answer from the context blocks and cite them.",
            "base_model": {"name": folder.name, "architecture": skeleton.config.architectures[0]},
        }
        (partial / MANIFEST).write_text(tomli_w.dumps(manifest), encoding="utf-8")
        partial.rename(target / name)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("--out", type=Path, help=f"folder to write (default {WORK}/SHAPE)")
    parser.add_argument("--adapters", action="store_true", help="also write two random LoRA adapters")
    args = parser.parse_args()
    folder = build(args.shape, args.out)
    print(folder)
    if args.adapters:
        print(adapters(folder))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
