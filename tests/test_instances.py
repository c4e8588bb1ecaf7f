"""Several instances on one PostgreSQL database and one Chroma server (both real, on loopback).

In one process: the instances elect one syncer, a dropped file is searchable from both, and a
syncer killed with SIGKILL mid-sync is taken over, the index converging exactly. With real
``chatbot serve`` processes: conversations and feedback alternate between two servers with none
lost, one server is killed and restarted, and losing the database answers 503 until it is back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from chatbot.server.openai_api import unavailable_error
from tests.servers import free_port, running_chroma, server_process
from tests.test_sync import indexed
from tests.test_sync_robust import paragraph, wait_for

LEASE_S = 2.0  # the shortest lease the settings allow: a dead syncer is replaced in ~3 s


@pytest.fixture
def shared(tmp_path, postgres):
    """Settings of instances that share everything: one new database, one Chroma server."""
    with running_chroma(tmp_path / "chroma-server") as chroma:
        yield {"database_url": postgres.create(), "chroma_url": chroma, "sync_lease_s": LEASE_S}


def sources(bot, question: str) -> list[str]:
    return [document.metadata["source"] for document in bot.chain.retrieve(question)]


def test_instances_elect_one_syncer_and_a_dropped_file_is_searchable_from_both(make_bot, knowledge, tmp_path, shared):
    (knowledge / "ferry.md").write_text("The ferry leaves the harbor every hour, from pier four.")
    one = make_bot(data_dir=tmp_path / "one", **shared)
    two = make_bot(data_dir=tmp_path / "two", **shared)
    try:
        one.watch(debounce_s=0.3)
        two.watch(debounce_s=0.3)
        assert [one.election.is_syncer, two.election.is_syncer].count(True) == 1
        syncer, other = (one, two) if one.election.is_syncer else (two, one)
        assert one.syncer()["syncer"] == two.syncer()["syncer"] == syncer.instance_id
        wait_for(lambda: one.status().documents == two.status().documents == 1, 60)  # synced on election

        (knowledge / "heron.md").write_text("The herons at the lake are fed fresh sardines at dawn.")
        dropped = time.monotonic()
        wait_for(
            lambda: (
                sources(one, "What are the herons fed?")[:1]
                == sources(two, "What are the herons fed?")[:1]
                == ["heron.md"]
            ),
            30,
            every=0.1,
        )
        print(f"dropped file searchable from both after {time.monotonic() - dropped:.1f} s")
        assert other.knowledge.state.last_report is None  # the other instance never synced: it only served
        assert other.status().watcher == "another instance syncs" and syncer.status().watcher != other.status().watcher

        syncer.close()  # stops and gives the lease up: the other takes over without waiting for it to lapse
        wait_for(lambda: other.election.is_syncer, 10, every=0.1)
        (knowledge / "ferry.md").unlink()
        wait_for(lambda: other.status().documents == 1, 30)
        assert "ferry.md" not in sources(other, "When does the ferry leave?")
    finally:
        one.close()
        two.close()


def test_an_instance_follows_the_collection_another_one_re_created(make_bot, knowledge, tmp_path, shared):
    (knowledge / "ferry.md").write_text("The ferry leaves the harbor every hour, from pier four.")
    one = make_bot(data_dir=tmp_path / "one", **shared)
    two = make_bot(data_dir=tmp_path / "two", **shared)
    assert sources(two, "When does the ferry leave?") == []
    one.store.reset_collection()  # what a sync does to re-build the index for another embedding model
    one.sync()
    assert sources(two, "When does the ferry leave?") == ["ferry.md"]  # not "collection does not exist"


def test_an_instance_says_when_its_vector_store_is_away_and_recovers_when_it_returns(make_bot, knowledge, tmp_path):
    (knowledge / "ferry.md").write_text("The ferry leaves the harbor every hour, from pier four.")
    port = free_port()
    with running_chroma(tmp_path / "chroma-server", port) as chroma:
        bot = make_bot(chroma_url=chroma)
        bot.sync()
        assert bot.problems() == {}
    problems = bot.problems()  # the server is gone
    assert set(problems) == {"vector_store"}
    with pytest.raises(Exception) as failure:
        bot.chain.retrieve("When does the ferry leave?")
    assert unavailable_error(failure.value).status == 503  # the API's answer to it
    with running_chroma(tmp_path / "chroma-server", port):  # back, with its data
        assert bot.problems() == {}
        assert sources(bot, "When does the ferry leave?") == ["ferry.md"]


WATCHER = """
import time
from chatbot.app.service import Chatbot
from chatbot.config import load_settings
bot = Chatbot(load_settings())
bot.watch(debounce_s=0.3)
print("syncer" if bot.election.is_syncer else "waiting", flush=True)
time.sleep(3600)
"""


def test_the_syncer_killed_mid_sync_is_taken_over_and_the_index_is_exact(make_bot, knowledge, tmp_path, shared):
    for number in range(30):
        (knowledge / f"doc-{number:02}.md").write_text("\n\n".join(paragraph(number * 10 + i) for i in range(10)))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")},
        "CHATBOT_KNOWLEDGE_DIR": str(knowledge),
        "CHATBOT_DATA_DIR": str(tmp_path / "killed"),
        **{f"CHATBOT_{key.upper()}": str(value) for key, value in shared.items()},
    }
    records = create_engine(shared["database_url"])

    def written() -> int:
        try:
            with records.connect() as db:
                return db.execute(text("SELECT count(*) FROM upsertion_record")).scalar_one()
        except ProgrammingError:  # its record manager's table is not made yet
            return 0

    child = subprocess.Popen([sys.executable, "-c", WATCHER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "syncer"
        wait_for(lambda: written() >= 64, 120, every=0.05)  # its first batch of chunks is in
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed = time.monotonic()
    left = written()

    heir = make_bot(data_dir=tmp_path / "heir", **shared)
    try:
        heir.watch(debounce_s=0.3)
        wait_for(lambda: heir.election.is_syncer, 30, every=0.1)
        print(f"took over {time.monotonic() - killed:.1f} s after the kill (lease {LEASE_S} s)")
        state = heir.knowledge.state
        wait_for(lambda: state.last_report is not None or state.last_error, 300)
        assert state.last_error is None and not state.last_report.errors
        clean = make_bot(data_dir=tmp_path / "clean")  # one embedded instance: what the index must be
        clean.sync()
        assert 0 < left < sum(indexed(clean).values())  # the kill landed mid-way
        assert indexed(heir) == indexed(clean)
        ids = heir.store.get(include=[])["ids"]
        assert len(ids) == len(set(ids)) == sum(indexed(clean).values())
        assert sorted(ids) == sorted(clean.store.get(include=[])["ids"])  # the same chunk ids
        assert sorted(heir.knowledge.records.list_keys()) == sorted(ids)
        assert heir.sync().wrote_nothing
    finally:
        heir.close()
        records.dispose()


# --- real servers ---------------------------------------------------------------------------------

TURNS = int(os.environ.get("INSTANCES_TURNS", "12"))  # each turn is two requests (its answer, its feedback)


def ask(url: str, question: str, conversation: str | None = None) -> dict:
    body = {"model": "base", "messages": [{"role": "user", "content": question}], "max_tokens": 8}
    if conversation:
        body["conversation_id"] = conversation
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def health(url: str) -> httpx.Response:
    return httpx.get(url + "/health", timeout=10)


def test_two_servers_share_conversations_feedback_and_the_sync_and_survive_losing_one(
    knowledge, tmp_path, shared, postgres, no_adapters
):
    (knowledge / "ferry.md").write_text("The ferry leaves the harbor every hour, from pier four.")
    settings = {key: str(value) for key, value in shared.items()}
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
    started: dict[int, tuple] = {}
    contexts = [server_process(folder, knowledge, no_adapters, **settings) for folder in folders]

    def start(number: int) -> None:
        started[number] = contexts[number].__enter__()

    threads = [threading.Thread(target=start, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        urls = [started[0][0], started[1][0]]
        states = [health(url).json() for url in urls]
        assert states[0]["syncer"] == states[1]["syncer"] and states[0]["syncer"]
        assert [state["syncs_here"] for state in states].count(True) == 1
        wait_for(lambda: all(health(url).json()["documents"] == 1 for url in urls), 60)

        # conversations and feedback alternate between the instances: none lost
        conversation = None
        turn_ids = []
        for number in range(TURNS):
            reply = ask(urls[number % 2], f"When does the ferry leave? ({number})", conversation)
            conversation = conversation or reply["conversation_id"]
            assert reply["conversation_id"] == conversation
            turn_ids.append(reply["turn_id"])
            verdict = {"verdict": "up" if number % 3 else "down"}
            feedback = httpx.put(
                f"{urls[(number + 1) % 2]}/v1/conversations/{conversation}/turns/{reply['turn_id']}/feedback",
                json=verdict,
                timeout=30,
            )
            assert feedback.status_code == 200, feedback.text
        for url in urls:
            saved = httpx.get(f"{url}/v1/conversations/{conversation}", timeout=30).json()
            assert [turn["turn_id"] for turn in saved["messages"]] == turn_ids
            assert sum(turn["feedback"] is not None for turn in saved["messages"]) == TURNS
        exported = subprocess.run(
            [sys.executable, "-m", "chatbot.cli", "feedback", "export"],
            env={**os.environ, "CHATBOT_DATABASE_URL": shared["database_url"], "CHATBOT_DATA_DIR": str(tmp_path / "c")},
            capture_output=True,
            text=True,
            check=True,
        )
        assert len(exported.stdout.splitlines()) == TURNS  # feedback given on either, exported by a third

        # a dropped file is searchable from both
        (knowledge / "heron.md").write_text("The herons at the lake are fed fresh sardines at dawn.")
        dropped = time.monotonic()
        wait_for(lambda: all(health(url).json()["documents"] == 2 for url in urls), 30, every=0.1)
        print(f"dropped file indexed for both after {time.monotonic() - dropped:.1f} s")
        for url in urls:
            reply = ask(url, "What are the herons fed?")
            saved = httpx.get(f"{url}/v1/conversations/{reply['conversation_id']}", timeout=30).json()
            assert saved["messages"][-1]["retrieved"][0]["source"] == "heron.md"

        # the syncer is killed: the other takes over; restarted, it serves the same conversation
        syncing = 0 if health(urls[0]).json()["syncs_here"] else 1
        survivor = urls[1 - syncing]
        started[syncing][1].send_signal(signal.SIGKILL)
        started[syncing][1].wait()
        contexts[syncing].__exit__(None, None, None)
        killed = time.monotonic()
        wait_for(lambda: health(survivor).json()["syncs_here"], 30, every=0.2)
        print(f"syncer taken over {time.monotonic() - killed:.1f} s after SIGKILL")
        (knowledge / "ferry.md").unlink()
        wait_for(lambda: health(survivor).json()["documents"] == 1, 30)
        contexts[syncing] = server_process(folders[syncing], knowledge, no_adapters, **settings)
        started[syncing] = contexts[syncing].__enter__()
        restarted = started[syncing][0]
        assert health(restarted).json()["documents"] == 1 and not health(restarted).json()["syncs_here"]
        reply = ask(restarted, "And on Sundays?", conversation)
        assert reply["conversation_id"] == conversation
        saved = httpx.get(f"{survivor}/v1/conversations/{conversation}", timeout=30).json()
        assert len(saved["messages"]) == TURNS + 1

        # the database goes away: 503 with the reason; back: both recover by themselves
        postgres.stop()
        try:
            for url in (survivor, restarted):
                down = health(url)
                assert down.status_code == 503 and "database" in down.json()["unavailable"]
            failed = httpx.post(
                survivor + "/v1/chat/completions",
                json={
                    "model": "base",
                    "messages": [{"role": "user", "content": "Still there?"}],
                    "max_tokens": 4,
                    "conversation_id": conversation,  # its history is in the database
                },
                timeout=60,
            )
            assert failed.status_code == 503 and failed.json()["error"]["code"] == "database_unavailable"
        finally:
            postgres.start()
        wait_for(lambda: all(health(url).status_code == 200 for url in (survivor, restarted)), 30)
        assert len(ask(survivor, "Back?", conversation)["conversation_id"]) == 32
    finally:
        for context in contexts:
            context.__exit__(None, None, None)
