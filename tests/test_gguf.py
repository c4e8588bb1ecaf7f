"""A GGUF base model becomes a safetensors folder one tensor at a time, equal to transformers' reading."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from chatbot.models import gguf
from chatbot.models.embedded import smollm2_gguf


@pytest.fixture(scope="module")
def reference():
    """transformers' own de-quantisation of the embedded GGUF file, at fp32."""
    path = smollm2_gguf()
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).state_dict()


def test_the_streamed_folder_holds_transformers_weights_in_shards(reference, tmp_path):
    dtype = gguf.write_model_folder(smollm2_gguf(), tmp_path, shard_bytes=100 << 20)
    assert dtype == torch.float32  # a small model keeps its exact values
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) == 6 and all((tmp_path / name).is_file() for name in shards)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[key], reference[key]) for key in reference)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config


def test_a_large_model_is_written_in_bfloat16(reference, tmp_path, monkeypatch):
    monkeypatch.setattr(gguf, "EXACT_PARAMETERS", 1000)  # "large": above the fp32 limit
    assert gguf.write_model_folder(smollm2_gguf(), tmp_path) == torch.bfloat16
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).state_dict()  # "auto": the folder's dtype
    assert all(value.dtype == torch.bfloat16 for value in loaded.values())
    assert all(torch.equal(loaded[key], reference[key].to(torch.bfloat16)) for key in reference)
