"""LoRA adapters on the transformers engine, with PEFT: loaded, cast, removed, and routed per row.

The one place that knows PEFT: :class:`PeftLora` injects an adapter folder into the base model
(its wrapper replaces the plain model on the first one), removes it again, and gives the engine
each forward pass's mapping of rows to adapters (:class:`chatbot.engine.routing.Routing`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from chatbot.vocabulary import BASE_ADAPTER

if TYPE_CHECKING:
    from chatbot.engine.generation import Generator

PEFT_BASE = "__base__"  # PEFT's name for "no adapter" inside a mixed batch
ACTIVATE_AT = 128  # prompt tokens from which making the request's adapter active pays


class PeftRouting:
    """Which PEFT adapters a model holds, and how a forward pass reaches each row's (the engine's routing)."""

    def loaded(self, model: torch.nn.Module) -> set[str]:
        return set(getattr(model, "peft_config", {}))

    def forward_kwargs(self, model: torch.nn.Module, adapters: list[str], tokens: int) -> dict[str, Any]:
        """Per-row ``adapter_names``, or none when every row uses the model's active adapter.

        A prompt of at least ``ACTIVATE_AT`` tokens on one adapter makes that adapter active first
        (PEFT's ``set_adapter``, ~10 ms, saves ~0.3 s on a 1,000-token prompt: per-row routing
        copies every layer's input). The active adapter is model state, but only this decides
        with it, and a row's result is the same either way.
        """
        loaded = self.loaded(model)
        missing = [adapter for adapter in adapters if adapter != BASE_ADAPTER and adapter not in loaded]
        if missing:
            raise ValueError(f"adapter {missing[0]!r} is not loaded")
        if not loaded:
            return {}
        only = adapters[0] if len(set(adapters)) == 1 and adapters[0] != BASE_ADAPTER else None
        if only is not None and only != model.active_adapter and tokens >= ACTIVATE_AT:
            model.set_adapter(only)
        if only is not None and only == model.active_adapter:
            return {}
        return {"adapter_names": [PEFT_BASE if adapter == BASE_ADAPTER else adapter for adapter in adapters]}


class PeftLora(PeftRouting):
    """The PEFT adapters of one generator's model: added and removed here, routed by the engine through it."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        generator.engine.routing = self

    def add(self, name: str, path: Path) -> None:
        """Load the adapter folder ``path`` as ``name`` (replacing one of that name), in the model's dtype.

        It runs on the engine's thread (between two steps), because oneDNN-packed weights, which
        exact batches give the adapter too, are fast only in the thread that packed them.
        """
        self.generator.engine.call(lambda: self._add(name, path))

    def _add(self, name: str, path: Path) -> None:
        from peft import PeftModel

        generator = self.generator
        with generator.exclusive:  # never change layers during a forward pass
            generator.forget_adapter(name)
            model = generator.model
            if isinstance(model, PeftModel):
                try:
                    model.load_adapter(str(path), adapter_name=name, is_trainable=False, low_cpu_mem_usage=False)
                except Exception:
                    if name in model.peft_config:
                        model.delete_adapter(name)
                    raise
            else:
                model = PeftModel.from_pretrained(generator.base.model, str(path), adapter_name=name)
                model.eval()
                generator.attach(model)
            _cast(model, name, generator.base.dtype)
            if getattr(generator, "packed_rows", 0):
                _pack(model, name, generator.packed_rows)

    def remove(self, name: str) -> None:
        """Remove adapter ``name``; requests still on it fail with a clear error."""
        generator = self.generator
        with generator.exclusive:
            if name in getattr(generator.model, "peft_config", {}):
                generator.model.delete_adapter(name)
            generator.forget_adapter(name)


def _cast(model: Any, name: str, dtype: torch.dtype) -> None:
    """Put adapter ``name``'s LoRA weights in the model's ``dtype``.

    PEFT upcasts them to fp32 (or keeps the saved dtype over int8 base layers). In the model's
    dtype they take half the memory, and in bf16 a row's LoRA result does not depend on how many
    rows share its adapter in a batch.
    """
    for layers in _lora_layers(model, name):
        layers[name].to(dtype)


def _pack(model: Any, name: str, min_rows: int) -> None:
    """Pack adapter ``name``'s LoRA layers as the base layers are.

    Eager bf16 products of these small shapes are slow (decode with an adapter ran at 4 instead of
    17 tokens/s); with exact batches (``min_rows`` 2) a row's bits never depend on its batch here
    either, as PEFT computes a mixed batch's LoRA products per adapter, on the rows that use it.
    """
    from chatbot.models.packed import PackedLinear

    for layers in _lora_layers(model, name):
        if type(layers[name]) is torch.nn.Linear:
            layers[name] = PackedLinear(layers[name], min_rows)


def _lora_layers(model: Any, name: str) -> Iterator[torch.nn.ModuleDict]:
    """Every ``lora_A``/``lora_B`` module dict of ``model`` that holds adapter ``name``."""
    for module in list(model.modules()):
        for part in ("lora_A", "lora_B"):
            layers = getattr(module, part, None)
            if isinstance(layers, torch.nn.ModuleDict) and name in layers:
                yield layers
