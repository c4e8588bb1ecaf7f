"""Tiny random-weight models of the architectures users bring, built from configs (nothing downloaded).

Each has two blocks, grouped-query attention and the embedded model's tokenizer (its vocabulary
and chat template), and keeps its architecture's particulars: Qwen2's biases, Qwen3's and Gemma 3's
query/key norms, Gemma 3's sliding and global layers with their own rotary settings (a window of
4 tokens so a short prompt crosses it), Phi-3's fused projections, Mistral's sliding window.
"""

from __future__ import annotations

from pathlib import Path

import torch

ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3", "phi3", "mistral")


def _config(architecture: str, tokenizer) -> object:
    import transformers

    common = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if architecture == "llama":
        return transformers.LlamaConfig(**common, tie_word_embeddings=True)
    if architecture == "qwen2":
        return transformers.Qwen2Config(**common)
    if architecture == "qwen3":
        return transformers.Qwen3Config(**common, head_dim=16)
    if architecture == "gemma3":
        rope = {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        }
        layers = ["sliding_attention", "full_attention"]
        return transformers.Gemma3TextConfig(
            **common, head_dim=16, sliding_window=4, layer_types=layers, rope_parameters=rope
        )
    if architecture == "phi3":
        return transformers.Phi3Config(**common)
    if architecture == "mistral":
        return transformers.MistralConfig(**common, sliding_window=4096)
    raise ValueError(architecture)


def tiny_model(architecture: str, folder: Path, tokenizer, seed: int = 0) -> Path:
    """Write a tiny random ``architecture`` model with ``tokenizer`` into ``folder``; return it."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(architecture, tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
