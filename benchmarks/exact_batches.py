"""What ``exact_batches`` costs on the transformers engine: decode tokens/s alone and at 8 rows, both ways.

    .venv/bin/python benchmarks/exact_batches.py [--tokens 48] [--repeats 3] [--dtypes bfloat16,float32]

For each dtype the CPU can run, loads the embedded model with the shipped adapters, once with
``exact_batches`` off and once on, and measures greedy decode of one request alone (the
``finance`` adapter) and the aggregate of 8 concurrent requests on mixed adapters (base,
finance, support). Prints the CPU's vector flags and each exact figure as a ratio to the
fast one, and whether 8 rows gave each request the tokens it gets alone. Each configuration runs
in a fresh process: a second model loaded in one process decoded 15-40 % slower than the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from run import cpu_flags  # benchmarks/run.py, next to this script

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["the sea", "a lighthouse", "a quarterly report", "a bicycle", "the moon", "a storm", "bread", "a river"]
ADAPTERS = ["base", "finance", "support"]


def messages(topic: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long story about {topic}."}]


def measure(generator, tokens: int, repeats: int) -> dict[str, float | bool]:
    from chatbot.vocabulary import GenerationParams, GenerationStats

    params = GenerationParams(max_new_tokens=tokens)

    def alone() -> float:
        stats = GenerationStats()
        for _ in generator.stream(messages(TOPICS[0]), params, "finance", stats):
            pass
        return (stats.new_tokens - 1) / (stats.seconds - stats.first_token_s)

    def together() -> tuple[float, bool]:
        jobs = [(topic, ADAPTERS[i % len(ADAPTERS)]) for i, topic in enumerate(TOPICS)]
        expected = [generator.complete(messages(t), params, a) for t, a in jobs]
        results: dict[int, str] = {}
        counts: dict[int, int] = {}

        def user(index: int) -> None:
            stats = GenerationStats()
            topic, adapter = jobs[index]
            results[index] = "".join(generator.stream(messages(topic), params, adapter, stats))
            counts[index] = stats.new_tokens

        threads = [threading.Thread(target=user, args=(i,)) for i in range(len(jobs))]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        return sum(counts.values()) / elapsed, [results[i] for i in range(len(jobs))] == expected

    alone()  # warm-up: packing, prefixes
    rates = [alone() for _ in range(repeats)]
    batched = [together() for _ in range(repeats)]
    return {
        "alone": statistics.median(rates),
        "rows8": statistics.median(rate for rate, _ in batched),
        "same_tokens": all(same for _, same in batched),
    }


def one(dtype: str, exact: bool, tokens: int, repeats: int) -> dict[str, float | bool]:
    """Measure one configuration in this process."""
    from chatbot.app.service import Chatbot
    from chatbot.config import load_settings

    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(
            knowledge_dir=Path(folder),
            data_dir=Path(folder) / "data",
            adapters_dir=REPO / "adapters",
            cache_dir=REPO / ".chatbot" / "cache",
            engine="torch",
            dtype=dtype,
            exact_batches=exact,
            max_batch=8,
        )
        bot = Chatbot(settings)
        if exact:
            assert bot.generator.exact_batches, "exact batches are not available here"
        return measure(bot.generator, tokens, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # "DTYPE,EXACT": measure in this process, print JSON
    args = parser.parse_args()
    if args.one:
        dtype, exact = args.one.split(",")
        print(json.dumps(one(dtype, exact == "true", args.tokens, args.repeats)))
        return

    from chatbot.models.device import cpu_has_bf16

    print(f"CPU flags: {cpu_flags()}")
    print(f"{'dtype':<9} {'exact':<6} {'alone tok/s':>12} {'8 rows tok/s':>13} {'8 rows = alone':>15}")
    for dtype in args.dtypes.split(","):
        if dtype == "bfloat16" and not cpu_has_bf16():
            print(f"{dtype:<9} skipped: this CPU has no native bf16")
            continue
        figures = {}
        for exact in (False, True):
            command = [sys.executable, __file__, "--one", f"{dtype},{str(exact).lower()}"]
            command += ["--tokens", str(args.tokens), "--repeats", str(args.repeats)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            result = figures[exact] = json.loads(output.strip().splitlines()[-1])
            print(
                f"{dtype:<9} {str(exact).lower():<6} {result['alone']:>12.1f} {result['rows8']:>13.1f} "
                f"{str(result['same_tokens']).lower():>15}"
            )
        fast, exact = figures[False], figures[True]
        print(
            f"{dtype:<9} exact/fast: alone {exact['alone'] / fast['alone']:.2f}x, "
            f"8 rows {exact['rows8'] / fast['rows8']:.2f}x"
        )


if __name__ == "__main__":
    main()
