"""The shared words: adapter identity and a chat model call's typed options."""

import json
import threading

import pytest

from chatbot.vocabulary import BASE_ADAPTER, AdapterId, GenerationParams, GenerationStats, InputError, ModelCall


def test_an_adapter_id_is_a_checked_string():
    finance = AdapterId("finance")
    assert finance == "finance" and {"finance": 1}[finance] == 1 and json.dumps([finance]) == '["finance"]'
    assert AdapterId(finance) is finance and not finance.is_base and BASE_ADAPTER.is_base
    assert AdapterId("support-2026-11-24").is_base is False and AdapterId("base").is_base
    for bad in ["", "a\x00b", "tab\tname", "x" * 201, None, 3]:
        assert not AdapterId.valid(bad)
        with pytest.raises(InputError) as error:
            AdapterId(bad)
        assert error.value.param == "adapter"


def test_a_model_call_is_typed_and_made_from_bind_style_arguments_too():
    stats, cancelled = GenerationStats(), threading.Event()
    call = ModelCall("finance", {"max_new_tokens": 8}, stats, cancelled)
    assert isinstance(call.adapter, AdapterId) and ModelCall.of({"call": call, "adapter": "other"}) is call
    bound = ModelCall.of({"adapter": "support", "max_new_tokens": 5, "stats": stats, "tools": [], "callbacks": None})
    assert bound.adapter == "support" and dict(bound.overrides) == {"max_new_tokens": 5} and bound.stats is stats
    plain = ModelCall.of({})
    assert plain.adapter.is_base and plain.cancelled is None and plain.stats is not stats
    with pytest.raises(InputError):
        ModelCall(adapter="")


def test_stop_strings_are_a_checked_generation_setting():
    assert GenerationParams(stop="END").stop == ("END",)
    assert GenerationParams.merged(GenerationParams(), {"stop": ["\n\n", "Q:"]}).stop == ("\n\n", "Q:")
    assert GenerationParams().stop == () and GenerationParams.merged(GenerationParams(stop="x"), {"stop": None}).stop
    for bad in (["a"] * 5, [""], ["x" * 201], [3], "", {"END": 1}):
        with pytest.raises(InputError) as error:
            GenerationParams(stop=bad)
        assert error.value.param == "stop"
