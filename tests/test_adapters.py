"""Adapter folders on the one base model: routed per request, bad ones refused."""

import json

import pytest

from chatbot.adapters.domains import UnknownAdapterError
from tests.conftest import random_lora, tiny_llama


@pytest.fixture(scope="session")
def foreign_lora_folder(tmp_path_factory):
    """A LoRA for a different (smaller) Llama: same module names, other shapes."""
    folder = tmp_path_factory.mktemp("lora") / "foreign"
    small = tiny_llama()
    random_lora(folder, seed=2, model=small)
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
    assert bot.adapters.find("pickled") is domains["pickled"]  # labels still find a refused adapter
    assert bot.adapters.find(None) is bot.adapters.find("base") is domains["base"]
    assert bot.adapters.find("gone") is None


def test_a_folder_whose_name_cannot_be_an_adapter_is_skipped_and_logged_once(make_bot, adapters_dir, caplog):
    bot = make_bot(adapters_dir=adapters_dir)
    bot.adapters.refresh()
    (adapters_dir / "tab\tname").mkdir()
    with caplog.at_level("WARNING", logger="chatbot.adapters.registry"):
        for _ in range(3):  # the registry refreshes before every request
            bot.adapters.refresh()
    assert "tab\tname" not in {d.name for d in bot.adapters.list()} and bot.adapters.get("demo").ready
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped == ["adapter folder 'tab\\tname' skipped: its name cannot be an adapter's"]


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


def test_concurrent_requests_on_different_adapters_are_isolated(make_bot, adapters_dir, other_lora_folder):
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    shutil.copytree(other_lora_folder, adapters_dir / "other")
    bot = make_bot(adapters_dir=adapters_dir, max_new_tokens=16)
    question = "Describe the sea."
    alone = {name: bot.ask(question, adapter=name, use_retrieval=False).answer for name in ("demo", "other", "base")}
    assert len(set(alone.values())) == 3  # three different models
    order = ["demo", "other", "base", "other", "demo", "base"]
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda name: bot.ask(question, adapter=name, use_retrieval=False), order))
    assert [a.adapter for a in answers] == order
    assert [a.answer for a in answers] == [alone[name] for name in order]


def test_adapter_dropped_in_appears_and_removed_one_disappears_without_restart(
    make_bot, adapters_dir, other_lora_folder
):
    import shutil

    bot = make_bot(adapters_dir=adapters_dir, max_new_tokens=8)
    generator = bot.generator
    with pytest.raises(UnknownAdapterError):
        bot.ask("hi", adapter="other", use_retrieval=False)
    shutil.copytree(other_lora_folder, adapters_dir / "other")
    assert bot.ask("hi", adapter="other", use_retrieval=False).adapter == "other"
    shutil.rmtree(adapters_dir / "demo")
    with pytest.raises(UnknownAdapterError, match="unknown adapter 'demo'"):
        bot.ask("hi", adapter="demo", use_retrieval=False)
    assert "demo" not in bot.generator.loaded_adapters and "other" in bot.generator.loaded_adapters
    assert bot.generator is generator  # the same loaded base model throughout


def test_incompatible_or_incomplete_adapters_are_refused_while_others_answer(
    make_bot, adapters_dir, foreign_lora_folder, lora_folder
):
    import shutil

    shutil.copytree(foreign_lora_folder, adapters_dir / "foreign")
    claims = adapters_dir / "claims-qwen"
    shutil.copytree(lora_folder, claims)
    (claims / "domain.toml").write_text('[base_model]\nname = "Qwen2"\narchitecture = "Qwen2ForCausalLM"\n')
    no_weights = adapters_dir / "no-weights"
    no_weights.mkdir()
    shutil.copy(lora_folder / "adapter_config.json", no_weights)
    bad_json = adapters_dir / "bad-json"
    shutil.copytree(lora_folder, bad_json)
    (bad_json / "adapter_config.json").write_text("{not json")
    wrong_targets = adapters_dir / "wrong-targets"
    shutil.copytree(lora_folder, wrong_targets)
    config = json.loads((lora_folder / "adapter_config.json").read_text())
    (wrong_targets / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["c_attn"]}))
    bot = make_bot(adapters_dir=adapters_dir, max_new_tokens=8)
    errors = {d.name: d.error for d in bot.adapters.list()}
    assert "shape" in errors["foreign"]
    assert "Qwen2ForCausalLM" in errors["claims-qwen"]
    assert "missing adapter_model.safetensors" in errors["no-weights"]
    assert "adapter_config.json is malformed" in errors["bad-json"]
    assert "c_attn" in errors["wrong-targets"]
    assert errors["demo"] is None and errors["base"] is None
    assert bot.ask("hi", adapter="demo", use_retrieval=False).adapter == "demo"
    for name in ("foreign", "claims-qwen", "no-weights", "bad-json", "wrong-targets"):
        assert name not in bot.generator.loaded_adapters


def test_adapters_cli_lists_and_checks(monkeypatch, make_settings, adapters_dir, foreign_lora_folder, lora_folder):
    from typer.testing import CliRunner

    from chatbot.cli import app

    settings = make_settings(adapters_dir=adapters_dir)
    for key in ("knowledge_dir", "adapters_dir", "data_dir", "cache_dir"):
        monkeypatch.setenv(f"CHATBOT_{key.upper()}", str(getattr(settings, key)))
    result = CliRunner().invoke(app, ["adapters", "list", "--json"])
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["demo"]["status"] == "ready" and rows["demo"]["rank"] == 8 and rows["demo"]["size_bytes"] > 0
    assert rows["pickled"]["status"] == "refused" and "pickle" in rows["pickled"]["error"]
    # read from the base model's files, the verdicts are the ones the loaded model gives
    loaded = json.loads(CliRunner().invoke(app, ["adapters", "list", "--load", "--json"]).output)
    assert [(row["name"], row["status"], row["error"]) for row in loaded] == [
        (row["name"], row["status"], row["error"]) for row in rows.values()
    ]
    assert len({row["status"] for row in loaded}) == 2
    result = CliRunner().invoke(app, ["adapters", "check", str(foreign_lora_folder)])
    assert result.exit_code == 1 and "shape" in result.output
    result = CliRunner().invoke(app, ["adapters", "check", str(lora_folder)])
    assert result.exit_code == 0 and "fits" in result.output


def test_an_adapter_applies_its_system_prompt_and_knowledge_scope(make_bot, adapters_dir, knowledge):
    (knowledge / "kitchen").mkdir()
    (knowledge / "garage").mkdir()
    (knowledge / "kitchen" / "oven.md").write_text("The oven must be cleaned every Friday.")
    (knowledge / "garage" / "car.md").write_text("The car must be cleaned every Monday.")
    with (adapters_dir / "demo" / "domain.toml").open("a") as manifest:
        manifest.write('\n[knowledge_scope]\nfolder = "garage"\n')
    bot = make_bot(adapters_dir=adapters_dir, max_new_tokens=8)
    bot.sync()
    request = bot.request("What must be cleaned?", adapter="demo")
    assert request.system_prompt == "You are Demo. Be terse." and request.scope == {"folder": "garage"}
    scoped = bot.ask("When must the oven be cleaned?", adapter="demo")
    assert {source.source for source in scoped.retrieved} == {"garage/car.md"}
    unscoped = bot.ask("When must the oven be cleaned?")
    assert unscoped.retrieved[0].source == "kitchen/oven.md"
