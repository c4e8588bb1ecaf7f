"""llama.cpp's own server under the benchmark's loads, for the side-by-side figures of run.py.

    make llama-server        # optional: builds .chatbot/llama.cpp/build/bin/llama-server (~15 min)
    .venv/bin/python benchmarks/run.py --engine onnx --repeats 1     # finds it and adds its figures

The shipped PEFT adapters are converted to GGUF LoRA once (llama.cpp's own
``convert_lora_to_gguf.py``, cached by the adapter's fingerprint), loaded with
``--lora-init-without-apply``, and every request names its adapter by sending *every* adapter's
scale (the server applies a loaded adapter to a request that omits it). Requests go to
``/completion`` with the app's chat template already applied, so both engines read the same tokens.
"""

from __future__ import annotations

import hashlib
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / ".chatbot" / "llama.cpp"


def find_server(root: Path = DEFAULT_ROOT) -> Path | None:
    """The ``llama-server`` binary ``make llama-server`` built, if any."""
    binary = root / "build" / "bin" / "llama-server"
    return binary if binary.is_file() else None


def source_of(binary: Path) -> Path:
    """The llama.cpp source tree ``make llama-server`` built ``binary`` from (its converters)."""
    return binary.parents[2] / "src"


def convert_adapter(adapter_dir: Path, base_hf: Path, source: Path, cache: Path) -> Path:
    """``adapter_dir`` as a GGUF LoRA file (once per adapter weights; llama.cpp's converter)."""
    weights = adapter_dir / "adapter_model.safetensors"
    key = hashlib.sha256(weights.read_bytes() + (adapter_dir / "adapter_config.json").read_bytes()).hexdigest()[:12]
    target = cache / f"{adapter_dir.name}-{key}.gguf"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    subprocess.run(
        [sys.executable, str(source / "convert_lora_to_gguf.py"), "--base", str(base_hf), "--outtype", "f32"]
        + ["--outfile", str(partial), str(adapter_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    partial.rename(target)
    return target


_CONVERT = """
import sys
sys.path[:0] = [{source!r}, {gguf_py!r}]
sys.argv = {argv!r}
import convert_hf_to_gguf
from conversion.base import TextModel
# llama.cpp's converter refuses a tokenizer whose pre-tokenizer hash it does not list, as the
# embedded tokenizer's copy in the benchmark's random-weight models; that tokenizer does not
# change speed, so it is named as SmolLM's (its origin)
TextModel.get_vocab_base_pre = lambda self, tokenizer: "smollm"
convert_hf_to_gguf.main()
"""


def convert_model(folder: Path, source: Path, cache: Path, outtype: str = "q8_0") -> Path:
    """A transformers model folder as one GGUF file at ``outtype`` (llama.cpp's own converter),
    once per folder and type."""
    target = cache / f"{folder.name}.{outtype}.gguf"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    argv = ["convert_hf_to_gguf.py", "--outtype", outtype, "--outfile", str(partial), str(folder)]
    code = _CONVERT.format(source=str(source), gguf_py=str(source / "gguf-py"), argv=argv)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"llama.cpp's converter failed on {folder}: {done.stderr[-2000:]}")
    partial.rename(target)
    return target


@dataclass
class LlamaServer:
    """A running ``llama-server``: its URL and the order of its LoRA adapters."""

    url: str
    adapters: list[str]
    pid: int = 0
    ready_s: float = 0.0  # from the command to a healthy /health, the model and adapters loaded

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory so far (Linux)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(kib) / 1024

    def lora(self, adapter: str) -> list[dict[str, float]]:
        """Every adapter's scale: 1 for ``adapter``, 0 for the others (all 0 for base)."""
        return [{"id": i, "scale": 1.0 if name == adapter else 0.0} for i, name in enumerate(self.adapters)]

    def complete(self, prompt: str, adapter: str, tokens: int) -> dict:
        """One greedy completion of ``tokens`` tokens (no early stop); the server's JSON answer."""
        body = {
            "prompt": prompt,
            "n_predict": tokens,
            "temperature": 0.0,
            "top_k": 1,
            "ignore_eos": True,
            "cache_prompt": False,  # every turn reads its prompt, as a new user's would be
            "lora": self.lora(adapter),
        }
        request = urllib.request.Request(
            f"{self.url}/completion", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())


@contextmanager
def serve(binary: Path, gguf: Path, loras: dict[str, Path], slots: int, threads: int) -> Iterator[LlamaServer]:
    """Start ``llama-server`` on a free loopback port with ``loras`` loaded and unapplied."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--no-webui"]
    command += ["-np", str(slots), "-c", str(2048 * slots), "-t", str(threads), "-tb", str(threads)]
    if loras:  # one comma-separated --lora: given twice, only the last is loaded
        command += ["--lora", ",".join(str(path) for path in loras.values()), "--lora-init-without-apply"]
    url = f"http://127.0.0.1:{port}"
    # the log goes to a file, not a pipe: an unread pipe fills and stalls the server
    with (
        tempfile.TemporaryFile("w+") as log,
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log) as process,
    ):
        try:
            started = time.perf_counter()
            wait_healthy(url, process, log)
            yield LlamaServer(url, list(loras), process.pid, time.perf_counter() - started)
        finally:
            process.terminate()


def wait_healthy(url: str, process: subprocess.Popen, log: IO[str], seconds: float = 120) -> None:
    """Return once ``url``/health answers 200; raise with the log's tail if the server exits."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"llama-server exited ({process.returncode}): {log.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"llama-server did not become healthy in {seconds:.0f} s")
        time.sleep(0.2)


def load(server: LlamaServer, jobs: Sequence[tuple[str, str]], tokens: int) -> dict:
    """``jobs`` (prompt, adapter) all at once: aggregate tokens/s and latency percentiles."""

    def one(job: tuple[str, str]) -> tuple[float, int]:
        started = time.perf_counter()
        answer = server.complete(job[0], job[1], tokens)
        return time.perf_counter() - started, int(answer.get("tokens_predicted", 0))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(one, jobs))
    wall = time.perf_counter() - started
    latencies = sorted(latency for latency, _ in results)
    return {
        "tokens_per_s": round(sum(count for _, count in results) / wall, 1),
        "tokens": sum(count for _, count in results),
        "wall_s": round(wall, 2),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))], 2),
    }


def figures(
    binary: Path,
    gguf: Path,
    adapter_dirs: dict[str, Path],
    base_hf: Path,
    rag_turn: str,
    rag_jobs: Sequence[tuple[str, str]],
    story: str,
    tokens: int,
    threads: int,
    repeats: int,
) -> dict:
    """llama-server's figures for the loads run.py puts on the app: ``rag_turn`` is the one RAG
    prompt (with the first adapter), ``rag_jobs`` the concurrent users' (prompt, adapter) in order."""
    source = source_of(binary)
    cache = binary.parents[2] / "lora"
    loras = {name: convert_adapter(path, base_hf, source, cache) for name, path in adapter_dirs.items()}
    names = ["base", *loras]
    adapter = next(iter(loras), "base")
    result: dict = {"binary": str(binary), "adapters": names}
    with serve(binary, gguf, loras, slots=1, threads=threads) as server:  # batch 1: one slot, as alone
        server.complete(story, adapter, 4)  # warm up
        for name in ("base", adapter):
            rates = [server.complete(story, name, tokens)["timings"]["predicted_per_second"] for _ in range(repeats)]
            result[f"decode_tokens_per_s_{name}"] = round(statistics.median(rates), 1)
        first = [server.complete(rag_turn, adapter, 1)["timings"] for _ in range(repeats)]
        result["rag_prefill_s"] = round(statistics.median(t["prompt_ms"] / 1000 for t in first), 3)
        turns = [server.complete(rag_turn, adapter, tokens)["timings"] for _ in range(repeats)]
        result["rag_turn_s"] = round(statistics.median((t["prompt_ms"] + t["predicted_ms"]) / 1000 for t in turns), 2)
        result["startup_s"] = round(server.ready_s, 2)
        result["peak_rss_mb"] = round(server.peak_rss_mb())  # one slot (2,048 tokens of cache)
    with serve(binary, gguf, loras, slots=8, threads=threads) as server:  # continuous batching, 8 slots
        server.complete(story, adapter, 4)
        for users in (1, 4, 8):
            result[f"concurrent_{users}"] = load(server, rag_jobs[:users], tokens)
        result["concurrent_8_decode_only"] = load(server, [(story, name) for _, name in rag_jobs[:8]], tokens)
        result["peak_rss_mb_8_slots"] = round(server.peak_rss_mb())
    return result
