"""Opt-in int8 weights and the embedding precision setting."""

import shutil

import pytest
import torch

from chatbot.models.quantize import Int8Linear, quantize_int8
from chatbot.vocabulary import GenerationParams
from tests.conftest import tiny_llama


def test_int8_linear_is_close_to_the_float_layer_for_decode_rows_and_long_prompts():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=True).to(torch.bfloat16)
    quantised = Int8Linear(linear)
    assert quantised.weight.dtype == torch.int8 and isinstance(quantised, torch.nn.Linear)
    for rows in (1, 7, 300):  # the int8 kernel, then the dequantised path of a long prompt
        x = torch.randn(rows, 64, dtype=torch.bfloat16)
        exact, got = linear(x).float(), quantised(x).float()
        assert got.shape == exact.shape
        assert (got - exact).abs().max() < 0.05 * exact.abs().max()


def test_quantize_int8_replaces_every_linear_and_unties_the_head():
    model = tiny_llama(tie_word_embeddings=True).to(torch.bfloat16)
    ids = torch.randint(0, 256, (1, 12))
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        assert quantize_int8(model) == 2 * 7 + 1
        after = model(input_ids=ids).logits
    assert all(type(m) is not torch.nn.Linear for m in model.modules())
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16  # the embeddings keep their precision
    assert (before.argmax(-1) == after.argmax(-1)).float().mean() > 0.8


def test_an_int8_model_serves_adapters_and_batches_without_changing_answers(make_bot, tmp_path, lora_folder):
    adapters = tmp_path / "adapters"
    shutil.copytree(lora_folder, adapters / "demo")
    bot = make_bot(adapters_dir=adapters, quantize="int8")
    generator = bot.generator
    assert isinstance(generator.base.model.model.layers[0].mlp.down_proj, Int8Linear)
    assert bot.info().base_model.quantize == "int8"
    lora = generator.model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["demo"]
    assert lora.weight.dtype == generator.base.dtype  # saved in fp32, computed in the model's dtype

    params = GenerationParams(max_new_tokens=24)
    chats = [[{"role": "user", "content": question}] for question in ("Describe the sea.", "Name three colors.")]
    prompts = [generator.prompt_ids(chat) for chat in chats]
    alone = [
        list(generator.engine.submit(p, a, params).token_ids()) for p, a in zip(prompts, ("demo", "base"), strict=True)
    ]
    assert alone[0] and alone[1] and alone[0] != alone[1]
    with generator.exclusive:
        requests = [generator.engine.submit(p, a, params) for p, a in zip(prompts, ("demo", "base"), strict=True)]
    assert [list(r.token_ids()) for r in requests] == alone


@pytest.mark.parametrize("setting, expected", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_the_embedding_model_loads_in_the_configured_precision(setting, expected):
    from chatbot.models.embeddings import load_embeddings

    embeddings = load_embeddings("embedded", "cpu", setting)
    assert next(embeddings._client.parameters()).dtype == expected
    vector = embeddings.embed_query("refresh the knowledge base")
    assert len(vector) == 384 and abs(sum(v * v for v in vector) - 1.0) < 1e-2


def test_packed_linear_gives_the_dense_layers_results_bit_for_bit():
    from chatbot.models.packed import PackedLinear, packing_works

    dtype = torch.bfloat16  # bf16 products run on oneDNN either way; fp32 ones would change kernel (MKL)
    if not packing_works(dtype):
        pytest.skip("this PyTorch build cannot pack weights for oneDNN")
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48).to(dtype)
    packed = PackedLinear(linear)
    with torch.inference_mode():
        for shape in ((1, 64), (3, 1, 64), (1, 500, 64)):
            x = torch.randn(*shape, dtype=dtype)
            assert torch.equal(packed(x), linear(x))


def test_the_served_model_is_prepacked_by_default_and_answers_like_the_dense_one(make_bot):
    packed_bot = make_bot(max_new_tokens=16)
    dense_bot = make_bot(max_new_tokens=16, prepack=False)
    info = packed_bot.info().base_model
    if not info.prepacked:
        pytest.skip("this PyTorch build cannot pack weights for oneDNN")
    assert dense_bot.info().base_model.prepacked is False
    question = "Describe the sea."
    assert packed_bot.ask(question, use_retrieval=False).answer == dense_bot.ask(question, use_retrieval=False).answer


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_an_exact_packed_linear_gives_a_row_the_same_bits_whatever_its_batch(dtype):
    """The exact batches' layer: row 0 alone and among up to 15 others gets identical bits.

    Eager fp32 products (MKL) fail this on the AVX-512 machines (1 row, 2-3 rows and 4+ rows take
    three kernels), and bf16 ones do on real activations there (1 row against 2+).
    """
    from chatbot.models.packed import EXACT_ROWS, PackedLinear, packing_works

    if not packing_works(dtype, EXACT_ROWS):
        pytest.skip("this PyTorch build cannot pack weights for oneDNN")
    torch.manual_seed(0)
    linear = torch.nn.Linear(1536, 576, bias=False).to(dtype)
    exact = PackedLinear(linear, EXACT_ROWS)
    rows = torch.randn(16, 1, 1536, dtype=dtype)
    with torch.inference_mode():
        alone = exact(rows[:1])
        assert alone.shape == (1, 1, 576)
        for count in range(2, 17):
            assert torch.equal(exact(rows[:count])[:1], alone), f"{count} rows"
        assert torch.allclose(alone.float(), linear(rows[:1]).float(), rtol=2e-2, atol=2e-2)
