"""Continuous batching: requests decoded together give exactly what they give alone."""

import shutil
import threading
import time

import pytest
import torch
from transformers import DynamicCache

from chatbot.engine.kv_cache import BatchCache, PrefixStore
from chatbot.engine.request import repeats_itself
from chatbot.vocabulary import GenerationParams

SYSTEM = "You are a careful assistant. Answer in one short paragraph."
QUESTIONS = [
    "Describe the sea.",
    "What is a balance sheet and why do companies publish one every quarter?",
    "Name three colors.",
    "Explain how a bicycle gear works, step by step, for a child who has never ridden one.",
]


def _exact_bot(make_bot, tmp_path, lora_folder, other_lora_folder, engine: str, dtype: str = "auto"):
    adapters = tmp_path / "adapters"
    shutil.copytree(lora_folder, adapters / "demo")
    shutil.copytree(other_lora_folder, adapters / "other")
    bot = make_bot(adapters_dir=adapters, engine=engine, exact_batches=True, dtype=dtype)
    assert bot.generator.exact_batches  # every CPU this runs on keeps the promise (chatbot info says so)
    return bot


@pytest.fixture(params=["torch", "onnx"])
def any_bot(request, make_bot, tmp_path, lora_folder, other_lora_folder):
    """A bot with two adapters, on each engine: the engines keep the same promises."""
    return _exact_bot(make_bot, tmp_path, lora_folder, other_lora_folder, request.param)


@pytest.fixture(params=["torch", "torch-float32", "onnx"])
def any_exact_bot(request, make_bot, tmp_path, lora_folder, other_lora_folder):
    """As ``any_bot``, and the transformers engine in fp32 too (other kernels: MKL's, oneDNN's)."""
    engine, _, dtype = request.param.partition("-")
    return _exact_bot(make_bot, tmp_path, lora_folder, other_lora_folder, engine, dtype or "auto")


@pytest.fixture
def bot(torch_bot):
    """The transformers engine (its prefix store and PEFT routing are its own)."""
    return torch_bot


def prompt(generator, question: str, system: str = SYSTEM) -> tuple[list[int], int]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    ids = generator.prompt_ids(messages)
    return ids, generator.prefix_length(messages, ids)


def run_alone(engine, ids, prefix, adapter, params) -> list[int]:
    return list(engine.submit(ids, adapter, params, prefix).token_ids())


def submit_together(generator, jobs):
    """Submit every job before the engine can take the first, so all of them share the batch."""
    with generator.exclusive:
        return [generator.engine.submit(ids, adapter, params, prefix) for ids, prefix, adapter, params in jobs]


def test_greedy_and_seeded_outputs_alone_equal_outputs_inside_a_mixed_batch(any_exact_bot):
    generator = any_exact_bot.generator
    engine = generator.engine
    greedy_long = GenerationParams(max_new_tokens=40)
    greedy_short = GenerationParams(max_new_tokens=12)  # leaves the batch early
    sampled = GenerationParams(max_new_tokens=24, temperature=0.9, top_p=0.9, seed=7)
    jobs = [
        (*prompt(generator, QUESTIONS[0]), "demo", greedy_long),
        (*prompt(generator, QUESTIONS[1]), "other", greedy_long),
        (*prompt(generator, QUESTIONS[2]), "base", greedy_short),
        (*prompt(generator, QUESTIONS[3]), "demo", sampled),
        (*prompt(generator, QUESTIONS[1], system="Reply like a pirate."), "base", greedy_long),
        (*prompt(generator, " ".join(QUESTIONS * 4)), "other", greedy_long),  # long: made the active adapter
    ]
    alone = [run_alone(engine, *job) for job in jobs]
    if generator.injects_adapters:
        assert generator.model.active_adapter == "other"
    assert len({tuple(tokens) for tokens in alone}) == len(jobs)
    assert len(alone[2]) < min(len(alone[0]), len(alone[1]))  # so one row leaves mid-batch

    engine.largest_batch = 0
    requests = submit_together(generator, jobs)
    together = [list(request.token_ids()) for request in requests]
    assert engine.largest_batch == len(jobs)  # they really were decoded as one batch
    assert together == alone


def test_the_generator_streams_the_same_text_for_concurrent_users(any_bot):
    generator = any_bot.generator
    params = GenerationParams(max_new_tokens=24)
    cases = [(QUESTIONS[0], "demo"), (QUESTIONS[2], "other"), (QUESTIONS[1], "base")]

    def messages(question):
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]

    alone = [generator.complete(messages(q), params, a) for q, a in cases]
    results: dict[int, list[str]] = {}

    def user(index: int) -> None:
        question, adapter = cases[index]
        results[index] = list(generator.stream(messages(question), params, adapter))

    generator.engine.largest_batch = 0
    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ["".join(results[i]) for i in range(len(cases))] == alone
    assert all(len(results[i]) > 3 for i in results)  # streamed in pieces, not at the end
    assert generator.engine.largest_batch >= 2


def test_a_cancelled_or_failing_request_leaves_the_others_untouched(any_bot):
    generator = any_bot.generator
    engine = generator.engine
    params = GenerationParams(max_new_tokens=20)
    ids, prefix = prompt(generator, QUESTIONS[0])
    expected = run_alone(engine, ids, prefix, "demo", params)

    long_ids, long_prefix = prompt(generator, QUESTIONS[3])
    jobs = [
        (long_ids, long_prefix, "base", GenerationParams(max_new_tokens=200)),
        (ids, prefix, "missing", params),
        (ids, prefix, "demo", params),
    ]
    cancelled, unknown, kept = submit_together(generator, jobs)
    stream = cancelled.token_ids()
    next(stream)
    cancelled.cancel()
    assert len(list(stream)) < 20  # stops within a step or two
    with pytest.raises(ValueError, match="'missing' is not loaded"):
        list(unknown.token_ids())
    assert list(kept.token_ids()) == expected


def test_removing_an_adapter_fails_only_its_running_requests(any_bot):
    generator = any_bot.generator
    ids, prefix = prompt(generator, QUESTIONS[1])
    params = GenerationParams(max_new_tokens=60)
    expected = run_alone(generator.engine, ids, prefix, "base", params)
    doomed, kept = submit_together(generator, [(ids, prefix, "other", params), (ids, prefix, "base", params)])
    next(doomed.token_ids())
    if generator.injects_adapters:
        with generator.exclusive:
            generator.model.delete_adapter("other")
            generator.forget_adapter("other")
    else:
        generator.engine.unload_adapter("other")
    with pytest.raises(ValueError, match="removed while generating"):
        list(doomed.token_ids())
    assert list(kept.token_ids()) == expected


def test_the_system_prompt_prefix_is_computed_once_per_adapter(bot):
    generator = bot.generator
    engine = generator.engine
    params = GenerationParams(max_new_tokens=16)
    ids, prefix = prompt(generator, QUESTIONS[2], system="You are the prefix test. Be brief.")
    assert 10 < prefix < len(ids)
    hits, misses = engine.prefixes.hits, engine.prefixes.misses
    first = run_alone(engine, ids, prefix, "demo", params)
    second = run_alone(engine, ids, prefix, "demo", params)
    assert (engine.prefixes.hits - hits, engine.prefixes.misses - misses) == (1, 1)
    other_ids, _ = prompt(generator, QUESTIONS[0], system="You are the prefix test. Be brief.")
    run_alone(engine, other_ids, prefix, "demo", params)
    run_alone(engine, ids, prefix, "other", params)  # another adapter: its own key/values
    assert (engine.prefixes.hits - hits, engine.prefixes.misses - misses) == (2, 2)
    engine.forget_adapter("demo")
    cold_again = run_alone(engine, ids, prefix, "demo", params)
    assert first == second == cold_again  # a warm or cold prefix store never changes the answer


def test_prefix_length_is_zero_without_a_leading_system_message(bot):
    generator = bot.generator
    messages = [{"role": "user", "content": "hi"}]
    ids = generator.prompt_ids(messages)
    assert generator.prefix_length(messages, ids) == 0


def _cache(length: int, fill: float) -> DynamicCache:
    keys = torch.full((1, 2, length, 4), fill)
    return DynamicCache(ddp_cache_data=[(keys, keys + 100)])


def test_batch_cache_left_pads_rows_and_trims_unneeded_padding():
    batch = BatchCache()
    batch.add(_cache(3, 1.0), torch.device("cpu"))
    batch.add(_cache(5, 2.0), torch.device("cpu"))
    assert batch.mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    keys = batch.cache.layers[0].keys
    assert keys.shape == (2, 2, 5, 4)
    assert keys[0, :, :2].abs().sum() == 0 and (keys[0, :, 2:] == 1).all() and (keys[1] == 2).all()
    assert (batch.cache.layers[0].values[1] == 102).all()
    batch.extend_mask()
    assert batch.mask.shape == (2, 6)
    batch.keep([0])
    assert batch.mask.tolist() == [[1, 1, 1, 1]]  # the two padding columns went with the long row
    assert batch.cache.layers[0].keys.shape == (1, 2, 3, 4)
    batch.keep([])
    assert batch.rows == 0


def test_prefix_store_evicts_least_recently_used_and_forgets_an_adapter():
    store = PrefixStore(capacity=2)
    store.put("a", (1,), [])
    store.put("b", (1,), [])
    assert store.get("a", (1,)) == []
    store.put("c", (1,), [])  # evicts b, the least recently used
    assert store.get("b", (1,)) is None and store.get("a", (1,)) == []
    store.forget("a")
    assert store.get("a", (1,)) is None and store.get("c", (1,)) == []


def test_repeats_itself_detects_a_verbatim_loop_only():
    varied = list(range(100))
    assert not repeats_itself(varied, window=4)
    assert repeats_itself([9, 8, 1, 2, 3, 4, 7, 1, 2, 3, 4], window=4)
    assert not repeats_itself([1, 2, 3, 4, 1, 2, 3], window=4)  # too short to judge


def test_tasks_run_on_the_engine_thread_between_steps_while_requests_decode(any_bot):
    generator = any_bot.generator
    engine = generator.engine
    ids, prefix = prompt(generator, QUESTIONS[3])
    params = GenerationParams(max_new_tokens=30)
    expected = run_alone(engine, ids, prefix, "demo", params)
    request = engine.submit(ids, "demo", params, prefix)
    threads = []
    for _ in range(50):  # many small tasks racing the decode loop (none may be lost)
        threads.append(engine.call(lambda: threading.current_thread().name))
    assert set(threads) == {engine._worker.name}
    assert list(request.token_ids()) == expected
    with pytest.raises(ZeroDivisionError):
        engine.call(lambda: 1 / 0)


def test_embedding_runs_on_the_engine_thread_once_the_model_is_loaded(bot, monkeypatch):
    from langchain_huggingface import HuggingFaceEmbeddings

    threads = []
    real = HuggingFaceEmbeddings.embed_documents

    def spy(self, texts):
        threads.append(threading.current_thread().name)
        return real(self, texts)

    monkeypatch.setattr(HuggingFaceEmbeddings, "embed_documents", spy)
    bot.load()
    vectors = bot.embeddings.embed_documents([f"chunk {i}" for i in range(70)])  # three tasks of <= 32
    assert len(vectors) == 70 and threads == ["batch-engine"] * 3


def test_chunk_bounds_end_the_prefix_and_cap_every_chunk():
    from chatbot.engine.request import chunk_bounds

    assert chunk_bounds(10, 0, 4) == [4, 8, 10]
    assert chunk_bounds(10, 6, 4) == [4, 6, 10]  # the prefix ends a chunk, whatever the chunk size
    assert chunk_bounds(20, 6, 4) == [4, 6, 10, 14, 18, 20]
    assert chunk_bounds(5, 5, 4) == [4, 5]  # a prompt that is all prefix is not split at it
    assert chunk_bounds(3, 0, 256) == [3]


def test_a_long_prompt_arriving_mid_batch_neither_stalls_nor_changes_the_others(any_bot):
    """Chunked prefill: the running row keeps decoding while a long prompt is read, token for token the same."""
    generator = any_bot.generator
    engine = generator.engine
    params = GenerationParams(max_new_tokens=40)
    ids, prefix = prompt(generator, QUESTIONS[1])
    long_ids, long_prefix = prompt(generator, " ".join(QUESTIONS * 16))  # ~700 tokens
    assert len(long_ids) > 600
    chunk, engine.prefill_chunk = engine.prefill_chunk, 64
    try:
        expected = run_alone(engine, ids, prefix, "demo", params)
        expected_long = run_alone(engine, long_ids, long_prefix, "other", GenerationParams(max_new_tokens=8))
        running = engine.submit(ids, "demo", params, prefix)
        stream = running.token_ids()
        seen = [next(stream) for _ in range(3)]
        late = engine.submit(long_ids, "other", GenerationParams(max_new_tokens=8), long_prefix)
        first_late = next(late.token_ids())
        during = len(running.generated) - len(seen)  # tokens the running row got while the long prompt was read
        rest = list(stream)
        late_tokens = [first_late, *late.token_ids()]
    finally:
        engine.prefill_chunk = chunk
    assert seen + rest == expected and late_tokens == expected_long
    assert during >= 5  # ~10 chunks of 64 tokens, one decode step after each


def test_a_cancelled_reader_returns_at_once_and_never_waits_on_the_engine_thread(any_bot):
    generator = any_bot.generator
    engine = generator.engine
    ids, prefix = prompt(generator, QUESTIONS[3])
    request = engine.submit(ids, "base", GenerationParams(max_new_tokens=200), prefix)
    stream = request.token_ids()
    next(stream)
    threading.Timer(0.2, request.cancel).start()
    left = list(stream)  # returns on cancel, not after 200 tokens
    assert len(request.generated) < 100 and len(left) < 100
    # a reader finalised on the engine's own thread (garbage collection can run anywhere) must not wait
    # for tokens that only that thread makes: before the fix this deadlocked the engine
    other = engine.submit(ids, "base", GenerationParams(max_new_tokens=200), prefix)
    finished = threading.Event()
    worker = threading.Thread(target=lambda: (engine.call(lambda: list(other.token_ids())), finished.set()))
    worker.start()
    worker.join(timeout=30)
    assert finished.is_set() and other.cancelled.is_set()
    assert list(engine.submit(ids, "base", GenerationParams(max_new_tokens=4), prefix).token_ids())  # still serving


def test_closing_the_chain_stream_early_cancels_its_generation_on_any_thread(make_bot, user_guide):
    """Closing an abandoned answer costs nothing: no drain to the last token, not even on the engine's thread."""
    bot = make_bot(max_new_tokens=200)
    bot.sync()
    engine = bot.generator.engine
    for closer in (lambda close: close(), engine.call):  # the reader's thread, then the engine's own thread
        events = bot.stream("How do I refresh the knowledge base?", adapter="base")
        assert isinstance(next(events), str)
        done = threading.Event()
        worker = threading.Thread(target=lambda e=events, c=closer, d=done: (c(e.close), d.set()))
        worker.start()
        worker.join(timeout=30)
        assert done.is_set()
        deadline = time.monotonic() + 10
        while engine.busy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.busy == 0


def test_closing_the_engine_fails_every_open_request_and_refuses_new_ones():
    from chatbot.engine.batching import BatchEngine
    from chatbot.engine.request import EngineClosedError
    from tests.conftest import tiny_llama

    model = tiny_llama().eval()
    engine = BatchEngine(lambda: model, threading.Lock(), torch.device("cpu"), stop_ids=set(), max_batch=2)
    params = GenerationParams(max_new_tokens=5000)
    requests = [engine.submit([1, 2, 3, 4], "base", params) for _ in range(4)]  # two decode, two wait
    next(requests[0].token_ids())
    engine.close()
    for request in requests:
        with pytest.raises(EngineClosedError):
            list(request.token_ids())
    with pytest.raises(EngineClosedError):
        engine.submit([1, 2], "base", params)
