"""Start `chatbot serve` for real, as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import MODEL_CACHE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(folder: Path, knowledge: Path, adapters: Path, **settings: str) -> dict[str, str]:
    """The environment of a server (or of a command of its data dir) with these folders and settings."""
    # CHATBOT_ENGINE passes through, so the suite can run the servers on either engine
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_") or k == "CHATBOT_ENGINE"}
    env.update(
        CHATBOT_KNOWLEDGE_DIR=str(knowledge),
        CHATBOT_ADAPTERS_DIR=str(adapters),
        CHATBOT_DATA_DIR=str(folder / "data"),
        CHATBOT_CACHE_DIR=str(MODEL_CACHE),
        CHATBOT_MAX_NEW_TOKENS="40",
    )
    env.update({key if key.startswith("CHATBOT_") else f"CHATBOT_{key.upper()}": v for key, v in settings.items()})
    return env


@contextmanager
def running_server(folder: Path, knowledge: Path, adapters: Path, **settings: str) -> Iterator[str]:
    """The URL of a server with these folders and ``CHATBOT_*`` settings; stopped on exit."""
    with server_process(folder, knowledge, adapters, **settings) as (url, _process):
        yield url


@contextmanager
def server_process(
    folder: Path, knowledge: Path, adapters: Path, **settings: str
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Like :func:`running_server`, with the process (to signal it); its log is ``folder/serve-PORT.log``."""
    port = free_port()
    env = server_env(folder, knowledge, adapters, CHATBOT_PORT=str(port), **settings)
    log_path = folder / f"serve-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "chatbot.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError("server exited: " + log_path.read_text())
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("server did not start: " + log_path.read_text())
            time.sleep(0.5)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_chroma(folder: Path, port: int | None = None) -> Iterator[str]:
    """A real ``chroma run`` on loopback (on ``port``, else a free one), storing in ``folder``; its URL."""
    port = port or free_port()
    chroma = os.path.join(os.path.dirname(sys.executable), "chroma")
    server = subprocess.Popen(
        [chroma, "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("chroma run did not start")
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=20)
