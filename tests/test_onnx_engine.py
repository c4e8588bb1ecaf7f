"""The ONNX engine: conversion of the model and of adapters, per-row adapters in one run, the app on it."""

import json
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from chatbot.app.runtime import resolve_engine
from chatbot.engine.onnx.adapter_export import export_adapter
from chatbot.engine.onnx.convert import ConversionError, convert_model, lora_inputs
from chatbot.engine.onnx.runtime import Decoder
from chatbot.models.base import load_base_model
from chatbot.vocabulary import GenerationParams
from tests.conftest import MODEL_CACHE, random_lora

pytest.importorskip("onnxruntime_genai")  # its model builder converts the model


@pytest.fixture(scope="session")
def skeleton():
    return load_base_model("embedded", MODEL_CACHE, "cpu", "float32", weights=False)


@pytest.fixture(scope="session")
def fp32_dir(skeleton):
    return convert_model(skeleton.folder, skeleton.model, skeleton.fingerprint, MODEL_CACHE, "fp32")


def decoder_logits(decoder, rows):
    """Logits of the decode step after each row's prompt: rows (token ids, adapter) decoded together."""
    pool = decoder.pool
    for index, (ids, adapter) in enumerate(rows):
        pool.add_row(len(ids) + 4)
        decoder.run(index, np.asarray([ids[:-1]]), (adapter,))  # each prompt alone, as the engine does
    logits = decoder.run(0, np.asarray([[ids[-1]] for ids, _ in rows]), tuple(a for _, a in rows), pad=True)
    while pool.rows:
        pool.remove_row(0)
    return logits


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
    decoder = Decoder(fp32_dir, threads=2, max_rows=4)
    decoder.load_adapter("demo", export_adapter(lora_folder, fp32_dir, "demo"))
    logits = decoder_logits(decoder, [(ids, "base"), (ids, "demo")])  # one run, two adapters
    assert np.abs(logits[0] - plain).max() < 1e-3
    assert np.abs(logits[1] - tuned).max() < 1e-3


def test_rows_on_different_adapters_in_one_run_get_what_they_get_alone(skeleton, fp32_dir, lora_folder, tmp_path):
    """Stacked per-row LoRA inputs (ranks padded with zeros, base rows zero) change no row's logits."""
    folder = tmp_path / "rank4"
    shutil.copytree(lora_folder, folder)
    random_lora(folder, seed=3, rank=4)
    decoder = Decoder(fp32_dir, threads=2, max_rows=4)
    decoder.load_adapter("demo", export_adapter(lora_folder, fp32_dir, "demo"))
    decoder.load_adapter("rank4", export_adapter(folder, fp32_dir, "rank4"))
    texts = ["The balance sheet of a company shows", "Name three colors.", "A bicycle gear works by"]
    rows = [
        (skeleton.tokenizer(text, add_special_tokens=False)["input_ids"], adapter)
        for text, adapter in zip(texts, ["demo", "base", "rank4"], strict=True)
    ]
    together = decoder_logits(decoder, rows)
    alone = [decoder_logits(decoder, [row])[0] for row in rows]
    for mixed, single in zip(together, alone, strict=True):
        assert np.array_equal(mixed, single)
    assert np.abs(alone[0] - alone[2]).max() > 0.1  # the adapters differ


def test_the_engine_thread_lets_other_threads_run_while_it_reads_a_prompt(fp32_dir):
    """onnxruntime must release the GIL while it computes, or a long prompt freezes the server.

    This thread notes when it gets to run while another thread reads one long prompt. With the
    GIL held through the call, the longest pause would be nearly the whole call; released, this
    thread keeps running throughout (a ratio within one run, whatever the machine's speed).
    """
    decoder = Decoder(fp32_dir, threads=2, max_rows=1)
    decoder.pool.add_row(1100)
    prompt = np.arange(1000, 2024)[None, :]
    span: list[float] = []

    def read_prompt():
        span.append(time.perf_counter())
        decoder.run(0, prompt, ("base",))
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


def test_the_pool_keeps_rows_in_order_when_one_leaves(fp32_dir):
    decoder = Decoder(fp32_dir, threads=2, max_rows=4)
    pool = decoder.pool
    for tokens in (10, 300, 20):
        pool.add_row(tokens)
    assert pool.capacity == (4, 512)  # rows double, tokens in steps of 256
    for index in range(3):
        decoder.run(index, np.arange(5 + index)[None, :] + 100, ("base",))
    kept = [array[1:3].copy() for array in pool.arrays]
    pool.remove_row(0)
    assert pool.lengths == [6, 7]
    for before, array in zip(kept, pool.arrays, strict=True):
        assert np.array_equal(array[:2, :, :7], before[:, :, :7])
    pool.remove_row(0)
    pool.remove_row(0)
    assert pool.arrays == []  # an empty pool gives its memory back


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
    assert info.base_model.engine == "onnx"
    assert bot.generator.base.model.device.type == "meta"  # no transformers weights held in memory
    status = {row.name: row.status for row in info.adapters}
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


def test_a_padding_row_leaves_the_prompt_being_read_in_that_row_intact(skeleton, fp32_dir):
    """A lone row's exact decode step runs beside the next row, which may be half-way through a prompt."""
    decoder = Decoder(fp32_dir, threads=2, max_rows=4)
    pool = decoder.pool
    first = skeleton.tokenizer("Name three colors.", add_special_tokens=False)["input_ids"]
    second = skeleton.tokenizer("The balance sheet of a company shows", add_special_tokens=False)["input_ids"]
    expected = decoder_logits(decoder, [(second, "base")])[0]
    pool.add_row(len(first) + 4)
    pool.add_row(len(second) + 4)
    decoder.run(0, np.asarray([first]), ("base",))
    decoder.run(1, np.asarray([second[:3]]), ("base",))  # row 1: its prompt's first chunk
    decoder.run(0, np.asarray([[first[-1]]]), ("base",), pad=True)  # pads with row 1
    assert pool.lengths[1] == 3
    decoder.run(1, np.asarray([second[3:-1]]), ("base",))
    logits = decoder.run(0, np.asarray([[first[-1]], [second[-1]]]), ("base", "base"))
    assert np.array_equal(logits[1], expected)


def test_without_padding_a_lone_row_differs_only_in_the_last_bits(skeleton, fp32_dir):
    """The trade-off ``exact_batches`` buys back: one row alone takes another kernel (a GEMV)."""
    ids = skeleton.tokenizer("The balance sheet of a company shows", add_special_tokens=False)["input_ids"]
    decoder = Decoder(fp32_dir, threads=2, max_rows=2)
    padded = decoder_logits(decoder, [(ids, "base")])[0]
    decoder.pool.add_row(len(ids) + 4)
    decoder.run(0, np.asarray([ids[:-1]]), ("base",))
    lone = decoder.run(0, np.asarray([ids[-1:]]), ("base",))[0]
    assert np.abs(lone - padded).max() < 1e-3
    assert lone.argmax() == padded.argmax()


def test_an_adapter_file_of_the_wrong_shapes_is_refused_with_the_input_named(fp32_dir, tmp_path):
    import onnxruntime

    decoder = Decoder(fp32_dir, threads=2, max_rows=2)
    name = next(iter(decoder.lora_shapes))
    for shape in [(7, 4), (576, 4, 1)]:  # A must have 576 rows, and two dimensions
        adapter = onnxruntime.AdapterFormat()
        value = np.zeros(shape, np.float32)
        adapter.set_parameters({name: onnxruntime.OrtValue.ortvalue_from_numpy(value)})
        path = tmp_path / f"bad-{len(shape)}.onnx_adapter"
        adapter.export_adapter(str(path))
        with pytest.raises(ValueError, match="cannot take"):
            decoder.load_adapter("bad", path)
    assert decoder.adapters == {}


def test_runs_of_base_rows_take_the_graph_without_lora_branches_and_give_the_same_logits(
    skeleton, fp32_dir, monkeypatch
):
    import onnx

    from chatbot.engine.onnx import runtime
    from chatbot.engine.onnx.convert import PLAIN_FILE

    graph = onnx.load(str(fp32_dir / PLAIN_FILE), load_external_data=False).graph
    assert not any(".lora_" in value.name for value in graph.input)
    assert not any("lora" in node.name for node in graph.node)
    texts = ["The balance sheet of a company shows", "Name three colors."]
    rows = [(skeleton.tokenizer(text, add_special_tokens=False)["input_ids"], "base") for text in texts]
    fast = Decoder(fp32_dir, threads=2, max_rows=4)
    monkeypatch.setattr(runtime, "PLAIN_GRAPH_MAX_BYTES", 1000)  # weights "too large" for a second copy
    slow = Decoder(fp32_dir, threads=2, max_rows=4)
    assert fast.plain is not None and slow.plain is None  # every run on the graph with LoRA branches
    assert np.array_equal(decoder_logits(fast, rows), decoder_logits(slow, rows))
    assert np.array_equal(decoder_logits(fast, rows[:1]), decoder_logits(slow, rows[:1]))
    assert set(fast._bound) == {True} and set(slow._bound) == {False}  # the plain graph did run
