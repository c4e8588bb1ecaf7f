"""The architectures users bring, each through the whole path on tiny random-weight models.

Per architecture: a LoRA training step on it; its ONNX conversion (fp32) equal to transformers
for a base row and an adapter row decoded in one run; and ``chatbot ask`` on both engines, with
the trained adapter, answering with a citation of the knowledge folder's file.
"""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from chatbot.models.base import load_base_model
from tests.models import ARCHITECTURES, tiny_model

pytest.importorskip("onnxruntime_genai")

HERONS = "The herons at Millbrook pond are fed at seven in the morning by the warden, every day of the year.\n"
TRAINING = [
    [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    for question, answer in [
        ("Where are my files?", "Arr, in the knowledge folder."),
        ("How do I ask?", "Arr, type and press send."),
        ("Is it fast?", "Arr, fast as the wind."),
        ("What is an adapter?", "Arr, a small LoRA."),
    ]
]


def _last_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float().numpy()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_an_architecture_trains_converts_routes_and_answers_with_a_citation(
    architecture, embedded_tokenizer, tmp_path, knowledge, make_settings, monkeypatch
):
    from peft import LoraConfig, PeftModel, get_peft_model

    from chatbot.cli import app
    from chatbot.engine.onnx.adapter_export import export_adapter
    from chatbot.engine.onnx.convert import convert_model
    from chatbot.engine.onnx.runtime import Decoder
    from chatbot.models.linears import block_linear_names
    from chatbot.training.run import TrainRequest, train_domain
    from chatbot.training.trainer import TrainConfig
    from tests.test_onnx_engine import decoder_logits

    folder = tiny_model(architecture, tmp_path / architecture, embedded_tokenizer)
    cache, adapters = tmp_path / "cache", tmp_path / "adapters"
    settings = make_settings(base_model=str(folder), cache_dir=cache, adapters_dir=adapters)
    data = tmp_path / "pirate.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in TRAINING))

    # A LoRA training step, on every linear layer of the blocks (Phi-3's are fused).
    trained, result = train_domain(settings, TrainRequest(domain="pirate", data=data), TrainConfig(max_steps=1))
    assert result.steps == 1 and np.isfinite(result.train_loss)
    base = load_base_model(str(folder), cache, "cpu", "float32")
    targets = block_linear_names(base.model)
    with safe_open(str(trained / "adapter_model.safetensors"), "pt") as weights:
        assert {key.split(".lora_")[0].rsplit(".", 1)[-1] for key in weights.keys()} == set(targets)  # noqa: SIM118

    # The ONNX conversion equals transformers, for a base row and an adapter row in one run.
    lora = tmp_path / "random-lora"
    torch.manual_seed(1)
    other = load_base_model(str(folder), cache, "cpu", "float32").model
    config = LoraConfig(r=4, lora_alpha=32, target_modules=targets, init_lora_weights=False)
    get_peft_model(other, config).save_pretrained(lora)
    ids = embedded_tokenizer("The balance sheet of a company shows its assets", add_special_tokens=False)["input_ids"]
    plain = _last_logits(base.model, ids)
    tuned = _last_logits(PeftModel.from_pretrained(base.model, str(lora)).eval(), ids)
    assert np.abs(tuned - plain).max() > 0.1  # the adapter really changes the model
    skeleton = load_base_model(str(folder), cache, "cpu", "float32", weights=False)
    converted = convert_model(skeleton.folder, skeleton.model, skeleton.fingerprint, cache, "fp32")
    decoder = Decoder(converted, threads=2, max_rows=4)
    decoder.load_adapter("random", export_adapter(lora, converted, "random"))
    logits = decoder_logits(decoder, [(ids, "base"), (ids, "random")])
    assert np.abs(logits[0] - plain).max() < 1e-3
    assert np.abs(logits[1] - tuned).max() < 1e-3

    # `chatbot ask` on both engines, with the trained adapter: a reply that cites the file.
    (knowledge / "herons.md").write_text(HERONS)
    for key in ("knowledge_dir", "adapters_dir", "cache_dir", "base_model"):
        monkeypatch.setenv(f"CHATBOT_{key.upper()}", str(getattr(settings, key)))
    monkeypatch.setenv("CHATBOT_MAX_NEW_TOKENS", "16")
    for engine in ("torch", "onnx"):
        monkeypatch.setenv("CHATBOT_ENGINE", engine)
        monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / f"data-{engine}"))
        outcome = CliRunner().invoke(app, ["ask", "When are the herons fed?", "--adapter", "pirate", "--json"])
        assert outcome.exit_code == 0, outcome.output
        reply = json.loads(outcome.stdout)
        assert reply["adapter"] == "pirate"
        cited = [block for block in reply["retrieved"] if f"[{block['n']}]" in reply["answer"]]
        assert [block["source"] for block in cited] == ["herons.md"], reply["answer"]
