"""Files read in a worker process: a file that needs too much memory or time is refused by name,
and the process that syncs (the server) does not grow."""

import psutil

from chatbot.knowledge.isolated import IsolatedReader
from chatbot.knowledge.loaders import LoadLimits


def _tiny_objects(path, count: int) -> None:
    """A JSON list of millions of small objects: a few tens of MB on disk, gigabytes once parsed."""
    with path.open("w") as handle:
        handle.write("[")
        handle.write(",".join(['{"a":1}'] * count))
        handle.write("]")


def test_a_file_that_needs_more_memory_than_the_worker_has_is_refused_and_the_server_does_not_grow(make_bot, knowledge):
    (knowledge / "note.md").write_text("# Note\n\nThe gate code is 4711.\n")
    bot = make_bot(max_file_chars=100_000_000, load_memory_mb=512)
    assert bot.sync().added == ["note.md"]  # the models are loaded: what grows from here is the file's
    _tiny_objects(knowledge / "bomb.json", 4_000_000)
    (knowledge / "other.md").write_text("# Other\n\nThe porter leaves at 23:00.\n")
    process = psutil.Process()
    before = process.memory_info().rss
    report = bot.sync()
    grown = process.memory_info().rss - before
    assert report.added == ["other.md"]
    assert "needs more than 512 MB of memory (setting load_memory_mb)" in report.errors["bomb.json"]
    assert grown < 100 * 2**20, f"the syncing process grew by {grown / 2**20:.0f} MB"
    (knowledge / "later.md").write_text("# Later\n\nThe night bus leaves at 01:10.\n")
    assert bot.sync().added == ["later.md"]  # the next file is read as usual


def test_a_file_that_takes_too_long_is_refused_and_the_next_one_read_by_a_fresh_worker(tmp_path):
    slow = tmp_path / "slow.csv"
    slow.write_text("name,price\n" + "".join(f"item {i},{i}.99\n" for i in range(300_000)))
    quick = tmp_path / "quick.md"
    quick.write_text("# Quick\n\nA short note.\n")
    reader = IsolatedReader(memory_mb=1024, timeout_s=0.2)
    try:
        from chatbot.knowledge.loaders import LoadError

        try:
            reader.read(slow, LoadLimits(max_chars=100_000_000))
            raise AssertionError("a 300,000-row file was read within 0.2 s")
        except LoadError as exc:
            assert "took longer than 0.2 s (setting load_timeout_s)" in str(exc)
        assert reader.restarts == 1
        assert "A short note." in reader.read(quick, LoadLimits())[0].text
    finally:
        reader.close()
