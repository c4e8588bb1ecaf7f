"""Opt-in int8 weights for the chat model's linear layers (``quantize = "int8"``).

Decoding one token reads every weight once, so on a CPU it is bound by memory traffic: int8
weights (one scale per output row) halve it against bf16. Activations stay in the model's
dtype, so LoRA adapters load and route per request exactly as on the unquantised model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chatbot.models.linears import replace_linears

SMALL_BATCH = 32  # up to this many rows (decode steps) use the int8 kernel; longer prompts dequantise


class Int8Linear(torch.nn.Linear):
    """A ``Linear`` holding int8 weights and per-row scales (still a ``Linear`` for PEFT)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        quantised = (weight / scales[:, None]).round().clamp(-127, 127).to(torch.int8)
        self.weight = torch.nn.Parameter(quantised.contiguous(), requires_grad=False)
        self.register_buffer("scales", scales.to(linear.weight.dtype))
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] <= SMALL_BATCH and x.device.type == "cpu":
            out = torch.ops.aten._weight_int8pack_mm(rows.to(self.scales.dtype), self.weight, self.scales)
        else:
            out = F.linear(rows.to(self.scales.dtype), self.weight.to(self.scales.dtype) * self.scales[:, None])
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def quantize_int8(model: torch.nn.Module) -> int:
    """Replace the decoder's linear layers and the output head by :class:`Int8Linear`; returns how many."""
    return replace_linears(model, Int8Linear)
