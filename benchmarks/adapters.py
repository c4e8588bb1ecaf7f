"""Adapter benchmark: switching cost per request, decode speed with an adapter, memory per adapter.

    .venv/bin/python benchmarks/adapters.py [--adapters adapters] [--out bench-results/adapters.json]

Switching here is per-call routing (PEFT ``adapter_names``) on one loaded base model; it is
compared with what other apps do to switch: load the base model again with the adapter.
Figures are medians over repeats, taken in one run.
"""

from __future__ import annotations

import argparse
import gc
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from figures import publish  # benchmarks/figures.py, next to this script

from chatbot.app.service import Chatbot
from chatbot.config import load_settings
from chatbot.engine.generation import GenerationParams, GenerationStats

REPO = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "Explain in detail what a quarterly report contains."}]


def timed(function, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=Path, default=REPO / "adapters")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "adapters.json")
    args = parser.parse_args()
    settings = load_settings(adapters_dir=args.adapters, cache_dir=REPO / ".chatbot" / "cache")
    bot = Chatbot(settings)
    before_adapters = rss_mb()
    generator, registry = bot.generator, bot.adapters
    names = [d.name for d in registry.list() if d.ready and d.name != "base"]
    if len(names) < 2:
        raise SystemExit(f"need two ready adapters in {args.adapters}, found {names}")
    first, second = names[:2]
    one_token = GenerationParams(max_new_tokens=1)

    def request(adapter: str) -> None:
        generator.complete(MESSAGES, one_token, adapter)

    for name in (first, second, "base"):
        request(name)  # warm up
    # Interleave blocks of same-adapter and alternating requests so drift hits both alike.
    same_samples: list[float] = []
    switch_samples: list[float] = []
    for _ in range(args.repeats):
        for samples, sequence in ((same_samples, [first] * 4), (switch_samples, [second, first] * 2)):
            for name in sequence:
                started = time.perf_counter()
                request(name)
                samples.append(time.perf_counter() - started)
    same, switching = statistics.median(same_samples), statistics.median(switch_samples)

    def reload_with_adapter() -> None:
        from peft import PeftModel

        from chatbot.models.base import load_base_model

        base = load_base_model(settings.base_model, settings.models_cache_dir, settings.device, settings.dtype)
        model = PeftModel.from_pretrained(base.model, str(args.adapters / second))
        model.eval()
        del model, base
        gc.collect()

    reload = timed(reload_with_adapter, 3)

    def decode_rate(adapter: str) -> float:
        rates = []
        for _ in range(3):
            stats = GenerationStats()
            for _piece in generator.stream(MESSAGES, GenerationParams(max_new_tokens=64), adapter, stats):
                pass
            rates.append(stats.new_tokens / (stats.seconds - (stats.first_token_s or 0)))
        return statistics.median(rates)

    rates = {name: decode_rate(name) for name in ("base", first)}
    model = generator.model
    per_adapter = {}
    for name in names:
        tensors = [p for n, p in model.named_parameters() if n.endswith(f".{name}.weight")]
        per_adapter[name] = round(sum(p.numel() * p.element_size() for p in tensors) / 1e6, 2)
    results = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, dtype {generator.base.dtype}",
        "adapters": names,
        "request_same_adapter_ms": round(same * 1000, 2),
        "request_switching_adapter_ms": round(switching * 1000, 2),
        "switching_cost_ms": round((switching - same) * 1000, 2),
        "reload_base_with_adapter_ms": round(reload * 1000, 1),
        "reload_over_switch": round(reload / max(switching, 1e-9), 1),
        "decode_tokens_per_s_base": round(rates["base"], 1),
        f"decode_tokens_per_s_{first}": round(rates[first], 1),
        "adapter_over_base_decode": round(rates[first] / rates["base"], 3),
        "adapter_memory_mb": per_adapter,
        "peak_rss_mb_before_adapters": round(before_adapters, 1),
        "peak_rss_mb": round(rss_mb(), 1),
    }
    publish(results, args.out)


if __name__ == "__main__":
    main()
