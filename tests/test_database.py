"""The shared state's database: migrations (fresh, repeated, from the files of earlier versions, from a
newer app), and the lease that elects one syncer, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import inspect, text

from chatbot.database import BRANCHES, DatabaseError, migrate, open_engine
from chatbot.database.lease import Lease, LeaseLost
from chatbot.knowledge.keywords import KeywordIndex
from chatbot.knowledge.manifest import Manifest


def test_every_branch_migrates_into_one_database_once(database):
    engine = open_engine(database)
    for branch in BRANCHES:
        migrate(engine, branch, collection="knowledge")
        migrate(engine, branch, collection="knowledge")  # again: nothing to do, nothing fails
    with engine.connect() as db:
        versions = set(db.execute(text("SELECT version_num FROM alembic_version")).scalars())
    assert versions == {f"{branch}_0001" for branch in BRANCHES}
    tables = set(inspect(engine).get_table_names())
    assert {"conversations", "turns", "feedback", "upsertion_record", "knowledge_files", "leases"} <= tables
    assert "keyword_chunks" in tables
    engine.dispose()


def test_a_bad_database_url_is_refused_by_name():
    with pytest.raises(DatabaseError, match="database_url"):
        open_engine("not a url")
    with pytest.raises(DatabaseError, match="database_url"):
        open_engine("nosuchdialect://host/db")


def test_manifest_and_keyword_files_of_earlier_versions_move_under_their_collection(tmp_path):
    manifest_file, keywords_file = tmp_path / "manifest-notes.sqlite", tmp_path / "keywords-notes.sqlite"
    with sqlite3.connect(manifest_file) as db:  # the manifest as versions before migrations made it
        db.executescript(
            "CREATE TABLE files (path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, pages INTEGER,"
            " chunks INTEGER NOT NULL DEFAULT 0, indexed_at REAL, error TEXT);"
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
            "INSERT INTO files VALUES ('a.md', 'sha-a', 10, NULL, 3, 5.0, NULL);"
            "INSERT INTO files VALUES ('b.pdf', 'sha-b', 99, 2, 0, NULL, 'no text found');"
            "INSERT INTO meta VALUES ('last_sync', '5.0');"
        )
    with sqlite3.connect(keywords_file) as db:
        db.execute("CREATE VIRTUAL TABLE chunks USING fts5(id UNINDEXED, text, tokenize='porter unicode61')")
        db.execute("INSERT INTO chunks VALUES ('c1', 'The Zorblax reactor runs hot.')")
    manifest = Manifest(manifest_file, "notes")
    assert manifest.all()["a.md"].chunks == 3 and manifest.all()["b.pdf"].error == "no text found"
    assert manifest.get_meta("last_sync") == "5.0"
    keywords = KeywordIndex(keywords_file, "notes")
    assert keywords.search("zorblax", 3) == ["c1"]
    for path, legacy in ((manifest_file, {"files", "meta"}), (keywords_file, {"chunks"})):
        assert not legacy & set(inspect(open_engine(path)).get_table_names())


def test_a_lease_has_one_holder_until_it_is_released_or_lapses(database):
    engine = open_engine(database)
    migrate(engine, "manifest", collection="knowledge")
    first, second = Lease(engine, "syncer:x", "one", ttl_s=0.6), Lease(engine, "syncer:x", "two", ttl_s=0.6)
    assert first.acquire() and not second.acquire()
    assert first.acquire()  # renewed
    assert first.current().holder == "one"
    first.release()
    assert first.current() is None
    assert second.acquire() and not first.acquire()
    time.sleep(0.8)  # "two" stopped renewing: the lease lapses and "one" takes it
    assert first.current() is None
    assert first.acquire() and not second.acquire()
    assert Lease(engine, "syncer:other", "two").acquire()  # another name is another lease


def test_one_of_many_racing_instances_gets_a_free_lease(database):
    engine = open_engine(database)
    migrate(engine, "manifest", collection="knowledge")
    start, results = threading.Barrier(8), []

    def race(number: int) -> None:
        start.wait()
        results.append(Lease(engine, "syncer:race", f"instance-{number}").acquire())

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_a_held_lease_is_renewed_and_a_holder_that_lost_it_stops(database):
    engine = open_engine(database)
    migrate(engine, "manifest", collection="knowledge")
    mine, other = Lease(engine, "sync:x", "one", ttl_s=0.6), Lease(engine, "sync:x", "two", ttl_s=0.6)
    with mine.held() as heartbeat:
        time.sleep(1.5)  # longer than the lease's life: the heartbeat renewed it
        assert not other.acquire()
        heartbeat.check()
        with engine.begin() as db:  # as if it had stalled past its lease and "two" had taken it
            db.execute(text("UPDATE leases SET holder = 'two' WHERE name = 'sync:x'"))
        time.sleep(0.5)
        with pytest.raises(LeaseLost):
            heartbeat.check()
    assert other.current().holder == "two"  # releasing did not take it from the new holder
    waited = []
    assert other.acquire()
    threading.Timer(0.3, other.release).start()
    started = time.monotonic()
    with mine.held(wait_s=0.05, on_wait=waited.append):  # waits for "two" to let go
        assert time.monotonic() - started >= 0.25
    assert waited and waited[0].holder == "two"
