"""Sync under stress: large files across batches, bursts through the watcher, kill -9, a Chroma server."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.servers import running_chroma
from tests.test_sync import indexed

WORDS = "harbor lantern meadow copper violet orchard falcon glacier saddle timber prism quartz".split()


def paragraph(number: int, word: str = "") -> str:
    """A distinct paragraph of about 60 embedding tokens."""
    picked = [WORDS[(number * 7 + i) % len(WORDS)] for i in range(12)]
    return f"Paragraph {number} {word}talks about " + ", ".join(picked) + f" and the number {number * 37}. " * 2


def wait_for(condition, timeout: float = 60.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"condition not met in {timeout}s")


def test_changing_one_part_of_a_file_that_straddles_batches_reembeds_only_that_part(make_bot, knowledge):
    path = knowledge / "long.md"
    text = "\n\n".join(paragraph(n) for n in range(700))
    path.write_text(text)
    bot = make_bot()
    first = bot.sync()
    total = first.chunks_added
    assert total > 130  # more than two batches of 64
    path.write_text(text.replace("Paragraph 350 talks", "Paragraph 350 walks"))  # same token count
    report = bot.sync()
    assert report.updated == ["long.md"]
    assert 1 <= report.chunks_added <= 2 and report.chunks_deleted == report.chunks_added
    assert report.chunks_skipped == total - report.chunks_added
    assert indexed(bot) == Counter({"long.md": total})
    assert sorted(bot.knowledge.records.list_keys()) == sorted(bot.store.get(include=[])["ids"])


def test_watcher_syncs_a_burst_of_200_files_once(make_bot, knowledge):
    bot = make_bot()
    bot.sync()
    watcher = bot.watch(debounce_s=1.0)
    try:
        for number in range(200):
            (knowledge / f"note-{number:03}.txt").write_text(paragraph(number))
        wait_for(lambda: watcher.status.syncs >= 1 and watcher.status.state == "idle")
        time.sleep(2.5)  # would a second sync follow?
        assert watcher.status.syncs == 1 and watcher.status.last_error is None
        assert len(indexed(bot)) == 200
        (knowledge / "note-000.txt").unlink()
        wait_for(lambda: "note-000.txt" not in indexed(bot))
        assert watcher.status.syncs == 2 and len(indexed(bot)) == 199
    finally:
        bot.close()


def test_watcher_waits_for_a_file_still_being_written(make_bot, knowledge):
    bot = make_bot()
    watcher = bot.watch(debounce_s=1.0)
    try:
        with (knowledge / "slow.txt").open("w") as handle:
            for number in range(8):  # a slow copy: a piece every 0.4 s, 3 s in all
                handle.write(paragraph(number) + "\n\n")
                handle.flush()
                time.sleep(0.4)
        wait_for(lambda: watcher.status.syncs >= 1 and watcher.status.state == "idle")
        documents = bot.store.get(include=["documents"])["documents"]
        assert watcher.status.syncs == 1
        assert any("Paragraph 7 " in document for document in documents)  # the last piece is in
    finally:
        bot.close()


def test_a_dropped_file_becomes_retrievable_through_the_watcher(make_bot, knowledge):
    bot = make_bot()
    bot.sync()
    bot.watch(debounce_s=0.5)
    try:
        (knowledge / "dropped.md").write_text("The zeppelin hangar opens at dawn on Tuesdays.")
        hit = wait_for(lambda: bot.chain.retrieve("When does the zeppelin hangar open?"), timeout=30)
        assert hit[0].metadata["source"] == "dropped.md"
    finally:
        bot.close()


KILLED_SYNC = """
import sys
from chatbot.config import load_settings
from chatbot.app.service import Chatbot
bot = Chatbot(load_settings())
bot.sync(progress=lambda stage, done, total: print(stage, done, total, flush=True))
print("finished", flush=True)
"""


def kill_a_sync(env: dict[str, str], kill_at: int) -> None:
    """Run a sync in a child process with ``env`` and SIGKILL it once ``kill_at`` chunks are embedded."""
    child = subprocess.Popen([sys.executable, "-c", KILLED_SYNC], env=env, stdout=subprocess.PIPE, text=True)
    for line in child.stdout:
        stage, done, _total = (line.split() + ["", "", ""])[:3]
        if stage == "embedding" and int(done) >= kill_at:
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("kill_at", [80, 208])
def test_sync_killed_mid_way_is_repaired_to_equal_a_clean_rebuild(
    make_settings, make_bot, knowledge, tmp_path, kill_at
):
    for number in range(60):
        (knowledge / f"doc-{number:02}.md").write_text("\n\n".join(paragraph(number * 20 + i) for i in range(20)))
    settings = make_settings()
    env = {**os.environ, "CHATBOT_KNOWLEDGE_DIR": str(knowledge), "CHATBOT_DATA_DIR": str(settings.data_dir)}
    kill_a_sync(env, kill_at)
    bot = make_bot()
    written = len(bot.store.get(include=[])["ids"])
    clean = make_bot(data_dir=tmp_path / "clean")
    clean.sync()
    assert 0 < written < sum(indexed(clean).values())  # the kill really landed mid-way
    report = bot.sync()
    assert not report.errors
    assert indexed(bot) == indexed(clean)
    ids = bot.store.get(include=[])["ids"]
    assert len(ids) == len(set(ids)) == sum(indexed(clean).values())
    assert sorted(bot.knowledge.records.list_keys()) == sorted(ids)
    assert bot.sync().wrote_nothing


@pytest.fixture
def chroma_server(tmp_path):
    """A real ``chroma run`` on loopback."""
    with running_chroma(tmp_path / "chroma-server") as url:
        yield url


def test_two_instances_share_one_knowledge_base_on_a_chroma_server(make_bot, knowledge, tmp_path, chroma_server):
    shared = {"chroma_url": chroma_server, "record_db_url": f"sqlite:///{tmp_path / 'shared-records.sqlite'}"}
    (knowledge / "a.md").write_text("The lighthouse keeper feeds the cat at noon.")
    (knowledge / "b.md").write_text("The ferry leaves the harbor every hour.")
    first = make_bot(data_dir=tmp_path / "one", **shared)
    second = make_bot(data_dir=tmp_path / "two", **shared)
    assert first.sync().chunks_added == 2
    assert not (tmp_path / "one" / "chroma").exists()  # nothing embedded locally
    report = second.sync()  # its own manifest is empty, the shared records know the chunks
    assert report.chunks_added == 0 and report.chunks_skipped == 2
    assert indexed(second) == Counter({"a.md": 1, "b.md": 1})
    hit = second.chain.retrieve("Who feeds the cat?")
    assert hit[0].metadata["source"] == "a.md"
    (knowledge / "b.md").unlink()
    first.sync()
    assert indexed(second) == Counter({"a.md": 1})
