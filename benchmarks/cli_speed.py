"""How long a command takes: ``chatbot info``, ``adapters list`` and ``ask``, with and without a running server.

    .venv/bin/python benchmarks/cli_speed.py [--repeats 3]

Copies the user guide into a temporary data dir, syncs it once, then times each command as a
user runs it (a fresh process, wall clock, median of the repeats): ``info`` and ``adapters list``
read the files; ``info --load`` and ``ask --local`` load the model as every command did before;
then ``chatbot serve`` starts, and ``info`` and ``ask`` go to it. For ``ask`` the overhead is the
wall time less the server's own time for the answer (retrieval and generation, ``timings.total_s``).
Prints the CPU's vector flags.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from run import cpu_flags  # benchmarks/run.py, next to this script

REPO = Path(__file__).resolve().parents[1]
QUESTION = "How do I refresh the knowledge base?"


def command(env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "chatbot"), *args], env=env, capture_output=True, text=True, check=True
    )
    return time.perf_counter() - started, done.stdout


def timed(env: dict[str, str], repeats: int, *args: str) -> tuple[float, list[str]]:
    runs = [command(env, *args) for _ in range(repeats)]
    return statistics.median(seconds for seconds, _ in runs), [out for _, out in runs]


def ask_overhead(env: dict[str, str], repeats: int, *extra: str) -> tuple[float, float]:
    walls, overheads = [], []
    for _ in range(repeats):
        seconds, out = command(env, "ask", QUESTION, "--json", *extra)
        walls.append(seconds)
        overheads.append(seconds - json.loads(out)["timings"]["total_s"])
    return statistics.median(walls), statistics.median(overheads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU flags: {cpu_flags()}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        shutil.copytree(REPO / "knowledge", root / "knowledge")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
        env.update(
            CHATBOT_KNOWLEDGE_DIR=str(root / "knowledge"),
            CHATBOT_ADAPTERS_DIR=str(REPO / "adapters"),
            CHATBOT_DATA_DIR=str(root / "data"),
            CHATBOT_CACHE_DIR=str(REPO / ".chatbot" / "cache"),
            CHATBOT_PORT="7871",
        )
        command(env, "sync")
        rows = [
            ("chatbot info", timed(env, args.repeats, "info")[0], "files"),
            ("chatbot adapters list", timed(env, args.repeats, "adapters", "list")[0], "files"),
            ("chatbot info --load", timed(env, 1, "info", "--load")[0], "loads the model"),
        ]
        wall, overhead = ask_overhead(env, 1, "--local")
        rows.append(("chatbot ask --local", wall, f"loads the model; {overhead:.2f} s beside the answer"))
        server = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "chatbot"), "serve"], env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            print(server.stdout.readline().strip())  # "ready in ..."
            while not (root / "data" / "server.json").is_file():
                time.sleep(0.2)
            rows.append(("chatbot info (server running)", timed(env, args.repeats, "info")[0], "asks the server"))
            wall, overhead = ask_overhead(env, args.repeats)
            rows.append(("chatbot ask (server running)", wall, f"{overhead:.2f} s beside the answer"))
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"\n| command | seconds (median of {args.repeats}) | |\n| --- | ---: | --- |")
    for name, seconds, note in rows:
        print(f"| `{name}` | {seconds:.2f} | {note} |")


if __name__ == "__main__":
    main()
