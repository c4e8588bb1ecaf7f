"""The batching engine on every device present (CPU here; CUDA where a GPU is): a small random Llama
with two LoRA adapters, so it runs anywhere without weights. Self-contained (no conftest), so it
can run on a machine that has only torch, transformers and PEFT: ``pytest --noconftest`` there."""

import threading
import time

import pytest
import torch

from chatbot.adapters.lora import PeftRouting
from chatbot.engine.batching import BatchEngine
from chatbot.engine.request import EngineClosedError
from chatbot.engine.row_attention import use_row_attention
from chatbot.vocabulary import GenerationParams

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CHUNK = 16


def tiny_peft_model(device: str):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=256, attn_implementation="sdpa",
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(device).eval()
    use_row_attention(model)
    lora = {"r": 8, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False}
    peft = get_peft_model(model, LoraConfig(**lora), adapter_name="alpha")
    peft.add_adapter("beta", LoraConfig(**lora))
    return peft.eval()


@pytest.fixture(scope="module", params=DEVICES)
def engine(request):
    model = tiny_peft_model(request.param)
    engine = BatchEngine(lambda: model, threading.Lock(), torch.device(request.param), set(), max_batch=8,
                         prefill_chunk=CHUNK)  # fmt: skip
    engine.routing = PeftRouting()
    yield engine
    engine.close()


def prompt(seed: int, length: int) -> list[int]:
    return torch.randint(3, 256, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_rows_decode_the_same_alone_and_in_a_mixed_batch_with_chunked_prefill(engine):
    greedy, sampled = GenerationParams(max_new_tokens=24), GenerationParams(24, temperature=1.0, top_p=1.0, seed=3)
    jobs = [
        (prompt(1, 10), "alpha", greedy),
        (prompt(2, 70), "beta", greedy),  # five chunks
        (prompt(3, 33), "base", greedy),
        (prompt(4, 50), "alpha", sampled),
        (prompt(5, 17), "beta", GenerationParams(max_new_tokens=6)),  # leaves early
    ]
    alone = [list(engine.submit(ids, adapter, params, prefix_length=5).token_ids()) for ids, adapter, params in jobs]
    assert all(len(tokens) == params.max_new_tokens for tokens, (_, _, params) in zip(alone, jobs, strict=True))
    engine.largest_batch = 0
    requests = [engine.submit(ids, adapter, params, prefix_length=5) for ids, adapter, params in jobs]
    together = [list(request.token_ids()) for request in requests]
    assert engine.largest_batch >= 3
    assert together == alone


def test_a_cancelled_request_stops_and_the_engine_serves_on(engine):
    params = GenerationParams(max_new_tokens=4000, temperature=1.0, top_p=1.0, seed=1)  # no end-of-text, no loop
    before = engine.cancelled_total
    request = engine.submit(prompt(7, 40), "alpha", params)
    stream = request.token_ids()
    next(stream)
    request.cancel()
    assert list(stream) == []  # the reader returns at once; the engine drops the row at its next step
    deadline = time.monotonic() + 10
    while engine.cancelled_total < before + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.cancelled_total == before + 1 and len(request.generated) < 4000
    waiting = threading.Event()
    waiting.set()  # a reader already gone before its request reached the batch
    assert list(engine.submit(prompt(8, 40), "beta", params, cancelled=waiting).token_ids()) == []
    while engine.cancelled_total < before + 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.cancelled_total == before + 2
    finished = engine.finished_total
    greedy = engine.submit(prompt(9, 20), "base", GenerationParams(max_new_tokens=5))
    tokens = list(greedy.token_ids())
    assert len(tokens) == 5
    # each picked token's log-probability is kept; greedy picks the likeliest, the first of the candidates
    assert len(greedy.logprobs) == 5 and all(lp <= 0.0 for lp in greedy.logprobs)
    assert greedy.first_choices[0] == (tokens[0], pytest.approx(greedy.logprobs[0], abs=1e-5))
    assert [lp for _, lp in greedy.first_choices] == sorted((lp for _, lp in greedy.first_choices), reverse=True)
    assert (engine.cancelled_total, engine.finished_total) == (before + 2, finished + 1)  # ended by its length
    assert greedy.ended_by == "length"


def test_closing_fails_open_requests_by_name(engine):
    params = GenerationParams(max_new_tokens=4000, temperature=1.0, top_p=1.0, seed=2)
    requests = [engine.submit(prompt(n, 30), "alpha", params) for n in range(10)]  # eight decode, two wait
    next(requests[0].token_ids())
    engine.close()
    for request in requests:
        with pytest.raises(EngineClosedError):
            list(request.token_ids())
