"""The remote chat model and adapter list, against a real `chatbot serve` as the OpenAI-compatible server."""

from __future__ import annotations

import shutil
import threading

import pytest

from chatbot.backends.remote import RemoteAdapters, RemoteChatModel
from chatbot.vocabulary import GenerationParams, GenerationStats, ModelCall
from tests.conftest import REPO
from tests.servers import free_port, running_server

PROMPT = [{"role": "user", "content": "Describe the sea in one sentence."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A generation server with the shipped support adapter and no knowledge (answers from the model alone)."""
    folder = tmp_path_factory.mktemp("generation")
    (folder / "knowledge").mkdir()
    shutil.copytree(REPO / "adapters" / "support", folder / "adapters" / "support")
    with running_server(folder, folder / "knowledge", folder / "adapters") as url:
        yield url + "/v1"


def _llm(url: str, **fields: object) -> RemoteChatModel:
    return RemoteChatModel(base_url=url, extra_body={"use_retrieval": False}, **fields)


def _text(llm: RemoteChatModel, adapter: str, params: GenerationParams, stats: GenerationStats | None = None) -> str:
    return "".join(llm.pieces(PROMPT, params, ModelCall(adapter, stats=stats or GenerationStats())))


def test_the_adapter_goes_as_the_model_name_and_the_reply_streams_with_usage(server):
    from openai import OpenAI

    llm = _llm(server)
    params = GenerationParams(max_new_tokens=12)
    stats = GenerationStats()
    pieces = list(llm.pieces(PROMPT, params, ModelCall("support", stats=stats)))
    assert len(pieces) > 1 and stats.first_token_s is not None and stats.seconds >= stats.first_token_s
    assert 0 < stats.new_tokens <= 12 and stats.prompt_tokens > 0
    direct = OpenAI(base_url=server, api_key="unused").chat.completions.create(
        model="support", messages=PROMPT, max_tokens=12, temperature=0.0, extra_body={"use_retrieval": False}
    )
    assert "".join(pieces) == direct.choices[0].message.content  # same adapter, same greedy reply
    assert llm.model_id("base") == "base" and _text(llm, "base", params) != "".join(pieces)


def test_a_seed_makes_sampling_repeatable_over_the_wire(server):
    llm = _llm(server)
    seven = GenerationParams(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=7)
    assert _text(llm, "base", seven) == _text(llm, "base", seven)
    others = {
        _text(llm, "base", GenerationParams(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=s)) for s in (8, 9)
    }
    assert others != {_text(llm, "base", seven)}


def test_stop_strings_go_over_the_wire_and_the_server_stops_there(server):
    llm = _llm(server)
    whole_stats, cut_stats = GenerationStats(), GenerationStats()
    whole = _text(llm, "base", GenerationParams(max_new_tokens=24), whole_stats)
    stop = whole.split()[len(whole.split()) // 2]
    cut = _text(llm, "base", GenerationParams(max_new_tokens=24, stop=(stop,)), cut_stats)
    assert cut == whole[: whole.index(stop)] and cut_stats.new_tokens < whole_stats.new_tokens


def test_cancelling_closes_the_stream_and_the_server_answers_the_next_request(server):
    llm = _llm(server)
    params = GenerationParams(max_new_tokens=40)
    full = list(llm.pieces(PROMPT, params, ModelCall()))
    cancelled = threading.Event()
    got = []
    for piece in llm.pieces(PROMPT, params, ModelCall(cancelled=cancelled)):
        got.append(piece)
        cancelled.set()
    assert len(got) == 1 < len(full)
    assert _text(llm, "support", GenerationParams(max_new_tokens=4))


def test_remote_adapters_list_the_servers_models_with_local_manifests(server, tmp_path):
    local = tmp_path / "adapters"
    shutil.copytree(REPO / "adapters" / "support", local / "support")
    registry = RemoteAdapters(_llm(server), local, "You answer briefly.")
    registry.refresh(force=True)
    assert [domain.name for domain in registry.list()] == ["base", "support"]
    support = registry.get("support")
    assert support.display_name == "Helpdesk" and "helpdesk" in support.system_prompt

    (local / "support" / "domain.toml").write_text("display_name = [unclosed")  # a bad local manifest
    registry.refresh(force=True)
    plain = registry.get("support")
    assert plain.display_name == "support" and plain.ready and "domain.toml ignored" in plain.warnings[0]


def test_an_unreachable_server_is_a_connection_error_not_a_hang():
    from openai import APIConnectionError

    llm = _llm(f"http://127.0.0.1:{free_port()}/v1", timeout_s=5.0)
    with pytest.raises(APIConnectionError):
        _text(llm, "base", GenerationParams(max_new_tokens=4))
