"""Where a decode step's time goes: the model alone, through PEFT, with an adapter, in int8.

    .venv/bin/python benchmarks/profile_decode.py [--steps 40] [--out bench-results/profile.json]

Prints milliseconds per one-token step at batch 1 (after a 200-token prompt) for the plain
model, the PEFT-wrapped model on its base row and on an adapter row, the same in int8, the
weight bandwidth of one step's matrix products, and torch's profiler table for the adapter row.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from figures import publish  # benchmarks/figures.py, next to this script

REPO = Path(__file__).resolve().parents[1]


def step_ms(model, steps: int, **route: object) -> float:  # noqa: ANN001
    """Mean time of ``steps`` one-token steps after a 200-token prompt, in milliseconds."""
    import torch
    from transformers import DynamicCache

    prompt = torch.randint(100, 4000, (1, 200), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        cache = DynamicCache()
        token = model(input_ids=prompt, past_key_values=cache, logits_to_keep=1, **route).logits[:, -1].argmax(-1)
        for _ in range(3):
            token = (
                model(input_ids=token[:, None], past_key_values=cache, logits_to_keep=1, **route)
                .logits[:, -1]
                .argmax(-1)
            )
        started = time.perf_counter()
        for _ in range(steps):
            token = (
                model(input_ids=token[:, None], past_key_values=cache, logits_to_keep=1, **route)
                .logits[:, -1]
                .argmax(-1)
            )
        return round((time.perf_counter() - started) / steps * 1000, 2)


def load(quantize: str):  # noqa: ANN201
    from peft import PeftModel

    from chatbot.models.base import load_base_model
    from chatbot.models.quantize import quantize_int8

    base = load_base_model("embedded", REPO / ".chatbot" / "cache")
    if quantize == "int8":
        quantize_int8(base.model)
    wrapped = PeftModel.from_pretrained(
        base.model, str(REPO / "adapters" / "finance"), adapter_name="finance", autocast_adapter_dtype=False
    )
    wrapped.eval()
    return base, wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "profile.json")
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    figures: dict = {"threads": torch.get_num_threads()}
    for quantize in ("none", "int8"):
        base, wrapped = load(quantize)
        with wrapped.disable_adapter():
            figures[f"{quantize}_plain_step_ms"] = step_ms(wrapped, args.steps)
        figures[f"{quantize}_peft_base_row_step_ms"] = step_ms(wrapped, args.steps, adapter_names=["__base__"])
        figures[f"{quantize}_peft_adapter_row_step_ms"] = step_ms(wrapped, args.steps, adapter_names=["finance"])
        linears = [m for m in base.model.modules() if isinstance(m, torch.nn.Linear)]
        weights = sum(m.weight.numel() * m.weight.element_size() for m in linears)
        figures[f"{quantize}_linear_weights_mb"] = round(weights / 2**20, 1)
        if quantize == "none":
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step_ms(wrapped, 10, adapter_names=["finance"])
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    publish(figures, args.out)
    print(table)


if __name__ == "__main__":
    main()
