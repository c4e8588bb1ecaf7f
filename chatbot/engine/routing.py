"""How a forward pass of the transformers engine reaches each row's adapter: a seam the adapters fill.

The engine knows adapters only by name. Whoever loads them into the model (the adapter
registry, through :mod:`chatbot.adapters.lora`) gives the engine a :class:`Routing` that says
which are loaded and what keyword arguments a forward pass needs for a batch's rows.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from chatbot.vocabulary import BASE_ADAPTER


class Routing(Protocol):
    """The adapters of the engine's model and the per-pass mapping of rows to them."""

    def loaded(self, model: torch.nn.Module) -> set[str]:
        """Adapter names the model holds now (not the base)."""
        ...

    def forward_kwargs(self, model: torch.nn.Module, adapters: list[str], tokens: int) -> dict[str, Any]:
        """Keyword arguments of a forward pass whose rows use ``adapters`` (one name per row).

        ``tokens`` is the pass's length (a prompt chunk, or 1 for a decode step). Raises
        ValueError naming an adapter that is not loaded.
        """
        ...


class BaseOnly:
    """No adapters: every row must be on the base model."""

    def loaded(self, model: torch.nn.Module) -> set[str]:
        return set()

    def forward_kwargs(self, model: torch.nn.Module, adapters: list[str], tokens: int) -> dict[str, Any]:
        for adapter in adapters:
            if adapter != BASE_ADAPTER:
                raise ValueError(f"adapter {adapter!r} is not loaded")
        return {}
