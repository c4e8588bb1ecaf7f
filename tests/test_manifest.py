"""The sync's manifest: what the last sync saw of each file, per collection, in SQLite or PostgreSQL."""

from __future__ import annotations

import threading

from chatbot.knowledge.manifest import Manifest


def test_records_persist_and_an_error_keeps_the_last_good_index(tmp_path):
    manifest = Manifest(tmp_path / "sub" / "manifest.sqlite", "knowledge")  # the folder is made
    manifest.record_indexed("a.md", "sha-1", 120, None, 3)
    manifest.record_indexed("b.pdf", "sha-2", 9000, 4, 11)
    good = manifest.all()["a.md"]
    assert (good.sha256, good.size, good.pages, good.chunks, good.error) == ("sha-1", 120, None, 3, None)
    assert good.indexed_at is not None and manifest.all()["b.pdf"].pages == 4

    manifest.record_error("a.md", "sha-3", 130, "no text found")  # a changed copy that fails to load
    failed = Manifest(tmp_path / "sub" / "manifest.sqlite", "knowledge").all()["a.md"]  # another instance: it persisted
    assert (failed.sha256, failed.size, failed.error) == ("sha-3", 130, "no text found")
    assert (failed.chunks, failed.indexed_at) == (3, good.indexed_at)  # what is indexed of it is unchanged

    manifest.record_error("new.txt", "sha-4", 0, "empty file")  # never indexed
    fresh = manifest.all()["new.txt"]
    assert (fresh.chunks, fresh.indexed_at, fresh.error) == (0, None, "empty file")

    manifest.record_indexed("a.md", "sha-3", 130, None, 5)  # fixed: the error is gone
    assert manifest.all()["a.md"].error is None and manifest.all()["a.md"].chunks == 5

    manifest.forget(["b.pdf", "not-there.md"])
    assert set(manifest.all()) == {"a.md", "new.txt"}


def test_meta_values_are_set_replaced_and_missing_as_none(database):
    manifest = Manifest(database, "knowledge")
    assert manifest.get_meta("last_sync") is None
    manifest.set_meta("last_sync", "1.5")
    manifest.set_meta("last_sync", "2.5")
    assert manifest.get_meta("last_sync") == "2.5"


def test_writers_on_many_threads_lose_nothing(database):
    manifest = Manifest(database, "knowledge")

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


def test_collections_in_one_database_keep_their_own_files_and_notes(database):
    first, second = Manifest(database, "knowledge"), Manifest(database, "other")
    first.record_indexed("a.md", "sha-1", 10, None, 2)
    second.record_indexed("a.md", "sha-9", 90, None, 7)
    second.record_error("b.md", "sha-2", 5, "no text found")
    first.set_meta("last_sync", "1.0")
    assert set(first.all()) == {"a.md"} and first.all()["a.md"].sha256 == "sha-1"
    assert set(second.all()) == {"a.md", "b.md"} and second.all()["a.md"].chunks == 7
    assert second.get_meta("last_sync") is None
    first.forget(["a.md"])
    assert first.all() == {} and second.all()["a.md"].sha256 == "sha-9"
