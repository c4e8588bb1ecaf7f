"""Linear layers with weights pre-packed in oneDNN's layout, for CPU inference (``prepack``, exact batches).

PyTorch's eager ``F.linear`` on bf16 CPU tensors re-lays out the weight on every call, which
makes a one-token decode step several times slower than the memory traffic requires. Packing
each weight once (what ``torch.compile``'s freezing pass does for the CPU) removes that cost
for decode and prefill alike and gives the same bf16 results bit for bit. The packed layer is
still a ``Linear``, so PEFT wraps it as usual.

**Rows that do not depend on their batch** (``min_rows=2``, used for ``exact_batches``). A
product's last bits can depend on how many rows it has, because the kernel is chosen by the
row count. Measured on an AMD EPYC with AVX-512 BF16 (no AMX), on the embedded model's own
weights and activations, grouping row counts 1-16 by the bits of row 0's result:

| kernel | bf16 | fp32 |
| --- | --- | --- |
| eager ``F.linear`` (MKL for fp32) | {1}, {2-16} | {1}, {2-3}, {4-16} |
| oneDNN, packed | {1}, {2-16} | {1}, {2-16} |

(With random activations bf16 shows a single group, which is why the Intel and AVX2 machines
never showed it.) So an exact layer is packed for oneDNN in either dtype and never runs fewer
than two rows: a lone row is computed beside a zero row, and every row then gets the same bits
alone or in a batch of up to 16.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from chatbot.models.linears import replace_linears

log = logging.getLogger(__name__)

EXACT_ROWS = 2  # the fewest rows an exact layer computes (row counts from 2 up share one kernel)
_FP32_BATCH_HINT = 8  # oneDNN lays an fp32 weight out for this many rows (the default max_batch)


class PackedLinear(torch.nn.Linear):
    """A ``Linear`` whose weight buffer is a oneDNN-packed tensor (CPU only, inference only).

    ``min_rows``: a product with fewer rows is padded with zero rows to that many (and the
    padding's results dropped), so that every row count takes the same kernel.
    """

    def __init__(self, linear: torch.nn.Linear, min_rows: int = 1) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.min_rows = min_rows
        weight = linear.weight.detach()
        hint = None if weight.dtype == torch.bfloat16 else _FP32_BATCH_HINT
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(weight, hint))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(self.weight.dtype)
        count = rows.shape[0]
        if count < self.min_rows:
            rows = F.pad(rows, (0, 0, 0, self.min_rows - count))
        out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return out[:count].reshape(*x.shape[:-1], self.out_features)


def packing_works(dtype: torch.dtype, min_rows: int = 1) -> bool:
    """Whether this PyTorch build packs ``dtype`` linear layers on this CPU.

    bf16 packing must also give the same results as the eager layer (it replaces it silently);
    fp32 packing changes last bits, so it is used only where every row count must agree (exact).
    """
    try:
        with torch.inference_mode():
            layer = torch.nn.Linear(64, 48).to(dtype)
            x = torch.randn(3, 64, dtype=dtype)
            packed = PackedLinear(layer, min_rows)
            if dtype == torch.bfloat16 and min_rows == 1:
                return bool(torch.equal(packed(x), layer(x)))
            return bool(torch.allclose(packed(x), layer(x), rtol=1e-3, atol=1e-3))
    except (RuntimeError, AttributeError, NotImplementedError) as exc:
        log.info("oneDNN weight packing unavailable: %s", exc)
        return False


def pack_linears(model: torch.nn.Module, min_rows: int = 1) -> int:
    """Replace every plain ``Linear`` of ``model`` by a :class:`PackedLinear`; returns how many."""
    return replace_linears(model, lambda linear: PackedLinear(linear, min_rows))
