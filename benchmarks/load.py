"""Load benchmark: concurrent conversations over the OpenAI-compatible API with mixed adapters.

    .venv/bin/python benchmarks/load.py [--url http://127.0.0.1:7860] [--conversations 20] [--turns 2]

Without ``--url`` it serves this repository's knowledge/ and adapters/ in-process (uvicorn on
a free loopback port, the same app as ``chatbot serve``). Each conversation asks a question
and then a follow-up that carries the history, on adapters taken in turn from the server's
list. Prints errors (should be 0), per-request latency p50/p95, time to first token and the
aggregate tokens/s; writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    ("How do I refresh the knowledge base?", "What happens to files that did not change?"),
    ("How do I train a new adapter?", "How long does that take?"),
    ("Which file types can I put in the knowledge folder?", "And what about scanned PDFs?"),
    ("How do I switch the domain adapter?", "Does that need a restart?"),
    ("Where do I change the model settings?", "Can I use environment variables instead?"),
]


@contextmanager
def local_server(max_new_tokens: int, concurrency: int):
    """Serve the repository's folders in a background thread; yields the base URL."""
    import uvicorn

    from chatbot.app.service import Chatbot
    from chatbot.config import load_settings
    from chatbot.server.app import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        settings = load_settings(
            knowledge_dir=REPO / "knowledge",
            adapters_dir=REPO / "adapters",
            data_dir=Path(data),
            cache_dir=REPO / ".chatbot" / "cache",
            max_new_tokens=max_new_tokens,
            concurrency_limit=concurrency,
        )
        bot = Chatbot(settings)
        bot.sync()
        bot.chain  # noqa: B018 - load the model first
        server = uvicorn.Server(uvicorn.Config(create_app(bot), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.1)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def conversation(client, model: str, questions: tuple[str, ...], max_tokens: int) -> list[dict]:  # noqa: ANN001
    """Ask the questions in turn, streaming; one record per request."""
    messages: list[dict] = []
    records = []
    for question in questions:
        messages.append({"role": "user", "content": question})
        started = time.perf_counter()
        first = None
        text, usage, error = "", {}, None
        try:
            stream = client.chat.completions.create(model=model, messages=messages, stream=True, max_tokens=max_tokens)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter() - started
                    text += chunk.choices[0].delta.content
                if chunk.usage:
                    usage = {"completion_tokens": chunk.usage.completion_tokens}
        except Exception as exc:  # counted and reported, the run goes on
            error = f"{type(exc).__name__}: {exc}"
        records.append(
            {
                "model": model,
                "latency_s": time.perf_counter() - started,
                "first_token_s": first,
                "completion_tokens": usage.get("completion_tokens", 0),
                "error": error,
            }
        )
        messages.append({"role": "assistant", "content": text})
    return records


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered else float("nan")


def run(url: str, conversations: int, turns: int, max_tokens: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="bench", timeout=1800, max_retries=0)
    models = [model.id for model in client.models.list()]
    jobs = [(models[i % len(models)], QUESTIONS[i % len(QUESTIONS)][:turns]) for i in range(conversations)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=conversations) as pool:
        results = list(pool.map(lambda job: conversation(client, job[0], job[1], max_tokens), jobs))
    wall = time.perf_counter() - started
    records = [record for result in results for record in result]
    ok = [r for r in records if not r["error"]]
    latencies = [r["latency_s"] for r in ok]
    firsts = [r["first_token_s"] for r in ok if r["first_token_s"] is not None]
    tokens = sum(r["completion_tokens"] for r in ok)
    return {
        "url": url,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "conversations": conversations,
        "requests": len(records),
        "models": models,
        "errors": len(records) - len(ok),
        "error_messages": sorted({r["error"] for r in records if r["error"]})[:5],
        "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 0.95), 2),
        "first_token_p50_s": round(statistics.median(firsts), 2) if firsts else None,
        "completion_tokens": tokens,
        "wall_s": round(wall, 1),
        "tokens_per_s": round(tokens / wall, 1),
        "records": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="A running server; default: serve this repository in-process.")
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--turns", type=int, default=2, choices=[1, 2])
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "load.json")
    args = parser.parse_args()
    if args.url:
        figures = run(args.url, args.conversations, args.turns, args.max_tokens)
    else:
        with local_server(args.max_tokens, concurrency=1) as url:
            figures = run(url, args.conversations, args.turns, args.max_tokens)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(
        f"{figures['conversations']} concurrent conversations, {figures['requests']} requests on {figures['models']}\n"
        f"  errors:            {figures['errors']} {figures['error_messages'] or ''}\n"
        f"  latency p50 / p95: {figures['latency_p50_s']} s / {figures['latency_p95_s']} s\n"
        f"  first token p50:   {figures['first_token_p50_s']} s\n"
        f"  throughput:        {figures['completion_tokens']} tokens in {figures['wall_s']} s = "
        f"{figures['tokens_per_s']} tokens/s\n"
        f"  figures written to {args.out}"
    )


if __name__ == "__main__":
    main()
