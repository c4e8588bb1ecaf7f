"""Seconds per LoRA training step and peak memory on a larger base, with and without checkpointing.

    .venv/bin/python benchmarks/train_step.py qwen2.5-1.5b [--tokens 512] [--steps 2]
    .venv/bin/python benchmarks/train_step.py --model /models/SomeModel

Each setting runs in a fresh process (so its peak RSS is its own): the base loads at fp32, LoRA
goes on every linear layer of the blocks (the app's default recipe), and ``--steps`` optimizer
steps of one ``--tokens``-token example each run with the app's trainer (bf16 autocast where the
CPU has it). Prints seconds per step (the first step excluded when there are more), tokens per
second, peak RSS, and the CPU's vector flags.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from model_shapes import SHAPES, build
from run import cpu_flags  # benchmarks/run.py, next to this script

REPO = Path(__file__).resolve().parents[1]


def one_run(model: Path, tokens: int, steps: int, checkpointing: bool) -> dict:
    """Train ``steps`` steps here; the figures of this process."""
    from chatbot.models.base import load_base_model
    from chatbot.training.trainer import TrainConfig, train_adapter

    base = load_base_model(str(model), REPO / ".chatbot" / "cache", "cpu", "float32")
    words = " ".join(["ledger"] * tokens)  # about one token per word with any BPE vocabulary
    example = [{"role": "user", "content": words[: tokens * 7 // 2]}, {"role": "assistant", "content": words}]
    config = TrainConfig(
        max_steps=steps,
        batch_size=1,
        eval_every=10**6,  # no validation passes inside the timing
        validation_share=0.0,
        max_tokens=tokens * 2,
        gradient_checkpointing=checkpointing,
    )
    started = time.perf_counter()
    result = train_adapter(base, [example] * (steps + 1), config)
    seconds = time.perf_counter() - started
    return {
        "checkpointing": checkpointing,
        "steps": result.steps,
        "seconds": seconds,
        "tokens_per_second": result.tokens_per_second,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", nargs="?", choices=sorted(SHAPES))
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--one", choices=("on", "off"), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    model = args.model or (build(args.shape) if args.shape else None)
    if model is None:
        parser.error("name a shape or give --model")
    if args.one:
        print(json.dumps(one_run(model, args.tokens, args.steps, args.one == "on")))
        return
    print(f"CPU flags: {cpu_flags()}; {model.name}, one {args.tokens}-token example per step")
    print("| gradient checkpointing | seconds per step | tokens/s | peak RSS GB |")
    print("| --- | ---: | ---: | ---: |")
    for mode in ("off", "on"):
        command = [sys.executable, __file__, "--model", str(model), "--tokens", str(args.tokens)]
        done = subprocess.run(
            [*command, "--steps", str(args.steps), "--one", mode], capture_output=True, text=True, check=True
        )
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        per_step = figures["seconds"] / max(1, figures["steps"])
        print(f"| {mode} | {per_step:.1f} | {figures['tokens_per_second']:.0f} | {figures['peak_rss_gb']:.2f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
