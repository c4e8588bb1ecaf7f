"""The conversation store: per-owner isolation, search, feedback, schema version, and crash safety."""

import json
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from sqlalchemy import create_engine, text

from chatbot.chats import ChatStore, ChatStoreError, ConversationNotFoundError, source_changes
from chatbot.rag.answer import Answer, SourceRef
from chatbot.vocabulary import InputError


def answer(question: str, text: str = "It is 42 [1].", adapter: str = "base", cited: int = 1) -> Answer:
    sources = [SourceRef(n, f"doc{n}.md", None, f"snippet {n}", 0.5, chunk_id=f"c{n}") for n in range(1, cited + 1)]
    return Answer(question, text, adapter, sources=sources, retrieved=sources, timings={"total_s": 1.0})


@pytest.fixture
def store(database):
    chats = ChatStore(database)
    yield chats
    chats.close()


def test_an_answer_round_trips_with_its_sources_and_file_versions(store):
    conversation = store.create("ann")
    given = answer("What is the answer?", cited=2)
    turn = store.add_turn("ann", conversation.id, given, {"doc1.md": "aa", "doc2.md": None})
    (saved,) = store.turns("ann", conversation.id)
    assert saved.id == turn.id and saved.position == 0
    assert saved.answer.to_json() == given.to_json()
    assert saved.versions == {"doc1.md": "aa", "doc2.md": None}
    assert store.get("ann", conversation.id).title == "What is the answer?"  # the first question titles it


def test_nobody_reads_changes_or_rates_another_owners_conversation(store):
    mine = store.create("ann")
    turn = store.add_turn("ann", mine.id, answer("secret plans?"))
    store.create("bob")
    assert [c.id for c in store.conversations("ann")] == [mine.id]
    assert store.conversations("bob")[0].id != mine.id and len(store.conversations("bob")) == 1
    assert store.conversations("bob", search="secret") == []
    for attempt in (
        lambda: store.get("bob", mine.id),
        lambda: store.turns("bob", mine.id),
        lambda: store.rename("bob", mine.id, "mine now"),
        lambda: store.delete("bob", mine.id),
        lambda: store.add_turn("bob", mine.id, answer("injected")),
        lambda: store.set_feedback("bob", turn.id, verdict="down"),
    ):
        with pytest.raises(ConversationNotFoundError):
            attempt()
    assert list(store.feedback(owner="bob")) == []
    assert [t.question for t in store.turns("ann", mine.id)] == ["secret plans?"]
    assert store.get("ann", mine.id).title == "secret plans?"


def test_search_matches_titles_questions_and_answers_and_treats_wildcards_as_text(store):
    first = store.create("ann", title="Quarterly numbers")
    store.add_turn("ann", first.id, answer("revenue in Q3?", "Revenue was 100% up [1]."))
    second = store.create("ann")
    store.add_turn("ann", second.id, answer("who founded it?", "Ada [1]."))
    assert {c.id for c in store.conversations("ann", "quarterly")} == {first.id}
    assert {c.id for c in store.conversations("ann", "FOUNDED")} == {second.id}
    assert {c.id for c in store.conversations("ann", "100%")} == {first.id}
    assert {c.id for c in store.conversations("ann", "%")} == {first.id}  # a literal percent sign
    assert store.conversations("ann", "Rev%up") == []  # not "anything in between"
    assert store.conversations("ann", "_") == []
    assert [c.id for c in store.conversations("ann")] == [second.id, first.id]  # newest first
    assert store.conversations("ann", limit=1)[0].id == second.id


def test_feedback_changes_only_what_is_given_and_is_checked(store):
    conversation = store.create("ann")
    turn = store.add_turn("ann", conversation.id, answer("q?", cited=3))
    assert store.set_feedback("ann", turn.id, verdict="down").verdict == "down"
    after = store.set_feedback("ann", turn.id, correction="  It is 41.  ", wrong_sources=[3, 1, 3])
    assert (after.verdict, after.correction, after.wrong_sources) == ("down", "It is 41.", (1, 3))
    assert store.set_feedback("ann", turn.id, verdict=None).correction == "It is 41."  # thumbs cleared, rest kept
    with pytest.raises(InputError, match="block numbers the answer cites"):
        store.set_feedback("ann", turn.id, wrong_sources=[4])
    with pytest.raises(InputError, match="verdict"):
        store.set_feedback("ann", turn.id, verdict="meh")
    other = store.create("ann")
    with pytest.raises(ConversationNotFoundError, match="in conversation"):  # ann's answer, another conversation
        store.set_feedback("ann", turn.id, verdict="up", conversation_id=other.id)
    with pytest.raises(InputError, match="more than 10 characters"):
        store.set_feedback("ann", turn.id, correction="x" * 11, max_chars=10)
    (saved,) = store.turns("ann", conversation.id)
    assert saved.feedback.verdict is None and saved.feedback.wrong_sources == (1, 3)


def test_export_and_counts_cover_every_owner_and_deleting_a_conversation_drops_its_feedback(store):
    for owner, adapter, verdict in (("ann", "finance", "up"), ("bob", "finance", "down"), ("bob", "base", None)):
        conversation = store.create(owner)
        turn = store.add_turn(owner, conversation.id, answer(f"{owner} asks", adapter=adapter))
        if verdict:
            store.set_feedback(owner, turn.id, verdict=verdict)
    store.add_turn("bob", conversation.id, answer("no feedback", adapter="base"))
    store.set_feedback("bob", turn.id, correction="better")
    records = list(store.feedback())
    assert [r.answer.question for r in records] == ["bob asks", "bob asks", "ann asks"]  # newest verdict first
    line = records[0].to_json()
    assert line["owner"] == "bob" and line["correction"] == "better" and line["sources"][0]["source"] == "doc1.md"
    assert json.loads(json.dumps(line)) == line
    assert [r.owner for r in store.feedback(adapter="finance")] == ["bob", "ann"]
    counts = store.feedback_counts()
    assert counts["finance"] == {"answers": 2, "up": 1, "down": 1, "corrected": 0, "wrong_source": 0}
    assert counts["base"] == {"answers": 2, "up": 0, "down": 0, "corrected": 1, "wrong_source": 0}
    store.delete("bob", conversation.id)
    assert [r.owner for r in store.feedback()] == ["bob", "ann"]
    assert "base" not in store.feedback_counts()  # bob's base conversation is gone with its answers


def test_titles_are_bounded_and_renaming_needs_text(store):
    conversation = store.create("ann", title="x" * 1000)
    assert len(store.get("ann", conversation.id).title) == 120
    assert store.rename("ann", conversation.id, "  Budget\n2027 ").title == "Budget 2027"
    with pytest.raises(InputError):
        store.rename("ann", conversation.id, "   ")


def test_a_database_from_a_newer_version_is_refused_not_misread(database):
    ChatStore(database).close()
    engine = create_engine(database if isinstance(database, str) else f"sqlite:///{database}")
    with engine.begin() as db:
        db.execute(text("UPDATE alembic_version SET version_num = 'chats_0099' WHERE version_num = 'chats_0001'"))
    engine.dispose()
    with pytest.raises(ChatStoreError, match="newer version of the app"):
        ChatStore(create_engine(database if isinstance(database, str) else f"sqlite:///{database}"))


def test_a_chats_file_of_the_versions_before_migrations_is_kept_and_refused_when_newer(tmp_path):
    path = tmp_path / "chats.sqlite"
    with sqlite3.connect(path) as db:  # the schema version 1 file, as the app made it before Alembic
        db.executescript(LEGACY_V1)
        db.execute("INSERT INTO conversations VALUES ('c1', 'ann', 'Old talk', 'ui', 1.0, 2.0)")
        record = json.dumps(answer("Old question?").to_json())
        db.execute("INSERT INTO turns VALUES (1, 'c1', 0, 'Old question?', 'It is 42 [1].', 'base', ?, 1.5)", (record,))
        db.execute("INSERT INTO feedback VALUES (1, 1, NULL, '[]', 3.0)")
        db.execute("PRAGMA user_version = 1")
    store = ChatStore(path)
    (saved,) = store.turns("ann", "c1")
    assert saved.answer.question == "Old question?" and saved.feedback.verdict == "up"
    assert store.add_turn("ann", "c1", answer("New question?")).id == 2  # the old rows keep their ids
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("chats_0001",)]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute("PRAGMA user_version = 99")  # a later version before migrations: refused
    with pytest.raises(ChatStoreError, match="schema version 99"):
        ChatStore(create_engine(f"sqlite:///{path}"))


LEGACY_V1 = """
CREATE TABLE conversations (id VARCHAR(32) NOT NULL PRIMARY KEY, owner VARCHAR(200) NOT NULL,
    title VARCHAR(480) NOT NULL, channel VARCHAR(8) NOT NULL, created_at FLOAT NOT NULL, updated_at FLOAT NOT NULL);
CREATE INDEX ix_conversations_owner ON conversations (owner);
CREATE INDEX ix_conversations_updated_at ON conversations (updated_at);
CREATE TABLE turns (id INTEGER NOT NULL PRIMARY KEY, conversation_id VARCHAR(32) NOT NULL
    REFERENCES conversations (id) ON DELETE CASCADE, position INTEGER NOT NULL, question TEXT NOT NULL,
    answer TEXT NOT NULL, adapter VARCHAR(200) NOT NULL, record TEXT NOT NULL, created_at FLOAT NOT NULL);
CREATE TABLE feedback (turn_id INTEGER NOT NULL PRIMARY KEY REFERENCES turns (id) ON DELETE CASCADE,
    verdict INTEGER NOT NULL, correction TEXT, wrong_sources TEXT NOT NULL, updated_at FLOAT NOT NULL);
"""


def test_source_changes_name_deleted_and_changed_files():
    versions = {"a.md": "1", "b.md": "2", "c.md": "3", "d.md": None}
    assert source_changes(versions, {"a.md": "1", "b.md": "changed", "d.md": "4"}) == {
        "b.md": "changed",
        "c.md": "deleted",
    }


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from chatbot.rag.answer import Answer, SourceRef
    from chatbot.chats import ChatStore

    store = ChatStore(Path(sys.argv[1]))
    conversation = store.create("ann")
    source = SourceRef(1, "doc.md", None, "s" * 2000, 0.5)
    n = 0
    while True:
        store.add_turn("ann", conversation.id, Answer(f"question {n}", "a" * 20000, "base", [source], [source]))
        print(n, flush=True)  # committed
        n += 1
    """
)


def test_a_writer_killed_mid_write_loses_no_committed_turn_and_leaves_no_half_one(tmp_path):
    path = tmp_path / "chats.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    committed = -1
    deadline = time.time() + 60
    while committed < 30 and time.time() < deadline:
        committed = int(writer.stdout.readline())
    writer.kill()  # SIGKILL: no cleanup, very likely in the middle of a transaction
    writer.wait()
    assert committed >= 30
    store = ChatStore(path)
    (conversation,) = store.conversations("ann")
    turns = store.turns("ann", conversation.id)
    assert len(turns) >= committed + 1  # everything it reported as committed is there
    assert [t.question for t in turns] == [f"question {n}" for n in range(len(turns))]
    assert all(len(t.answer.answer) == 20000 and t.answer.sources[0].source == "doc.md" for t in turns)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.add_turn("ann", conversation.id, answer("after the crash"))  # and it keeps working
    assert store.turns("ann", conversation.id)[-1].question == "after the crash"


def test_history_entries_name_the_adapter_and_are_told_apart_when_titles_repeat(store, make_settings):
    from types import SimpleNamespace

    from chatbot.ui.history import history_choices

    first = store.create("ann")
    store.add_turn("ann", first.id, answer("How do I sync?"), {})
    second = store.create("ann")
    store.add_turn("ann", second.id, answer("How do I sync?"), {})
    third = store.create("ann")
    store.add_turn("ann", third.id, answer("How do I sync?", adapter="finance"), {})
    store.create("ann", title="Empty one")
    infos = {info.id: info for info in store.conversations("ann")}
    assert (infos[first.id].adapter, infos[third.id].adapter) == ("base", "finance")
    assert store.get("ann", third.id).adapter == "finance"

    labels = {"base": "Base model", "finance": "Finance"}
    bot = SimpleNamespace(
        settings=make_settings(),
        chats=store,
        adapters=SimpleNamespace(find=lambda name: SimpleNamespace(display_name=labels[name])),
    )
    choices = dict((conversation_id, label) for label, conversation_id in history_choices(bot, "ann"))
    assert len(set(choices.values())) == 4  # four entries, four different labels
    assert "How do I sync? · Finance · 1 answer · " in choices[third.id]
    assert "How do I sync? · Base model · 1 answer · " in choices[first.id]
    assert "Empty one · no answer yet · 0 answers" in next(v for v in choices.values() if "Empty" in v)
