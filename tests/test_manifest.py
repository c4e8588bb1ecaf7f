"""The sync's manifest: what the last sync saw of each file, kept in SQLite across processes and threads."""

from __future__ import annotations

import threading

import pytest

from chatbot.knowledge.manifest import Manifest
from chatbot.knowledge.sqlite_file import SqliteFile


def test_records_persist_and_an_error_keeps_the_last_good_index(tmp_path):
    manifest = Manifest(tmp_path / "sub" / "manifest.sqlite")  # the folder is made
    manifest.record_indexed("a.md", "sha-1", 120, None, 3)
    manifest.record_indexed("b.pdf", "sha-2", 9000, 4, 11)
    good = manifest.all()["a.md"]
    assert (good.sha256, good.size, good.pages, good.chunks, good.error) == ("sha-1", 120, None, 3, None)
    assert good.indexed_at is not None and manifest.all()["b.pdf"].pages == 4

    manifest.record_error("a.md", "sha-3", 130, "no text found")  # a changed copy that fails to load
    failed = Manifest(tmp_path / "sub" / "manifest.sqlite").all()["a.md"]  # another instance: it persisted
    assert (failed.sha256, failed.size, failed.error) == ("sha-3", 130, "no text found")
    assert (failed.chunks, failed.indexed_at) == (3, good.indexed_at)  # what is indexed of it is unchanged

    manifest.record_error("new.txt", "sha-4", 0, "empty file")  # never indexed
    fresh = manifest.all()["new.txt"]
    assert (fresh.chunks, fresh.indexed_at, fresh.error) == (0, None, "empty file")

    manifest.record_indexed("a.md", "sha-3", 130, None, 5)  # fixed: the error is gone
    assert manifest.all()["a.md"].error is None and manifest.all()["a.md"].chunks == 5

    manifest.forget(["b.pdf", "not-there.md"])
    assert set(manifest.all()) == {"a.md", "new.txt"}


def test_meta_values_are_set_replaced_and_missing_as_none(tmp_path):
    manifest = Manifest(tmp_path / "manifest.sqlite")
    assert manifest.get_meta("last_sync") is None
    manifest.set_meta("last_sync", "1.5")
    manifest.set_meta("last_sync", "2.5")
    assert manifest.get_meta("last_sync") == "2.5"


def test_writers_on_many_threads_lose_nothing(tmp_path):
    manifest = Manifest(tmp_path / "manifest.sqlite")

    def write(worker: int) -> None:
        for index in range(25):
            manifest.record_indexed(f"{worker}/{index}.md", f"{worker}-{index}", index, None, 1)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = manifest.all()
    assert len(records) == 200 and records["7/24.md"].sha256 == "7-24"


def test_a_failed_transaction_leaves_nothing_behind(tmp_path):
    database = SqliteFile(tmp_path / "x.sqlite", "CREATE TABLE IF NOT EXISTS t (v INTEGER);")
    with pytest.raises(RuntimeError), database._connect() as db:
        db.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("crash mid-way")
    with database._connect() as db:
        db.execute("INSERT INTO t VALUES (2)")
    with database._connect() as db:
        assert [row[0] for row in db.execute("SELECT v FROM t")] == [2]
