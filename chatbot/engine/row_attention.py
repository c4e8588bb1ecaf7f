"""Attention that gives every row of a padded decode batch exactly what it gets alone.

In bf16, PyTorch's CPU attention kernel accumulates keys in blocks counted from the first
(padding) position, so a left-padded row's output differs in the last bits from the same row
decoded alone, and greedy answers drift apart. For one-token decode steps this attention runs
each row over its own unpadded keys; everything else is transformers' SDPA attention.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

ROW_ATTENTION = "sdpa_rows"


def row_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """SDPA, but per row without its padding when several one-token queries share a padded cache."""
    if attention_mask is None or query.shape[0] == 1 or query.shape[2] != 1 or attention_mask.dtype != torch.bool:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    starts = attention_mask[:, 0, -1].int().argmax(-1).tolist()  # first real key of each row
    outputs = [
        sdpa_attention_forward(
            module, query[row : row + 1], key[row : row + 1, :, start:], value[row : row + 1, :, start:], None, **kwargs
        )[0]
        for row, start in enumerate(starts)
    ]
    return torch.cat(outputs), None


def use_row_attention(model: torch.nn.Module) -> None:
    """Switch ``model`` (a transformers model using SDPA) to :func:`row_attention_forward`."""
    AttentionInterface.register(ROW_ATTENTION, row_attention_forward)
    AttentionMaskInterface.register(ROW_ATTENTION, sdpa_mask)
    model.set_attn_implementation(ROW_ATTENTION)
