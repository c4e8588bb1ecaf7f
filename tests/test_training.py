"""Training: assistant-only loss, RAFT examples over a real index, and a few real LoRA steps."""

import json

import pytest
import torch
from safetensors import safe_open

from chatbot.qa import read_qa
from chatbot.rag.prompting import block_text
from chatbot.training.examples import IGNORE, read_chat_jsonl, tokenize
from chatbot.training.raft import DECLINE, build_raft_examples
from chatbot.training.trainer import split
from tests.conftest import REPO

PIRATE = [
    [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]
    for question, answer in [
        ("How do I restart?", "Arr, run make run again, matey!"),
        ("Where are my files?", "Arr, in the knowledge folder, matey!"),
        ("What is an adapter?", "Arr, a small LoRA that gives me voice, matey!"),
        ("How do I ask?", "Arr, type in the box and press send, matey!"),
        ("Is it fast?", "Arr, fast as the wind, matey!"),
    ]
]


@pytest.fixture
def pirate_file(tmp_path):
    path = tmp_path / "pirate.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in PIRATE))
    return path


def test_validation_split_is_seeded_and_capped():
    examples = [[{"role": "user", "content": str(n)}] for n in range(1000)]
    train, validation = split(examples, 0.15, seed=3, limit=64)
    assert len(validation) == 64 and len(train) == 936
    assert sorted(m[0]["content"] for m in train + validation) == sorted(m[0]["content"] for m in examples)
    assert split(examples, 0.15, seed=3, limit=64) == (train, validation)
    assert len(split(examples, 0.15, seed=3)[1]) == 150  # no cap: the share
    assert [len(part) for part in split(examples[:2], 0.15, seed=0, limit=64)] == [1, 1]
    assert split(examples[:1], 0.15, seed=0, limit=64) == (examples[:1], [])


def test_only_assistant_tokens_carry_loss(make_bot):
    tokenizer = make_bot().generator.tokenizer
    conversation = [*PIRATE[0], {"role": "user", "content": "And then?"}, {"role": "assistant", "content": "Sail!"}]
    row = tokenize(tokenizer, conversation, max_tokens=4096)
    supervised = tokenizer.decode(
        [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != IGNORE]
    )
    assert "Arr, run make run again, matey!" in supervised and "Sail!" in supervised
    assert "pirate" not in supervised and "restart" not in supervised and "then?" not in supervised
    assert len(row["input_ids"]) == len(row["labels"])


def test_chat_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: the last message must be the assistant"):
        read_chat_jsonl(bad)


def test_raft_examples_put_the_gold_chunk_among_distractors_and_cite_it(make_bot, user_guide):
    bot = make_bot()
    bot.sync()
    items = read_qa(REPO / "training" / "support" / "questions.jsonl")
    answerable = [item for item in items if item.answerable][:6]
    unanswerable = [item for item in items if not item.answerable][:1]
    files = [record.path for record in bot.status().files]
    examples, report = build_raft_examples(
        bot.store, answerable + unanswerable, files, "Be helpful.", top_k=3, distractor_only_share=0.0
    )
    assert report.examples == 7 and report.with_gold == 6 and report.distractors_only == 1
    for item, messages in zip(answerable, examples, strict=False):
        system, user, assistant = messages
        assert system["content"].startswith("Be helpful.") and user["content"].endswith(f"Question: {item.question}")
        blocks = user["content"].split("\n\n[")
        assert len(blocks) == 3
        gold_text = bot.store.similarity_search(item.answers[0], k=1, filter={"source": item.gold_files(files)[0]})
        cited = {int(n) for n in __import__("re").findall(r"\[(\d)\]", assistant["content"])}
        assert cited, assistant["content"]
        gold_numbers = {
            n for n in range(1, 4) if block_text(gold_text[0].page_content) in user["content"].split(f"[{n}] ")[1]
        }
        assert cited <= gold_numbers
    assert examples[-1][-1]["content"] == DECLINE


def test_training_a_few_steps_writes_a_loadable_adapter_folder(make_settings, make_bot, pirate_file, tmp_path):
    from chatbot.training.run import TrainRequest, train_domain
    from chatbot.training.trainer import TrainConfig

    settings = make_settings(adapters_dir=tmp_path / "adapters")
    request = TrainRequest(domain="pirate", data=pirate_file, description="Talks like a pirate")
    folder, result = train_domain(settings, request, TrainConfig(max_steps=2, batch_size=2, eval_every=1))
    assert folder == settings.adapters_dir / "pirate"
    names = {path.name for path in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "domain.toml", "training.json", "loss.png"} <= names
    assert (folder / "loss.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((folder / "training.json").read_text())
    assert record["config"]["max_steps"] == 2 and record["metrics"]["steps"] == 2
    assert record["metrics"]["validation_examples"] == 1 and record["metrics"]["base_validation_perplexity"] > 1
    assert [entry["step"] for entry in record["history"] if "eval_loss" in entry] == [0, 1, 2]
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as weights:
        assert all(str(weights.get_tensor(k).dtype) == "torch.bfloat16" for k in weights.keys())  # noqa: SIM118
    bot = make_bot(adapters_dir=tmp_path / "adapters")
    domain = bot.adapters.get("pirate")
    assert domain.system_prompt == "You are a pirate." and domain.description == "Talks like a pirate"
    assert domain.manifest["base_model"]["fingerprint"] == bot.generator.base.fingerprint
    assert not domain.warnings
    assert bot.ask("Where are my files?", adapter="pirate", use_retrieval=False).adapter == "pirate"


def test_training_refuses_bad_domain_names(make_settings, pirate_file):
    from chatbot.training.run import TrainRequest, train_domain
    from chatbot.training.trainer import TrainConfig

    for name in ("../escape", "base", "Has Space"):
        with pytest.raises(ValueError, match="invalid domain name"):
            train_domain(make_settings(), TrainRequest(domain=name, data=pirate_file), TrainConfig(max_steps=1))


def test_a_stopped_training_resumes_from_its_checkpoint_and_ends_as_the_unbroken_run(tmp_path, monkeypatch):
    import dataclasses

    import torch
    from peft import get_peft_model_state_dict

    from chatbot.models.base import load_base_model
    from chatbot.training import trainer
    from tests.conftest import MODEL_CACHE

    config = trainer.TrainConfig(max_steps=6, batch_size=2, eval_every=2, patience=10)

    def fresh():  # train_adapter wraps the model it is given: one private copy per run
        return load_base_model("embedded", MODEL_CACHE, "cpu", "float32")

    whole = trainer.train_adapter(fresh(), PIRATE, config)
    expected = {key: value.clone() for key, value in get_peft_model_state_dict(whole.model).items()}

    checkpoint = tmp_path / "pirate.checkpoint.pt"
    measure, calls = trainer._loss, []

    def machine_goes_down(*args):  # the base loss, step 2's validation, then step 4's: down
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return measure(*args)

    monkeypatch.setattr(trainer, "_loss", machine_goes_down)
    crashed = fresh()
    with pytest.raises(KeyboardInterrupt):
        trainer.train_adapter(crashed, PIRATE, config, checkpoint)
    assert torch.load(checkpoint, weights_only=True)["step"] == 2
    other = trainer.run_fingerprint(crashed, PIRATE, dataclasses.replace(config, learning_rate=1e-3))
    assert trainer._resumable(checkpoint, other) is None  # another recipe starts over
    monkeypatch.setattr(trainer, "_loss", measure)

    resumed = trainer.train_adapter(fresh(), PIRATE, config, checkpoint)
    assert resumed.steps == 6 and not checkpoint.exists()
    assert resumed.history == whole.history  # the same curve, step 0's base loss included
    weights = get_peft_model_state_dict(resumed.model)
    assert weights.keys() == expected.keys()
    for key, value in weights.items():
        torch.testing.assert_close(value, expected[key])


def test_a_resumed_command_trains_on_the_examples_the_stopped_run_built(
    make_settings, pirate_file, tmp_path, monkeypatch
):
    """RAFT and grounding rebuilds can differ in a retrieved block: a resume must not rebuild."""
    from chatbot.training import resume, run, trainer

    settings = make_settings(adapters_dir=tmp_path / "adapters")
    config = trainer.TrainConfig(max_steps=4, batch_size=2, eval_every=2, patience=10)
    measure, calls = trainer._loss, []

    def machine_goes_down(*args):  # the base loss, step 2's validation, then down at step 4's
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return measure(*args)

    def request() -> run.TrainRequest:
        return run.TrainRequest(domain="pirate", data=pirate_file)

    def key_with(**overrides) -> str:
        return run._inputs_key(make_settings(adapters_dir=tmp_path / "adapters", **overrides), request())

    monkeypatch.setattr(trainer, "_loss", machine_goes_down)
    with pytest.raises(KeyboardInterrupt):
        run.train_domain(settings, request(), config)
    monkeypatch.setattr(trainer, "_loss", measure)
    saved = settings.data_dir / "training" / "pirate.checkpoint-examples.json"
    key = json.loads(saved.read_text())["inputs"]

    # the key follows the inputs' bytes, the knowledge folder's files and the settings that shape examples
    original = pirate_file.read_bytes()
    pirate_file.write_bytes(original.replace(b"matey", b"hearty"))
    assert key_with() != key
    assert resume.load_built(saved, key_with()) is None
    pirate_file.write_bytes(original)
    assert key_with() == key
    assert key_with(top_k=2) != key
    assert key_with(port=9999) == key
    folder = tmp_path / "kb"
    folder.mkdir()
    before = resume.inputs_key(settings, {}, [], [folder])
    (folder / "new.md").write_text("# New\n\nA new file.\n")
    assert resume.inputs_key(settings, {}, [], [folder]) != before

    def rebuild(*args):
        raise AssertionError("the resumed run built its examples again")

    monkeypatch.setattr(run, "_build_examples", rebuild)
    folder, result = run.train_domain(settings, request(), config)
    assert result.steps == 4 and [entry["step"] for entry in result.history if "eval_loss" in entry] == [0, 2, 4]
    assert not saved.exists() and not (settings.data_dir / "training" / "pirate.checkpoint.pt").exists()
    assert json.loads((folder / "training.json").read_text())["data"]["recipe"] == "chat"


def test_gradient_checkpointing_trains_the_same_weights(embedded_tokenizer, tmp_path):
    """Recomputing activations in the backward pass changes memory, not the result."""
    from chatbot.models.base import load_base_model
    from chatbot.training.trainer import TrainConfig, train_adapter
    from tests.models import tiny_model

    folder = tiny_model("qwen2", tmp_path / "qwen2", embedded_tokenizer)
    states = []
    for checkpointing in (False, True):
        base = load_base_model(str(folder), tmp_path, "cpu", "float32")
        config = TrainConfig(max_steps=2, batch_size=2, eval_every=2, gradient_checkpointing=checkpointing)
        result = train_adapter(base, PIRATE, config)
        assert result.model.base_model.model.is_activation_checkpointing is checkpointing
        states.append({k: v.detach().clone() for k, v in result.model.named_parameters() if "lora_" in k})
    assert states[0].keys() == states[1].keys() and states[0]
    assert all(torch.allclose(states[0][k], states[1][k], atol=1e-6) for k in states[0])
    assert any(v.abs().max() > 0 for k, v in states[1].items() if "lora_B" in k)  # it did train
