"""The adapter check: every way an adapter folder can be wrong is named, before PEFT touches the model."""

import json
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model

from chatbot.adapters.check import CONFIG, WEIGHTS, check_adapter
from chatbot.adapters.domains import MANIFEST
from chatbot.models.shapes import shapes_from_folder, shapes_of
from tests.conftest import MODEL_CACHE, tiny_llama


@pytest.fixture(scope="module", params=["loaded", "files"])
def model(request, tmp_path_factory):
    """The base model's shapes as the check sees them: from the loaded model, or from its files alone."""
    if request.param == "loaded":
        return shapes_of(tiny_llama())
    folder = tmp_path_factory.mktemp("base")
    tiny_llama().save_pretrained(folder)
    return shapes_from_folder(folder)


@pytest.mark.parametrize("tied", [True, False])
def test_the_files_give_the_shapes_the_loaded_model_has(tmp_path, tied):
    base = tiny_llama()
    base.config.tie_word_embeddings = tied
    if not tied:
        base.lm_head.weight = torch.nn.Parameter(base.lm_head.weight.detach().clone())
    base.save_pretrained(tmp_path)
    loaded, files = shapes_of(base), shapes_from_folder(tmp_path)
    assert files.layers == {name: shape for name, shape in loaded.layers.items()}
    assert files.architecture == loaded.architecture == "LlamaForCausalLM"
    assert {name for name in loaded.modules if name in files.modules} >= set(loaded.layers)


def test_the_embedded_models_files_give_its_loaded_shapes():
    from chatbot.models.base import load_base_model

    base_model = load_base_model("embedded", MODEL_CACHE, "cpu", "float32", weights=False)
    files = shapes_from_folder(base_model.folder)
    assert files.layers == base_model.shapes.layers and len(files.layers) > 200
    assert files.architecture == base_model.shapes.architecture


@pytest.fixture(scope="module")
def good(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("adapter") / "good"
    get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(folder)
    return folder


@pytest.fixture
def adapter(tmp_path, good):
    folder = tmp_path / "adapter"
    shutil.copytree(good, folder)
    return folder


def config_with(folder, **change):
    config = json.loads((folder / CONFIG).read_text())
    (folder / CONFIG).write_text(json.dumps({**config, **change}))


def test_a_fitting_adapter_has_no_problems(good, model):
    assert check_adapter(good, model) == ([], [])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: (f / CONFIG).unlink(), f"missing {CONFIG}"),
        (lambda f: (f / CONFIG).write_text("{not json"), "malformed"),
        (lambda f: (f / CONFIG).write_text("[1, 2]"), "not a JSON object"),
        (lambda f: config_with(f, peft_type="PREFIX_TUNING"), "only LORA"),
        (lambda f: config_with(f, r=0), "positive integer"),
        (lambda f: (f / MANIFEST).write_text("name = [unclosed"), f"{MANIFEST} is malformed"),
        (lambda f: (f / WEIGHTS).write_bytes(b"\x00" * 16), "not a valid safetensors"),
        (lambda f: ((f / WEIGHTS).unlink(), (f / "adapter_model.bin").write_bytes(b"x")), "pickle weights"),
        (lambda f: (f / WEIGHTS).unlink(), f"missing {WEIGHTS}"),
        (lambda f: config_with(f, r=8), "the base model needs"),  # weights are rank 4
        (lambda f: config_with(f, target_modules=["q_proj", "w_pack"]), "do not exist in the base model"),
        (lambda f: (f / MANIFEST).write_text('[base_model]\narchitecture = "GPT2LMHeadModel"\n'), "GPT2LMHeadModel"),
    ],
)
def test_each_problem_is_named(adapter, model, damage, reason):
    damage(adapter)
    problems, _ = check_adapter(adapter, model)
    assert problems and reason in " ".join(problems)


def llama(hidden: int, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = {"hidden_size": hidden, "intermediate_size": 128, "num_hidden_layers": layers}
    return LlamaForCausalLM(LlamaConfig(**sizes, num_attention_heads=4, num_key_value_heads=2, vocab_size=256))


def test_other_layer_shapes_and_modules_are_refused(tmp_path, model):
    folder = tmp_path / "wide"
    get_peft_model(llama(96, 2), LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(folder)
    problems, _ = check_adapter(folder, model)
    assert any("has shape" in problem for problem in problems)
    deeper = tmp_path / "deeper"
    get_peft_model(llama(64, 3), LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(deeper)
    problems, _ = check_adapter(deeper, model)
    assert any("modules the base model does not have" in problem for problem in problems)


def test_other_base_weights_of_the_same_shapes_only_warn(adapter, model):
    (adapter / MANIFEST).write_text('[base_model]\nfingerprint = "aaaa"\n')
    problems, warnings = check_adapter(adapter, model, fingerprint="bbbb")
    assert problems == []
    assert warnings and "aaaa" in warnings[0] and "bbbb" in warnings[0]
    assert check_adapter(adapter, model, fingerprint="aaaa") == ([], [])
