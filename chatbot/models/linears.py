"""Swap a model's plain linear layers for an inference-only variant (packed or int8)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def replace_linears(model: torch.nn.Module, make: Callable[[torch.nn.Linear], torch.nn.Linear]) -> int:
    """Replace every plain ``Linear`` of ``model`` by ``make(layer)``; returns how many.

    An output head tied to the input embeddings gets its own copy; the embeddings stay as they are.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, name, make(child))
                replaced += 1
    model.config.tie_word_embeddings = False  # so nothing re-ties the head to the embeddings
    return replaced


def block_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """Every linear layer inside the decoder's blocks, by its full module name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layers." in name
    }


def block_linear_names(model: torch.nn.Module) -> list[str]:
    """The short names of the linear layers inside the decoder's blocks (LoRA's natural targets).

    ``q_proj`` ... ``down_proj`` on Llama-shaped models; ``qkv_proj`` and ``gate_up_proj`` on Phi-3.
    """
    return sorted({name.rsplit(".", 1)[-1] for name in block_linears(model)})
