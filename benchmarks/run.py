"""Speed benchmark: the figures of the speed issue in one run, as medians over repeats.

    .venv/bin/python benchmarks/run.py [--repeats 3] [--out bench-results/speed.json]
    .venv/bin/python benchmarks/run.py --model .chatbot/bench-models/qwen2.5-1.5b --quantize int8 --repeats 1

Prints and writes (JSON, to compare over time): start-up time and peak RSS of a fresh server
process (unchanged-folder sync, model and shipped adapters loaded, one answer); time to first
token of a RAG turn (the chain's real prompt, ~1,000 tokens), both end to end from the question
and for the prompt alone; decode tokens/s at batch 1 with an adapter; end-to-end ``ask``
latency; aggregate tokens/s and p50/p95 latency of 1, 4 and 8 concurrent requests on mixed
adapters; what switching adapter between requests adds; retrieval p50/p95 (query embedding +
search, vector and hybrid) over 10,000 chunks; embedding throughput against fp32
sentence-transformers; and, when ``llama-cpp-python`` is installed, the same GGUF through
llama.cpp with the ratios; when ``make llama-server`` built llama.cpp's server, the same loads
(batch-1 decode with and without an adapter, the RAG turn, 1/4/8 concurrent users on mixed
adapters) through it, with the ratios (benchmarks/llama_server.py).

``--model FOLDER`` runs the same loads on another base model (a random-weight one of a public
shape from benchmarks/model_shapes.py: speed does not depend on the values) with two random LoRA
adapters (``FOLDER-adapters``, written when missing); llama.cpp's server gets the same weights
converted by llama.cpp's own converter to Q8_0 and the same adapters. The retrieval and embedding
figures do not depend on the model and are left out there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from figures import publish  # benchmarks/figures.py, next to this script
from llama_server import convert_model, find_server, source_of
from llama_server import figures as llama_server_figures
from model_shapes import adapters as random_adapters

REPO = Path(__file__).resolve().parents[1]
QUESTION = "How do I refresh the knowledge base, which file types are indexed and how are they cited?"
QUESTIONS = [
    "How do I refresh the knowledge base?",
    "How do I train a new adapter?",
    "Which file types can I put in the knowledge folder?",
    "How do I switch the domain adapter?",
]
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
RAG_TOKENS = 1000  # the typical RAG turn


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def median(values: list[float], digits: int = 3) -> float:
    return round(statistics.median(values), digits)


def fresh_server(settings_json: str) -> dict:
    """A fresh process: settings, unchanged-folder sync, model + adapters, one short answer."""
    code = f"""
import json, resource, time
started = time.perf_counter()
from chatbot.config import load_settings
from chatbot.app.service import Chatbot
bot = Chatbot(load_settings(**json.loads({settings_json!r})))
bot.load(); bot.sync(); bot.chain
ready = time.perf_counter() - started
bot.ask("How do I train a new adapter?", max_new_tokens=8)
print(json.dumps({{"ready_s": ready, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def synthetic_chunks(count: int, words: list[str], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=150)) for _ in range(count)]


def retrieval_latency(embeddings, words: list[str], folder: Path, count: int = 10_000, queries: int = 60) -> dict:  # noqa: ANN001
    """The app's retriever (query embedding + search) over ``count`` chunks, vector and hybrid.

    The chunks are random text with random unit vectors: this times the search, not its quality.
    """
    from langchain_chroma import Chroma

    from chatbot.knowledge.keywords import KeywordIndex
    from chatbot.knowledge.store import SPACE
    from chatbot.rag.retrieval import ScoredRetriever

    store = Chroma(
        "bench",
        embedding_function=embeddings,
        persist_directory=str(folder / "chroma"),
        collection_metadata={"hnsw:space": SPACE},
    )
    rng = random.Random(1)
    dim = len(embeddings.embed_query("probe"))
    texts = synthetic_chunks(count, words)
    for start in range(0, count, 5000):
        batch = texts[start : start + 5000]
        vectors = [[rng.gauss(0, 1) for _ in range(dim)] for _ in batch]
        store._collection.add(ids=[str(start + i) for i in range(len(batch))], embeddings=vectors, documents=batch)
    keywords = KeywordIndex(folder / "keywords.sqlite", "bench")
    keywords.reconcile(store)
    figures = {}
    for mode, index in (("vector", None), ("hybrid", keywords)):
        retriever = ScoredRetriever(store=store, top_k=5, min_relevance=-1.0, keywords=index)
        samples = []
        for i in range(queries):
            started = time.perf_counter()
            found = retriever.invoke(f"{QUESTIONS[i % len(QUESTIONS)]} {words[i % len(words)]}")
            samples.append(time.perf_counter() - started)
            assert len(found) == 5
        figures[f"retrieval_10k_{mode}_p50_ms"] = round(statistics.median(samples[5:]) * 1000, 1)
        figures[f"retrieval_10k_{mode}_p95_ms"] = round(percentile(samples[5:], 0.95) * 1000, 1)
    return figures


def embedding_rate(embeddings, words: list[str], count: int = 128) -> dict:  # noqa: ANN001
    """Chunks of ~1,000 characters per second: the app's embedder against fp32 sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    from chatbot.models.embeddings import resolve_embedding_folder

    texts = [text[:1000] for text in synthetic_chunks(count, words, seed=2)]
    reference = SentenceTransformer(str(resolve_embedding_folder("embedded")), device="cpu", local_files_only=True)

    def rate(embed) -> float:  # noqa: ANN001
        embed(texts[:16])
        started = time.perf_counter()
        embed(texts)
        return count / (time.perf_counter() - started)

    fp32 = rate(lambda batch: reference.encode(batch, batch_size=32, normalize_embeddings=True))
    app = rate(embeddings.embed_documents)
    return {
        "embed_chunks_per_s_fp32": round(fp32, 1),
        "embed_chunks_per_s_app": round(app, 1),
        "embed_speedup": round(app / fp32, 2),
    }


def concurrent(bot, adapters: list[str], users: int, max_new_tokens: int) -> dict:  # noqa: ANN001
    """``users`` full RAG requests at once, adapters in turn; aggregate tokens/s and latency percentiles."""
    engine = bot.generator.engine
    engine.largest_batch = 0

    def one(i: int) -> tuple[float, int]:
        started = time.perf_counter()
        answer = bot.ask(
            QUESTIONS[i % len(QUESTIONS)], adapter=adapters[i % len(adapters)], max_new_tokens=max_new_tokens
        )
        return time.perf_counter() - started, answer.usage.get("completion_tokens", 0)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=users) as pool:
        results = list(pool.map(one, range(users)))
    wall = time.perf_counter() - started
    latencies = [latency for latency, _ in results]
    return {
        "tokens_per_s": round(sum(tokens for _, tokens in results) / wall, 1),
        "tokens": sum(tokens for _, tokens in results),  # answers may end before max_new_tokens
        "wall_s": round(wall, 2),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(percentile(latencies, 0.95), 2),
        "largest_batch": engine.largest_batch,
    }


def llama_cpp_figures(gguf: str, rag_text: str, story_text: str, tokens: int, threads: int) -> dict:
    """The same GGUF through llama.cpp: prefill of the RAG prompt and greedy decode tokens/s."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=4096, n_threads=threads, n_batch=512, verbose=False)
    rag = llm.tokenize(rag_text.encode(), add_bos=False, special=True)
    prefills = []
    for _ in range(3):
        llm.reset()
        started = time.perf_counter()
        llm.eval(rag)
        prefills.append(time.perf_counter() - started)
    rates = []
    for _ in range(3):
        produced, started, first = 0, time.perf_counter(), None
        for _token in llm.generate(llm.tokenize(story_text.encode(), add_bos=False, special=True), top_k=1, reset=True):
            produced += 1
            if first is None:
                first = time.perf_counter()
            if produced > tokens:
                break
        rates.append((produced - 1) / (time.perf_counter() - first))
    return {"rag_prompt_tokens": len(rag), "prefill_s": median(prefills), "decode_tokens_per_s": median(rates, 1)}


def llama_cpp_in_fresh_process(job: dict) -> dict:
    """Run :func:`llama_cpp_figures` in its own process: two OpenMP runtimes' threads in one
    process (torch's and llama.cpp's) on two cores slow each other down."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(job, handle)
    try:
        output = subprocess.run(
            [sys.executable, __file__, "--llama-cpp-job", handle.name], capture_output=True, text=True, check=True
        ).stdout
    finally:
        Path(handle.name).unlink()
    return json.loads(output.strip().splitlines()[-1])


def concurrent_decode(generator, adapters: list[str], users: int, max_new_tokens: int) -> dict:  # noqa: ANN001
    """``users`` streams at once on a short prompt, adapters in turn: the batched decode rate alone."""
    from chatbot.engine.generation import GenerationParams, GenerationStats

    def one(i: int) -> int:
        stats = GenerationStats()
        for _ in generator.stream(
            STORY, GenerationParams(max_new_tokens=max_new_tokens), adapters[i % len(adapters)], stats
        ):
            pass
        return stats.new_tokens

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=users) as pool:
        tokens = sum(pool.map(one, range(users)))
    return {"tokens_per_s": round(tokens / (time.perf_counter() - started), 1)}


def cpu_flags() -> str:
    """The CPU's vector extensions that pick fast paths (AVX2, AVX-512 variants, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = [flag for flag in flags if flag.startswith(("avx", "amx", "fma", "f16c"))]
    return " ".join(sorted(set(wanted))) or "none of avx/amx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp-job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--quantize", choices=["none", "int8"], default="none", help="the quantize setting")
    parser.add_argument("--engine", choices=["auto", "onnx", "torch"], default="auto", help="the engine setting")
    parser.add_argument("--out", type=Path, default=None, help="default bench-results/speed[-MODEL].json")
    parser.add_argument("--model", type=Path, help="a base model folder (default: the embedded model)")
    parser.add_argument("--adapters", type=Path, help="its adapters (default: FOLDER-adapters, made when missing)")
    parser.add_argument(
        "--llama-server", type=Path, default=find_server(), help="a llama-server binary (default: make llama-server's)"
    )
    args = parser.parse_args()
    if args.out is None:
        args.out = REPO / "bench-results" / (f"speed-{args.model.name}.json" if args.model else "speed.json")
    if args.llama_cpp_job:
        print(json.dumps(llama_cpp_figures(**json.loads(args.llama_cpp_job.read_text()))))
        return

    import torch

    from chatbot.app.service import Chatbot
    from chatbot.backends.base import to_chat_messages
    from chatbot.config import load_settings
    from chatbot.engine.generation import GenerationParams, GenerationStats
    from chatbot.models.device import cpu_has_bf16
    from chatbot.models.embedded import smollm2_gguf
    from chatbot.rag.prompting import RAG_PROMPT, format_blocks

    cpu = platform.processor() or platform.machine()
    figures: dict = {
        "machine": f"{cpu}, {torch.get_num_threads()} torch threads, native bf16: {cpu_has_bf16()}, "
        f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}",
        "cpu_flags": cpu_flags(),
        "base_model": str(args.model or "embedded"),
    }
    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        knowledge = scratch_dir / "knowledge"  # the user guide plus the project's docs: a few hundred chunks
        shutil.copytree(REPO / "knowledge", knowledge)
        for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
            shutil.copy(page, knowledge / page.name)
        overrides = {
            "knowledge_dir": str(knowledge),
            "adapters_dir": str(REPO / "adapters"),
            "data_dir": str(scratch_dir / "data"),
            "cache_dir": str(REPO / ".chatbot" / "cache"),
            "top_k": 8,
            "context_tokens": 850,  # with the system prompt and question: the ~1,000-token turn
            "max_new_tokens": args.max_new_tokens,
            "quantize": args.quantize,
            "engine": args.engine,
        }
        if args.model:
            args.model = args.model.resolve()
            overrides["base_model"] = str(args.model)
            overrides["adapters_dir"] = str((args.adapters or random_adapters(args.model)).resolve())
        bot = Chatbot(load_settings(**overrides))
        bot.load()
        bot.sync()
        servers = [fresh_server(json.dumps(overrides)) for _ in range(args.repeats)]
        figures["startup_s"] = median([server["ready_s"] for server in servers], 2)
        figures["server_peak_rss_mb"] = median([server["rss_mb"] for server in servers], 0)
        generator = bot.generator
        adapters = [d.name for d in bot.adapters.list() if d.ready]
        adapter = next((name for name in adapters if name != "base"), "base")
        figures["dtype"] = str(generator.base.dtype).removeprefix("torch.")
        figures["quantize"] = args.quantize
        figures["engine"] = "onnx" if getattr(generator.engine, "model_dir", None) else "torch"
        figures["exact_batches"] = bot.settings.exact_batches
        figures["adapters"] = adapters

        chain = bot.chain
        blocks = chain.fit(chain.retrieve(QUESTION))
        prompt = RAG_PROMPT.invoke(
            {
                "question": QUESTION,
                "system_prompt": settings_prompt(bot, adapter),
                "context": format_blocks(blocks),
                "history": [],
            }
        )
        messages = to_chat_messages(prompt.to_messages())
        figures["rag_prompt_tokens"] = len(generator.prompt_ids(messages))

        def run(chat: list[dict[str, str]], tokens: int, name: str = adapter) -> GenerationStats:
            stats = GenerationStats()
            for _ in generator.stream(chat, GenerationParams(max_new_tokens=tokens), name, stats):
                pass
            return stats

        run(messages, 4)  # warm up (and store the domain's system-prompt prefix)
        figures["rag_prefill_first_token_s"] = median([run(messages, 1).first_token_s for _ in range(args.repeats)])
        ends = [bot.ask(QUESTION, adapter=adapter, max_new_tokens=1).timings for _ in range(args.repeats)]
        figures["rag_first_token_s"] = median([timing["first_token_s"] for timing in ends])
        rates = []
        for _ in range(args.repeats):
            stats = run(STORY, args.max_new_tokens)
            rates.append((stats.new_tokens - 1) / (stats.seconds - stats.first_token_s))
        figures[f"decode_tokens_per_s_{adapter}"] = median(rates, 1)
        base_rates = []
        for _ in range(args.repeats):
            stats = run(STORY, args.max_new_tokens, "base")
            base_rates.append((stats.new_tokens - 1) / (stats.seconds - stats.first_token_s))
        figures["decode_tokens_per_s_base"] = median(base_rates, 1)
        figures["ask_latency_s"] = median(
            [bot.ask(QUESTION, adapter=adapter).timings["total_s"] for _ in range(args.repeats)], 2
        )
        for users in (1, 4, 8):
            figures[f"concurrent_{users}"] = concurrent(bot, adapters, users, args.max_new_tokens)
        figures["concurrent_8_decode_only"] = concurrent_decode(generator, adapters, 8, args.max_new_tokens)

        short = [{"role": "user", "content": "Name a color."}]
        same = [run(short, 1, adapter).first_token_s for _ in range(9)]
        alternating = [run(short, 1, name).first_token_s for name in ["base", adapter] * 5]
        figures["adapter_switch_ms"] = round((statistics.median(alternating) - statistics.median(same)) * 1000, 1)

        if not args.model:  # these do not depend on the base model
            words = " ".join(path.read_text() for path in knowledge.rglob("*.md")).split()
            figures.update(retrieval_latency(bot.embeddings, words, scratch_dir))
            figures.update(embedding_rate(bot.embeddings, words))

        if args.model:
            figures["llama_cpp"] = "see llama_server (the Python binding runs the embedded model only)"
        elif importlib.util.find_spec("llama_cpp") is None:
            figures["llama_cpp"] = "not installed (pip install llama-cpp-python to compare)"
        else:
            template = generator.tokenizer.apply_chat_template
            llama = llama_cpp_in_fresh_process(
                {
                    "gguf": str(smollm2_gguf()),
                    "rag_text": template(messages, add_generation_prompt=True, tokenize=False),
                    "story_text": template(STORY, add_generation_prompt=True, tokenize=False),
                    "tokens": args.max_new_tokens,
                    "threads": torch.get_num_threads(),
                }
            )
            figures["llama_cpp"] = llama
            figures["ratio_decode_vs_llama_cpp"] = round(
                figures[f"decode_tokens_per_s_{adapter}"] / llama["decode_tokens_per_s"], 2
            )
            figures["ratio_prefill_vs_llama_cpp"] = round(llama["prefill_s"] / figures["rag_prefill_first_token_s"], 2)
        if args.llama_server is None:
            figures["llama_server"] = "not built (make llama-server to compare)"
        else:
            try:
                figures.update(compare_llama_server(bot, args, figures, adapters, adapter, messages))
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # keep the app's figures
                figures["llama_server"] = f"failed: {exc}"[:2000]
    publish(figures, args.out)


def settings_prompt(bot, adapter: str) -> str:  # noqa: ANN001
    return bot.adapters.get(adapter).system_prompt


def rag_text(bot, question: str, adapter: str) -> str:  # noqa: ANN001
    """The chat-templated RAG prompt the chain builds for ``question`` on ``adapter``."""
    from chatbot.backends.base import to_chat_messages
    from chatbot.rag.prompting import RAG_PROMPT, format_blocks

    chain = bot.chain
    context = format_blocks(chain.fit(chain.retrieve(question)))
    values = {"question": question, "system_prompt": settings_prompt(bot, adapter), "context": context, "history": []}
    messages = to_chat_messages(RAG_PROMPT.invoke(values).to_messages())
    return bot.generator.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def compare_llama_server(bot, args, figures: dict, adapters: list[str], adapter: str, messages) -> dict:  # noqa: ANN001
    """The app's loads through llama.cpp's server (same prompts, same adapters) and the ratios."""
    import torch

    from chatbot.models.embedded import smollm2_gguf
    from chatbot.models.gguf import convert_gguf

    template = bot.generator.tokenizer.apply_chat_template
    served = {name: bot.adapters.get(name).folder for name in adapters if name != "base"}
    if args.model:
        gguf = convert_model(args.model, source_of(args.llama_server), args.model.parent / "gguf")
        base_hf = args.model
    else:
        gguf, base_hf = smollm2_gguf(), convert_gguf(smollm2_gguf(), REPO / ".chatbot" / "cache")
    server = llama_server_figures(
        binary=args.llama_server,
        gguf=gguf,
        adapter_dirs=served,
        base_hf=base_hf,
        rag_turn=template(messages, add_generation_prompt=True, tokenize=False),
        rag_jobs=[
            (rag_text(bot, QUESTIONS[i % len(QUESTIONS)], adapters[i % len(adapters)]), adapters[i % len(adapters)])
            for i in range(8)
        ],
        story=template(STORY, add_generation_prompt=True, tokenize=False),
        tokens=args.max_new_tokens,
        threads=torch.get_num_threads(),
        repeats=max(args.repeats, 2),
    )
    return {
        "llama_server": server,
        "ratio_vs_llama_server": {
            "decode_adapter_vs_its_adapter": round(
                figures[f"decode_tokens_per_s_{adapter}"] / server[f"decode_tokens_per_s_{adapter}"], 2
            ),
            "decode_adapter_vs_its_base": round(
                figures[f"decode_tokens_per_s_{adapter}"] / server["decode_tokens_per_s_base"], 2
            ),
            "decode_base_vs_its_base": round(
                figures["decode_tokens_per_s_base"] / server["decode_tokens_per_s_base"], 2
            ),
            "rag_turn_speedup": round(server["rag_turn_s"] / figures["ask_latency_s"], 2),
            "rag_first_token_speedup": round(server["rag_prefill_s"] / figures["rag_prefill_first_token_s"], 2),
            "serving_peak_rss": round(figures["server_peak_rss_mb"] / server["peak_rss_mb"], 2),
            "startup": round(figures["startup_s"] / server["startup_s"], 2),
            **{
                f"concurrent_{users}": round(
                    figures[f"concurrent_{users}"]["tokens_per_s"] / server[f"concurrent_{users}"]["tokens_per_s"], 2
                )
                for users in (1, 4, 8)
            },
            # the same 8 turns served start to end (llama.cpp's run every turn to max_new_tokens)
            "concurrent_8_wall": round(server["concurrent_8"]["wall_s"] / figures["concurrent_8"]["wall_s"], 2),
            "concurrent_8_decode_only": round(
                figures["concurrent_8_decode_only"]["tokens_per_s"]
                / server["concurrent_8_decode_only"]["tokens_per_s"],
                2,
            ),
        },
    }


if __name__ == "__main__":
    main()
