"""Linear layers with weights pre-packed in oneDNN's layout, for CPU inference (``prepack``).

PyTorch's eager ``F.linear`` on bf16 CPU tensors re-lays out the weight on every call, which
makes a one-token decode step several times slower than the memory traffic requires. Packing
each weight once (what ``torch.compile``'s freezing pass does for the CPU) removes that cost
for decode and prefill alike, gives the same bf16 results bit for bit, and keeps each row's
result independent of the batch. Used for bf16 only: fp32 products run on MKL unpacked, which is
already fast, and packing them would change their last bits. The packed layer is still a
``Linear``, so PEFT wraps it as usual.
"""

from __future__ import annotations

import logging

import torch

from chatbot.models.linears import replace_linears

log = logging.getLogger(__name__)


class PackedLinear(torch.nn.Linear):
    """A ``Linear`` whose weight buffer is a oneDNN-packed tensor (CPU only, inference only)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach()))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(self.weight.dtype)
        out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


def packing_works(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build packs ``dtype`` linear layers on this CPU with unchanged results."""
    try:
        with torch.inference_mode():
            layer = torch.nn.Linear(64, 48).to(dtype)
            x = torch.randn(3, 64, dtype=dtype)
            return bool(torch.equal(PackedLinear(layer)(x), layer(x)))
    except (RuntimeError, AttributeError, NotImplementedError) as exc:
        log.info("oneDNN weight packing unavailable: %s", exc)
        return False


def pack_linears(model: torch.nn.Module) -> int:
    """Replace every plain ``Linear`` of ``model`` by a :class:`PackedLinear`; returns how many."""
    return replace_linears(model, PackedLinear)
