"""A base model named by its hub id: fetched once from a hub (one the test serves on loopback),
then loaded from the cache without the network; refused by name when it cannot be fetched."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from chatbot.models.hub import parse_hub_id
from tests.conftest import MODEL_CACHE, tiny_llama
from tests.hub import Hub, running_hub
from tests.servers import free_port

REPO_ID = "tests/tiny-chat"


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory):
    """A two-layer random Llama with the embedded model's tokenizer and chat template."""
    from chatbot.models.sources import gguf_cache_folder, resolve_model_source

    folder = tmp_path_factory.mktemp("tiny-chat")
    tiny_llama(vocab_size=49152).save_pretrained(folder)
    embedded = gguf_cache_folder(resolve_model_source("embedded"), MODEL_CACHE)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (embedded / name).is_file():
            shutil.copy(embedded / name, folder / name)
    (folder / "pytorch_model.bin").write_bytes(b"pickles are never fetched")
    return folder


def chatbot(tmp_path, endpoint: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATBOT_", "HF_"))}
    env.update(extra)
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HUB_DISABLE_TELEMETRY="1",
        CHATBOT_BASE_MODEL=REPO_ID,
        CHATBOT_ENGINE="torch",
        CHATBOT_CACHE_DIR=str(tmp_path / "cache"),
        CHATBOT_DATA_DIR=str(tmp_path / "data"),
        CHATBOT_KNOWLEDGE_DIR=str(tmp_path / "knowledge"),
        CHATBOT_ADAPTERS_DIR=str(tmp_path / "adapters"),
        CHATBOT_MAX_NEW_TOKENS="4",
    )
    command = [sys.executable, "-m", "chatbot.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_hub_ids_are_told_apart_from_paths(tmp_path):
    assert parse_hub_id("Qwen/Qwen2.5-1.5B-Instruct") == ("Qwen/Qwen2.5-1.5B-Instruct", None)
    assert parse_hub_id("Qwen/Qwen2.5-1.5B-Instruct@v1.0") == ("Qwen/Qwen2.5-1.5B-Instruct", "v1.0")
    for not_an_id in ("embedded", "/models/qwen", "./models/qwen", "models/qwen/extra", "model.gguf", "a/b c"):
        assert parse_hub_id(not_an_id) is None, not_an_id
    (tmp_path / "owner" / "model").mkdir(parents=True)
    os.chdir(tmp_path)
    assert parse_hub_id("owner/model") is None  # a local folder of that name wins


def test_a_hub_id_is_fetched_once_then_served_from_the_cache_without_the_network(tmp_path, tiny_chat):
    hub = Hub()
    commit = hub.add(REPO_ID, tiny_chat)
    with running_hub(hub) as url:
        done = chatbot(tmp_path, url, "ask", "Say hello", "--no-retrieval", "--local", "--json")
        assert done.returncode == 0, done.stderr
        assert "fetching tests/tiny-chat from the hub" in done.stderr
        fetched = hub.downloads
        assert fetched >= 3  # config, weights, tokenizer files
    snapshot = tmp_path / "cache" / "hub" / "models--tests--tiny-chat" / "snapshots" / commit
    assert (snapshot / "model.safetensors").is_file() and not (snapshot / "pytorch_model.bin").exists()
    # the hub is gone: the next start loads the cached snapshot and says which commit it is
    closed = f"http://127.0.0.1:{free_port()}"
    again = chatbot(tmp_path, closed, "ask", "Say hello", "--no-retrieval", "--local", "--json")
    assert again.returncode == 0, again.stderr
    assert "fetching" not in again.stderr and json.loads(again.stdout)["answer"]
    info = json.loads(chatbot(tmp_path, closed, "info", "--json").stdout)["base_model"]
    assert (info["name"], info["revision"], info["folder"]) == (REPO_ID, commit, str(snapshot))


def test_a_hub_id_that_cannot_be_fetched_is_refused_naming_the_setting(tmp_path, tiny_chat):
    closed = f"http://127.0.0.1:{free_port()}"
    done = chatbot(tmp_path, closed, "ask", "Say hello", "--no-retrieval", "--local")
    assert done.returncode == 2
    assert "base_model: 'tests/tiny-chat' is not a local folder or .gguf file, and fetching it" in done.stderr
    assert "Traceback" not in done.stderr
    hub = Hub()  # online, but no such repository
    hub_with_it = Hub()
    hub_with_it.add(REPO_ID, tiny_chat)
    with running_hub(hub) as url, running_hub(hub_with_it) as other:
        missing = chatbot(tmp_path, url, "ask", "Say hello", "--no-retrieval", "--local")
        offline = chatbot(tmp_path, other, "ask", "Say hello", "--no-retrieval", "--local", HF_HUB_OFFLINE="1")
    assert offline.returncode == 2 and "HF_HUB_OFFLINE is set" in offline.stderr and hub_with_it.downloads == 0
    assert missing.returncode == 2 and "base_model: 'tests/tiny-chat'" in missing.stderr
    assert "Traceback" not in missing.stderr
