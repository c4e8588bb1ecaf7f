"""Adapter folders on the one base model: routed per request, bad ones refused."""

import pytest
import torch

from chatbot.adapters import UnknownAdapterError
from tests.conftest import MODEL_CACHE


@pytest.fixture(scope="session")
def lora_folder(tmp_path_factory):
    """A real (randomly initialised, so it visibly changes outputs) LoRA for the embedded model."""
    from peft import LoraConfig, get_peft_model

    from chatbot.models.base import load_base_model

    folder = tmp_path_factory.mktemp("lora") / "demo"
    base = load_base_model("embedded", MODEL_CACHE, "cpu", "float32")  # a private copy to wrap
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base.model, config).save_pretrained(folder)
    (folder / "domain.toml").write_text(
        'display_name = "Demo"\ndescription = "A test domain"\nsystem_prompt = "You are Demo. Be terse."\n'
    )
    return folder


@pytest.fixture
def adapters_dir(tmp_path, lora_folder):
    import shutil

    folder = tmp_path / "adapters"
    shutil.copytree(lora_folder, folder / "demo")
    pickled = folder / "pickled"
    pickled.mkdir()
    shutil.copy(lora_folder / "adapter_config.json", pickled)
    (pickled / "adapter_model.bin").write_bytes(b"not loaded")
    broken = folder / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{}")
    (broken / "domain.toml").write_text("display_name = = 1")
    return folder


def test_adapters_are_listed_and_bad_ones_refused_with_reason(make_bot, adapters_dir):
    bot = make_bot(adapters_dir=adapters_dir)
    domains = {d.name: d for d in bot.adapters.list()}
    assert list(domains)[0] == "base"
    assert domains["demo"].ready and domains["demo"].display_name == "Demo"
    assert "pickle" in domains["pickled"].error
    assert "domain.toml is malformed" in domains["broken"].error
    with pytest.raises(UnknownAdapterError, match="failed to load.*pickle"):
        bot.ask("hi", adapter="pickled", use_retrieval=False)


def test_request_gets_its_adapter_and_base_stays_base(make_bot, adapters_dir):
    bot = make_bot(adapters_dir=adapters_dir, max_new_tokens=12)
    plain = make_bot(max_new_tokens=12)  # no adapter folder: the model without PEFT
    question = "Name a color."
    base_answer = bot.ask(question, use_retrieval=False)
    demo_answer = bot.ask(question, adapter="demo", use_retrieval=False)
    assert demo_answer.adapter == "demo" and base_answer.adapter == "base"
    assert demo_answer.answer != base_answer.answer
    assert base_answer.answer == plain.ask(question, use_retrieval=False).answer
    assert bot.ask(question, use_retrieval=False).answer == base_answer.answer  # nothing global switched
