"""The PEFT adapters' owner: loading in the model's dtype, removing, and each pass's row -> adapter mapping."""

from __future__ import annotations

import pytest
import torch

from chatbot.adapters.lora import ACTIVATE_AT, PEFT_BASE
from chatbot.engine.routing import BaseOnly


@pytest.fixture
def bot(torch_bot):
    return torch_bot


def test_adapters_load_in_the_models_dtype_and_route_per_row(bot):
    generator = bot.generator
    lora = generator.engine.routing  # the registry handed its PeftLora to the engine
    model = generator.model
    assert lora.loaded(model) == {"demo", "other"} == generator.loaded_adapters
    for name in ("demo", "other"):
        weights = [m.lora_A[name].weight for m in model.modules() if hasattr(m, "lora_A") and name in m.lora_A]
        assert weights and all(w.dtype == generator.base.dtype for w in weights)

    with generator.exclusive:
        model.set_adapter("demo")
        assert lora.forward_kwargs(model, ["demo", "base", "other"], 1) == {
            "adapter_names": ["demo", PEFT_BASE, "other"]
        }
        assert lora.forward_kwargs(model, ["demo", "demo"], 1) == {}  # all on the active adapter
        assert lora.forward_kwargs(model, ["other"], ACTIVATE_AT - 1) == {"adapter_names": ["other"]}
        assert model.active_adapter == "demo"  # a short pass routes per row, it does not switch
        assert lora.forward_kwargs(model, ["other"], ACTIVATE_AT) == {}  # a long prompt: made active
        assert model.active_adapter == "other"
        assert lora.forward_kwargs(model, ["base"], 1) == {"adapter_names": [PEFT_BASE]}
        with pytest.raises(ValueError, match="'nope' is not loaded"):
            lora.forward_kwargs(model, ["demo", "nope"], 1)


def test_a_removed_adapter_is_refused_and_can_come_back(bot, other_lora_folder):
    generator = bot.generator
    lora = generator.engine.routing
    lora.remove("other")
    assert generator.loaded_adapters == {"demo"}
    with pytest.raises(ValueError, match="'other' is not loaded"):
        lora.forward_kwargs(generator.model, ["other"], 1)
    lora.add("other", other_lora_folder)
    assert generator.loaded_adapters == {"demo", "other"}
    ids = generator.prompt_ids([{"role": "user", "content": "Describe the sea."}])
    with torch.inference_mode(), generator.exclusive:
        routing = lora.forward_kwargs(generator.model, ["other", "base"], 1)
        logits = generator.model(input_ids=torch.tensor([ids, ids]), **routing).logits[:, -1]
    assert not torch.equal(logits[0], logits[1])  # the adapter changes the row it is routed to


def test_without_adapters_only_the_base_model_is_served():
    routing, model = BaseOnly(), torch.nn.Linear(2, 2)
    assert routing.loaded(model) == set() and routing.forward_kwargs(model, ["base", "base"], 300) == {}
    with pytest.raises(ValueError, match="'demo' is not loaded"):
        routing.forward_kwargs(model, ["base", "demo"], 1)
