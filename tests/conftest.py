"""Shared fixtures: real models loaded once per session, a fresh knowledge folder per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from chatbot.config import Settings, load_settings

pytest_plugins = ["tests.postgres"]  # the postgres server and the sqlite/postgresql `database` fixtures

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# Converted base model, reused across test runs (git-ignored).
MODEL_CACHE = REPO / ".chatbot" / "cache"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user configuration leaks into a test: no CHATBOT_* variables, no chatbot.toml."""
    for key in list(os.environ):
        if key.upper().startswith("CHATBOT_"):
            monkeypatch.delenv(key)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


@pytest.fixture
def knowledge(tmp_path: Path) -> Path:
    folder = tmp_path / "knowledge"
    folder.mkdir()
    return folder


@pytest.fixture(scope="session")
def no_adapters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The empty adapters folder of every test that names none. The app keeps one loaded engine
    per adapters folder (``app/runtime.py``), so these tests share one instead of each loading its own."""
    return tmp_path_factory.mktemp("no-adapters")


@pytest.fixture
def make_settings(tmp_path: Path, knowledge: Path, no_adapters: Path) -> Iterator[Callable[..., Settings]]:
    """Settings over this test's folders; a test that writes adapters passes its own ``adapters_dir``."""

    def make(**overrides: object) -> Settings:
        values = {
            "knowledge_dir": knowledge,
            "adapters_dir": no_adapters,
            "data_dir": tmp_path / "data",
            "cache_dir": MODEL_CACHE,
            "max_new_tokens": 48,
            **overrides,
        }
        return load_settings(**values)

    yield make
    written = sorted(path.name for path in no_adapters.iterdir())
    if written:
        for path in no_adapters.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        pytest.fail(f"the test wrote {written} into the shared empty adapters folder: give it its own adapters_dir")


@pytest.fixture
def make_bot(make_settings: Callable[..., Settings]):
    from chatbot.app.service import Chatbot

    def make(**overrides: object) -> Chatbot:
        return Chatbot(make_settings(**overrides))

    return make


@pytest.fixture
def torch_bot(make_bot, tmp_path, lora_folder, other_lora_folder):
    """The transformers engine with two random adapters, "demo" and "other"."""
    adapters = tmp_path / "adapters"
    shutil.copytree(lora_folder, adapters / "demo")
    shutil.copytree(other_lora_folder, adapters / "other")
    return make_bot(adapters_dir=adapters, engine="torch")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def user_guide(knowledge: Path) -> Path:
    """The project's own sample knowledge base, copied into the test's knowledge folder."""
    shutil.copytree(REPO / "knowledge", knowledge, dirs_exist_ok=True)
    return knowledge


def random_lora(folder, seed: int, model=None, rank: int = 8) -> None:
    """A real LoRA with random weights (so it visibly changes outputs), saved as PEFT does."""
    from peft import LoraConfig, get_peft_model

    from chatbot.models.base import load_base_model

    if model is None:
        model = load_base_model("embedded", MODEL_CACHE, "cpu", "float32").model  # a private copy to wrap
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)


@pytest.fixture(scope="session")
def lora_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora") / "demo"
    random_lora(folder, seed=0)
    (folder / "domain.toml").write_text(
        'display_name = "Demo"\ndescription = "A test domain"\nsystem_prompt = "You are Demo. Be terse."\n'
    )
    return folder


@pytest.fixture(scope="session")
def other_lora_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora") / "other"
    random_lora(folder, seed=1)
    return folder


@pytest.fixture(scope="session")
def embedded_tokenizer():
    """The embedded model's tokenizer (no weights loaded): the vocabulary of the tiny test models."""
    from chatbot.models.base import load_base_model

    return load_base_model("embedded", MODEL_CACHE, "cpu", "float32", weights=False).tokenizer


def tiny_llama(**config: object):
    """A randomly initialised two-layer Llama (another architecture's shapes, fast to run)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    return LlamaForCausalLM(LlamaConfig(**{**sizes, "num_key_value_heads": 2, "vocab_size": 256, **config}))


@pytest.fixture(scope="module")
def browser():
    """One headless chromium per test module."""
    from tests.browsers import launched

    with launched() as browser:
        yield browser
