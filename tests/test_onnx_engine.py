"""The onnxruntime-genai engine: conversion of the model and of adapters, routing, the app on it."""

import json
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from chatbot.models.base import load_base_model
from chatbot.onnxgenai import capi
from chatbot.onnxgenai.convert import ConversionError, convert_model, export_adapter, lora_inputs
from chatbot.service import resolve_engine
from chatbot.vocabulary import GenerationParams
from tests.conftest import MODEL_CACHE, random_lora

og = pytest.importorskip("onnxruntime_genai")


@pytest.fixture(scope="session")
def skeleton():
    return load_base_model("embedded", MODEL_CACHE, "cpu", "float32", weights=False)


@pytest.fixture(scope="session")
def fp32_dir(skeleton):
    return convert_model(skeleton.folder, skeleton.model, skeleton.fingerprint, MODEL_CACHE, "fp32")


def binding_generator(model_dir, ids, room, adapter_file=None):
    """onnxruntime-genai's own Python binding (the reference), after reading ``ids``."""
    model = og.Model(str(model_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + room)
    generator = og.Generator(model, params)
    if adapter_file is not None:
        adapters = og.Adapters(model)
        adapters.load(str(adapter_file), "a")
        generator.set_active_adapter(adapters, "a")
    generator.append_tokens(ids)
    return generator


def first_logits(model_dir, ids, adapter_file=None):
    return np.array(binding_generator(model_dir, ids, 4, adapter_file).get_logits())[0, -1]


def test_fp32_conversion_equals_transformers_with_and_without_an_adapter(skeleton, fp32_dir, lora_folder):
    from peft import PeftModel

    inputs = lora_inputs(fp32_dir / "model.onnx")
    assert len(inputs) == 30 * 7 * 2  # an A and a B input for each of the 7 linear layers of the 30 blocks
    ids = skeleton.tokenizer("The balance sheet of a company shows", add_special_tokens=False)["input_ids"]
    model = load_base_model("embedded", MODEL_CACHE, "cpu", "float32").model
    with torch.no_grad():
        plain = model(torch.tensor([ids])).logits[0, -1].numpy()
        adapted = PeftModel.from_pretrained(model, str(lora_folder)).eval()
        tuned = adapted(torch.tensor([ids])).logits[0, -1].numpy()
    assert np.abs(tuned - plain).max() > 1.0  # the adapter really changes the model
    adapter_file = export_adapter(lora_folder, fp32_dir, "demo")
    assert np.abs(first_logits(fp32_dir, ids) - plain).max() < 1e-3
    assert np.abs(first_logits(fp32_dir, ids, adapter_file) - tuned).max() < 1e-3


def binding_tokens(model_dir, ids, count, adapter_file=None):
    """Greedy tokens from the Python binding (the reference for the ctypes layer)."""
    generator = binding_generator(model_dir, ids, count, adapter_file)
    tokens = []
    for _ in range(count):
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens


def test_the_ctypes_layer_decodes_what_the_python_binding_decodes(skeleton, fp32_dir, lora_folder):
    ids = skeleton.tokenizer("The balance sheet of a company shows", add_special_tokens=False)["input_ids"]
    adapter_file = export_adapter(lora_folder, fp32_dir, "demo")
    model = capi.Model(fp32_dir)
    adapters = capi.Adapters(model)
    adapters.load(adapter_file, "demo")
    for name, file in [(None, None), ("demo", adapter_file)]:
        generator = capi.Generator(model, {"max_length": len(ids) + 8, "do_sample": False})
        if name:
            generator.set_active_adapter(adapters, name)
        generator.append_tokens(ids)
        assert [generator.generate_next_token() for _ in range(8)] == binding_tokens(fp32_dir, ids, 8, file)
        generator.close()
    with pytest.raises(capi.OgaError, match="not found|nope"):  # the library's own message
        capi.Generator(model, {"max_length": 8}).set_active_adapter(adapters, "nope")
    with pytest.raises(capi.OgaError, match="genai_config.json"):
        capi.Model(fp32_dir / "missing")


def test_the_engine_thread_lets_other_threads_run_while_it_reads_a_prompt(fp32_dir):
    """onnxruntime-genai's binding holds the GIL through a call; the ctypes layer must not.

    This thread notes when it gets to run while the worker thread reads one long prompt. With the
    GIL held through the call, the longest pause would be nearly the whole call; released, this
    thread keeps running throughout (a ratio within one run, whatever the machine's speed).
    """
    model = capi.Model(fp32_dir)
    generator = capi.Generator(model, {"max_length": 1100})
    prompt = list(range(1000, 2024))
    span: list[float] = []

    def read_prompt():
        span.append(time.perf_counter())
        generator.append_tokens(prompt)
        span.append(time.perf_counter())

    worker = threading.Thread(target=read_prompt)
    worker.start()
    turns = []
    while worker.is_alive():
        turns.append(time.perf_counter())
        time.sleep(0.0005)
    start, end = span
    inside = [start] + [t for t in turns if start < t < end] + [end]
    longest_pause = max(b - a for a, b in zip(inside, inside[1:], strict=False))
    assert longest_pause < 0.5 * (end - start)


def test_an_adapter_is_converted_once_per_content_and_again_when_it_changes(fp32_dir, tmp_path, lora_folder):
    folder = tmp_path / "demo"
    shutil.copytree(lora_folder, folder)
    first = export_adapter(folder, fp32_dir, "changing")
    written = first.stat().st_mtime_ns
    assert export_adapter(folder, fp32_dir, "changing") == first
    assert first.stat().st_mtime_ns == written  # reused, not rewritten
    random_lora(folder, seed=5)
    second = export_adapter(folder, fp32_dir, "changing")
    assert second != first and second.is_file()
    assert not first.exists()  # the stale conversion is removed


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"bias": "all"}, "bias"),
        ({"rank_pattern": {"q_proj": 4}}, "rank_pattern"),
    ],
)
def test_adapters_the_engine_cannot_run_are_refused_with_the_reason(fp32_dir, tmp_path, lora_folder, change, reason):
    folder = tmp_path / "bad"
    shutil.copytree(lora_folder, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConversionError, match=reason):
        export_adapter(folder, fp32_dir, "bad")


def test_an_adapter_for_other_layers_is_refused(fp32_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from tests.conftest import tiny_llama

    folder = tmp_path / "tiny"
    get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(folder)
    with pytest.raises(ConversionError, match="cannot take"):
        export_adapter(folder, fp32_dir, "tiny")


def test_auto_picks_onnx_on_a_cpu_and_transformers_on_a_gpu_or_for_int8():
    assert resolve_engine("auto", "cpu") == "onnx"
    assert resolve_engine("auto", "cuda") == "torch"
    assert resolve_engine("auto", "cpu", quantize="int8") == "torch"
    assert resolve_engine("torch", "cpu") == "torch"


def test_the_app_on_the_onnx_engine_routes_adapters_and_drops_removed_ones(make_bot, tmp_path, lora_folder):
    adapters = tmp_path / "adapters"
    shutil.copytree(lora_folder, adapters / "demo")
    shutil.copytree(lora_folder, adapters / "broken")
    (adapters / "broken" / "adapter_config.json").write_text(
        json.dumps({**json.loads((lora_folder / "adapter_config.json").read_text()), "use_dora": True})
    )
    bot = make_bot(adapters_dir=adapters, engine="onnx", onnx_precision="int4", max_new_tokens=12)
    info = bot.info()
    assert info["base_model"]["engine"] == "onnx"
    assert bot.generator.base.model.device.type == "meta"  # no transformers weights held in memory
    status = {row["name"]: row["status"] for row in info["adapters"]}
    assert status["demo"] == "ready" and "DoRA" in status["broken"]
    base = bot.ask("Describe the sea.", use_retrieval=False)
    demo = bot.ask("Describe the sea.", adapter="demo", use_retrieval=False)
    assert base.answer != demo.answer
    assert demo.timings["decode_tokens_per_s"] > 0
    assert bot.generator.engine.loaded_adapters == {"demo"}
    shutil.rmtree(adapters / "demo")
    bot.adapters.refresh()
    assert bot.generator.engine.loaded_adapters == set()


def test_int4_answers_stay_close_to_transformers(make_bot):
    """Quantisation costs some agreement, not the answer: greedy tokens mostly match fp32 transformers."""
    params = GenerationParams(max_new_tokens=24)
    messages = [{"role": "user", "content": "What is a balance sheet?"}]
    onnx = make_bot(engine="onnx", onnx_precision="int4").generator.complete(messages, params)
    reference = make_bot(engine="torch", dtype="float32").generator.complete(messages, params)
    assert onnx.split()[:4] == reference.split()[:4]
