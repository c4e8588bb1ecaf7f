"""Engines side by side in one run: decode tokens/s at batch 1 (base and an adapter) and first token of a long prompt.

    .venv/bin/python benchmarks/engines.py [--tokens 64] [--repeats 3] [--precisions int4,int8,fp32]

Runs transformers + PEFT (the ``torch`` engine) and the ONNX engine at each precision on the
embedded model with the shipped ``finance`` adapter, greedy, one request at a time; prints the
CPU's vector flags, medians and each figure as a ratio to transformers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from run import cpu_flags  # benchmarks/run.py, next to this script

REPO = Path(__file__).resolve().parents[1]
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]


def measure(generator, tokens: int, repeats: int) -> dict[str, float]:
    from chatbot.vocabulary import GenerationParams, GenerationStats

    def once(messages, adapter: str, new: int) -> GenerationStats:
        stats = GenerationStats()
        for _ in generator.stream(messages, GenerationParams(max_new_tokens=new), adapter, stats):
            pass
        return stats

    long_prompt = [{"role": "user", "content": " ".join(["The quarterly report lists revenue and costs."] * 110)}]
    once(STORY, "finance", 4)
    figures = {}
    for adapter in ("base", "finance"):
        rates = []
        for _ in range(repeats):
            stats = once(STORY, adapter, tokens)
            rates.append((stats.new_tokens - 1) / (stats.seconds - stats.first_token_s))
        figures[f"decode_{adapter}"] = statistics.median(rates)
    figures["prompt_tokens"] = len(generator.prompt_ids(long_prompt))
    figures["first_token_s"] = statistics.median(_first(once(long_prompt, "finance", 2)) for _ in range(repeats))
    return figures


def _first(stats) -> float:  # noqa: ANN001
    return stats.first_token_s if stats.first_token_s is not None else stats.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", default="int4,int8,fp32")
    args = parser.parse_args()

    from chatbot.adapters.lora import PeftLora
    from chatbot.engine.generation import Generator
    from chatbot.engine.onnx import onnx_generator
    from chatbot.models.base import load_base_model

    cache = REPO / ".chatbot" / "cache"
    print(f"CPU flags: {cpu_flags()}")
    rows = {}
    base = load_base_model("embedded", cache, "cpu", "float32")
    generator = Generator(base)
    PeftLora(generator).add("finance", REPO / "adapters" / "finance")
    rows["torch fp32"] = measure(generator, args.tokens, args.repeats)
    generator.engine.close()
    skeleton = load_base_model("embedded", cache, "cpu", "float32", weights=False)
    for precision in args.precisions.split(","):
        started = time.perf_counter()
        generator = onnx_generator(skeleton, cache, precision)
        generator.engine.add_adapter("finance", REPO / "adapters" / "finance")
        ready = time.perf_counter() - started
        rows[f"onnx {precision}"] = {**measure(generator, args.tokens, args.repeats), "ready_s": ready}
        generator.engine.close()
    reference = rows["torch fp32"]
    print(f"{'engine':<12} {'decode base':>12} {'decode finance':>15} {'first token':>12}  (prompt tokens)")
    for name, row in rows.items():
        ratio = row["decode_finance"] / reference["decode_finance"]
        print(
            f"{name:<12} {row['decode_base']:>8.1f} t/s {row['decode_finance']:>9.1f} t/s ({ratio:.1f}x)"
            f" {row['first_token_s']:>8.2f} s  ({row['prompt_tokens']})"
        )


if __name__ == "__main__":
    main()
