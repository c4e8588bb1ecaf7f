"""Speed benchmark: the figures of the speed issue in one run, as medians over repeats.

    .venv/bin/python benchmarks/run.py [--repeats 3] [--out bench-results/speed.json]

Prints and writes: start-up time (a fresh process: unchanged-folder sync and model load),
decode tokens/s at batch 1 with an adapter, time to first token of a typical RAG turn (the
chain's real prompt with the user guide's top chunks, ~1,000 prompt tokens), end-to-end `ask`
latency, aggregate tokens/s and p50/p95 latency with 1, 4 and 8 concurrent requests on mixed
adapters, retrieval p50/p95 (query embedding + search) over a 10,000-vector collection, and the
peak RSS with the shipped adapters loaded. Runs the same GGUF through llama.cpp when
``llama-cpp-python`` is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from figures import publish  # benchmarks/figures.py, next to this script

REPO = Path(__file__).resolve().parents[1]
QUESTION = "How do I refresh the knowledge base and which file types are indexed?"
QUESTIONS = [
    "How do I refresh the knowledge base?",
    "How do I train a new adapter?",
    "Which file types can I put in the knowledge folder?",
    "How do I switch the domain adapter?",
]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def startup_seconds(data_dir: Path) -> float:
    """A fresh process: settings, unchanged-folder sync, model and adapters loaded."""
    code = (
        "import time; t=time.perf_counter();"
        "from chatbot.config import load_settings; from chatbot.service import Chatbot;"
        f"b=Chatbot(load_settings(knowledge_dir={str(REPO / 'knowledge')!r}, adapters_dir={str(REPO / 'adapters')!r},"
        f"data_dir={str(data_dir)!r}, cache_dir={str(REPO / '.chatbot' / 'cache')!r}));"
        "b.sync(); b.chain; print(time.perf_counter()-t)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(output.strip().splitlines()[-1])


def retrieval_latency(embeddings, count: int = 10_000, queries: int = 50) -> tuple[float, float]:  # noqa: ANN001
    """Query embedding + Chroma top-5 over ``count`` random unit vectors (timing, not quality)."""
    import chromadb

    client = chromadb.EphemeralClient()
    collection = client.create_collection("bench", metadata={"hnsw:space": "cosine"})
    rng = random.Random(0)
    dim = len(embeddings.embed_query("probe"))
    for start in range(0, count, 5000):
        vectors = [[rng.gauss(0, 1) for _ in range(dim)] for _ in range(min(5000, count - start))]
        ids = [str(start + i) for i in range(len(vectors))]
        collection.add(ids=ids, embeddings=vectors, documents=ids)
    samples = []
    for i in range(queries):
        started = time.perf_counter()
        vector = embeddings.embed_query(f"{QUESTIONS[i % len(QUESTIONS)]} {i}")
        collection.query(query_embeddings=[vector], n_results=5)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), percentile(samples, 0.95)


def concurrent(bot, adapters: list[str], users: int, max_new_tokens: int) -> dict:  # noqa: ANN001
    """``users`` requests at once, adapters in turn; aggregate tokens/s and latency percentiles."""

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
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(percentile(latencies, 0.95), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "speed.json")
    args = parser.parse_args()

    import torch

    from chatbot.config import load_settings
    from chatbot.generation import GenerationParams, GenerationStats
    from chatbot.llm import to_chat_messages
    from chatbot.prompting import RAG_PROMPT, format_blocks
    from chatbot.service import Chatbot

    figures: dict = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU only"}
    with tempfile.TemporaryDirectory() as data:
        data_dir = Path(data)
        settings = load_settings(
            knowledge_dir=REPO / "knowledge",
            adapters_dir=REPO / "adapters",
            data_dir=data_dir,
            cache_dir=REPO / ".chatbot" / "cache",
            top_k=5,
            max_new_tokens=args.max_new_tokens,
        )
        bot = Chatbot(settings)
        bot.sync()
        figures["startup_s"] = round(statistics.median(startup_seconds(data_dir) for _ in range(args.repeats)), 2)
        generator = bot.generator
        adapters = [d.name for d in bot.adapters.list() if d.ready]
        adapter = next((name for name in adapters if name != "base"), "base")
        figures["dtype"] = str(generator.base.dtype).removeprefix("torch.")

        blocks = bot.chain.retrieve(QUESTION)
        prompt = RAG_PROMPT.invoke(
            {"question": QUESTION, "system_prompt": settings.system_prompt, "context": format_blocks(blocks)}
        )
        messages = to_chat_messages(prompt.to_messages())
        figures["rag_prompt_tokens"] = int(generator.encode(messages)["input_ids"].shape[1])

        def run(params: GenerationParams, name: str) -> GenerationStats:
            stats = GenerationStats()
            for _ in generator.stream(messages, params, name, stats):
                pass
            return stats

        run(GenerationParams(max_new_tokens=4), adapter)  # warm up
        firsts = [run(GenerationParams(max_new_tokens=1), adapter).first_token_s or 0 for _ in range(args.repeats)]
        figures["rag_first_token_s"] = round(statistics.median(firsts), 3)
        rates = []
        for _ in range(args.repeats):
            stats = run(GenerationParams(max_new_tokens=args.max_new_tokens), adapter)
            rates.append((stats.new_tokens - 1) / max(stats.seconds - (stats.first_token_s or 0), 1e-9))
        figures[f"decode_tokens_per_s_{adapter}"] = round(statistics.median(rates), 1)
        asks = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            bot.ask(QUESTION, adapter=adapter)
            asks.append(time.perf_counter() - started)
        figures["ask_latency_s"] = round(statistics.median(asks), 2)
        for users in (1, 4, 8):
            figures[f"concurrent_{users}"] = concurrent(bot, adapters, users, args.max_new_tokens)
        p50, p95 = retrieval_latency(bot.embeddings)
        figures["retrieval_10k_p50_ms"], figures["retrieval_10k_p95_ms"] = round(p50 * 1000, 1), round(p95 * 1000, 1)
        figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if importlib.util.find_spec("llama_cpp") is None:
            figures["llama_cpp"] = "not installed (pip install llama-cpp-python to compare)"
    publish(figures, args.out)


if __name__ == "__main__":
    main()
