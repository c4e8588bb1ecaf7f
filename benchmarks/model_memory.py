"""Peak memory and time of a first start and of a warm start on a larger base model.

    .venv/bin/python benchmarks/model_memory.py qwen2.5-0.5b [qwen2.5-1.5b llama-3.2-3b] [--engine onnx]
    .venv/bin/python benchmarks/model_memory.py --model /models/SomeModel

For each model (a random-weight folder of a public shape, built by ``model_shapes.py``, or any
folder / GGUF file), a fresh data dir and cache, then ``chatbot ask --local`` twice in fresh
processes: the first start converts the model (GGUF -> safetensors, the ONNX conversion), the
second loads what the first wrote and answers, as a restarted server would. Each run's peak RSS
counts the whole process tree (the ONNX builder runs in a child process), sampled every 50 ms
from /proc. Prints a table with the cache's size on disk and the CPU's vector flags.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from model_shapes import SHAPES, build
from run import cpu_flags  # benchmarks/run.py, next to this script

REPO = Path(__file__).resolve().parents[1]
QUESTION = "When are the herons fed?"
PASSAGE = "The herons at Millbrook pond are fed at seven in the morning by the warden.\n"


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measured(command: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Run ``command``; (seconds, peak RSS of its process tree, peak RSS of one process)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tree_peak = single_peak = 0
    while process.poll() is None:
        sizes = [_rss(pid) for pid in _tree(process.pid)]
        tree_peak, single_peak = max(tree_peak, sum(sizes)), max(single_peak, max(sizes, default=0))
        time.sleep(0.05)
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - started, tree_peak, single_peak


def _bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def measure(model: Path, engine: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="model-memory-") as scratch:
        root = Path(scratch)
        (root / "knowledge").mkdir()
        (root / "knowledge" / "herons.md").write_text(PASSAGE)
        env = {
            **os.environ,
            "CHATBOT_BASE_MODEL": str(model),
            "CHATBOT_KNOWLEDGE_DIR": str(root / "knowledge"),
            "CHATBOT_DATA_DIR": str(root / "data"),
            "CHATBOT_CACHE_DIR": str(root / "cache"),
            "CHATBOT_ADAPTERS_DIR": str(root / "adapters"),
            "CHATBOT_ENGINE": engine,
            "CHATBOT_MAX_NEW_TOKENS": "16",
        }
        command = [str(REPO / ".venv" / "bin" / "chatbot"), "ask", "--local", "--json", QUESTION]
        first = measured(command, env)
        warm = measured(command, env)
        return {
            "weights_gb": _bytes(model) / 1e9 if model.is_dir() else model.stat().st_size / 1e9,
            "first_s": first[0],
            "first_peak_gb": first[1] / 1e9,
            "first_process_gb": first[2] / 1e9,
            "cache_gb": _bytes(root / "cache") / 1e9,
            "warm_s": warm[0],
            "warm_peak_gb": warm[1] / 1e9,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shapes", nargs="*", choices=sorted(SHAPES), help="public shapes to build and measure")
    parser.add_argument("--model", type=Path, action="append", default=[], help="a model folder or GGUF file")
    parser.add_argument("--engine", default="onnx", choices=("onnx", "torch"))
    args = parser.parse_args()
    models = [(shape, build(shape)) for shape in args.shapes] + [(path.name, path) for path in args.model]
    if not models:
        parser.error("name a shape or give --model")
    print(f"CPU flags: {cpu_flags()}; engine {args.engine}")
    print(
        "| model | weights GB | first start s | first start peak RSS GB (tree / one process) | cache GB "
        "| warm start s | warm peak RSS GB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, path in models:
        f = measure(path, args.engine)
        print(
            f"| {name} | {f['weights_gb']:.2f} | {f['first_s']:.0f} | {f['first_peak_gb']:.2f} / "
            f"{f['first_process_gb']:.2f} | {f['cache_gb']:.2f} | {f['warm_s']:.0f} | {f['warm_peak_gb']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
