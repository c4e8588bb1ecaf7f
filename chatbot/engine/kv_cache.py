"""Key/value caches of several requests decoded as one batch, and reusable prompt prefixes.

Rows of a batch have different lengths, so each row's cache is left-padded with zeros to the
longest one and the attention mask marks the padding. Cache tensors are never changed in place
(``DynamicCache`` grows by concatenation), which is what lets a stored prefix be shared.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from chatbot.vocabulary import AdapterId

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer, (batch, heads, length, head_dim)


class BatchCache:
    """The cache and attention mask of the rows being decoded together."""

    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # (rows, length): 1 for real tokens, 0 for padding

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[0])

    def add(self, cache: DynamicCache, device: torch.device) -> None:
        """Append one request's prefilled (unpadded, batch-1) cache as the last row."""
        length = cache.get_seq_length()
        row_mask = torch.ones(1, length, dtype=torch.long, device=device)
        if self.cache is None:
            self.cache, self.mask = cache, row_mask
            return
        width = max(length, int(self.mask.shape[1]))
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)])
        self.mask = torch.cat([F.pad(self.mask, (width - self.mask.shape[1], 0)), F.pad(row_mask, (width - length, 0))])

    def extend_mask(self) -> torch.Tensor:
        """Mark one more real token in every row (the one about to be decoded); return the mask."""
        self.mask = F.pad(self.mask, (0, 1), value=1)
        return self.mask

    def keep(self, indices: list[int]) -> None:
        """Keep only the rows at ``indices`` and drop padding columns no remaining row needs."""
        if not indices:
            self.cache = self.mask = None
            return
        selector = torch.tensor(indices, device=self.mask.device)
        self.cache.batch_select_indices(selector)
        self.mask = self.mask[selector]
        start = int(self.mask.any(0).int().argmax())
        if start:
            self.mask = self.mask[:, start:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(tensor, (0, 0, width - tensor.shape[2], 0))


def snapshot(cache: DynamicCache) -> KeyValues:
    """The cache's tensors, safe to keep: later updates replace them rather than write into them."""
    return [(layer.keys, layer.values) for layer in cache.layers]


class PrefixStore:
    """Least-recently-used key/values of prompt prefixes (a domain's system prompt), per adapter."""

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], KeyValues] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, adapter: AdapterId, prefix: tuple[int, ...]) -> KeyValues | None:
        entry = self._entries.get((adapter, prefix))
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end((adapter, prefix))
        return entry

    def put(self, adapter: AdapterId, prefix: tuple[int, ...], key_values: KeyValues) -> None:
        self._entries[(adapter, prefix)] = key_values
        self._entries.move_to_end((adapter, prefix))
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, adapter: AdapterId) -> None:
        """Drop the prefixes computed with ``adapter`` (it was removed or replaced)."""
        for key in [key for key in self._entries if key[0] == adapter]:
            del self._entries[key]
