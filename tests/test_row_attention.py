"""Row attention: a left-padded decode batch gives each row exactly what it gets alone."""

from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from chatbot.engine.row_attention import row_attention_forward


class _Attention(torch.nn.Module):
    is_causal = True
    num_key_value_groups = 3  # grouped-query attention, as SmolLM2 (9 query heads, 3 key/value heads)


def _padded(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys/values of rows of different lengths, left-padded with noise, and the boolean mask."""
    length = max(key.shape[1] for key, _ in rows)
    keys, values, masks = [], [], []
    for key, value in rows:
        pad = length - key.shape[1]
        noise = torch.randn(key.shape[0], pad, key.shape[2], dtype=key.dtype)
        keys.append(torch.cat([noise, key], 1))
        values.append(torch.cat([noise, value], 1))
        masks.append(torch.cat([torch.zeros(pad, dtype=torch.bool), torch.ones(key.shape[1], dtype=torch.bool)]))
    mask = torch.stack(masks)[:, None, None, :]  # [rows, 1, query, keys]
    return torch.stack(keys), torch.stack(values), mask


def test_each_row_of_a_padded_decode_step_equals_the_row_alone_bit_for_bit():
    torch.manual_seed(0)
    module, dtype = _Attention(), torch.bfloat16
    lengths = [37, 5, 64]
    rows = [(torch.randn(3, n, 64, dtype=dtype), torch.randn(3, n, 64, dtype=dtype)) for n in lengths]
    query = torch.randn(len(rows), 9, 1, 64, dtype=dtype)
    key, value, mask = _padded(rows)
    batched, _ = row_attention_forward(module, query, key, value, mask)
    for index, (row_key, row_value) in enumerate(rows):
        alone, _ = sdpa_attention_forward(module, query[index : index + 1], row_key[None], row_value[None], None)
        assert torch.equal(batched[index : index + 1], alone)
    shorter = mask.clone()
    shorter[0, ..., -lengths[0]] = False  # row 0 loses its first key: its output must change, the others' not
    moved, _ = row_attention_forward(module, query, key, value, shorter)
    assert not torch.equal(moved[0], batched[0]) and torch.equal(moved[1:], batched[1:])


def test_prefill_single_rows_and_float_masks_take_the_library_path_unchanged():
    torch.manual_seed(1)
    module = _Attention()
    key, value = torch.randn(2, 3, 20, 64), torch.randn(2, 3, 20, 64)
    prefill_query = torch.randn(2, 9, 4, 64)
    causal = torch.ones(2, 1, 4, 20, dtype=torch.bool).tril(16)
    for query, mask in (
        (prefill_query, causal),  # several query positions: a prompt being read
        (torch.randn(1, 9, 1, 64), torch.ones(1, 1, 1, 20, dtype=torch.bool)),  # one row
        (torch.randn(2, 9, 1, 64), torch.zeros(2, 1, 1, 20)),  # an additive float mask
        (torch.randn(2, 9, 1, 64), None),
    ):
        rows = query.shape[0]
        ours, _ = row_attention_forward(module, query, key[:rows], value[:rows], mask)
        theirs, _ = sdpa_attention_forward(module, query, key[:rows], value[:rows], mask)
        assert torch.equal(ours, theirs)
