"""Hybrid retrieval: the BM25 keyword index follows the sync, and fusion keeps the relevance floor."""

import sqlite3

import pytest

TOPICS = {
    "pump.md": "# Pump\n\nPart XJ-4471 is the replacement gasket for the pump housing. Tighten it by hand.",
    "garden.md": "# Garden\n\nTomatoes need six hours of sun and water every morning.",
    "bikes.md": "# Bikes\n\nThe e-bike battery lasts 80 km on a full charge.",
    "kitchen.md": "# Kitchen\n\nThe oven preheats to 200 degrees in ten minutes.",
}


@pytest.fixture
def topics(knowledge):
    for name, text in TOPICS.items():
        (knowledge / name).write_text(text)
    return knowledge


def _vector_ids(bot) -> set[str]:
    return set(bot.store.get(include=[])["ids"])


def test_keyword_index_follows_every_sync_and_repairs_itself(make_bot, topics):
    bot = make_bot(retrieval_mode="hybrid")
    bot.sync()
    assert bot.keywords.ids() == _vector_ids(bot) and len(_vector_ids(bot)) >= 4
    (topics / "garden.md").unlink()
    (topics / "pump.md").write_text(TOPICS["pump.md"] + "\n\nA second gasket, part XJ-4472, fits the old model.")
    bot.sync()
    assert bot.keywords.ids() == _vector_ids(bot)
    with sqlite3.connect(bot.settings.data_dir / "keywords.sqlite") as db:  # as after a crash mid-update
        db.execute("DELETE FROM keyword_chunks WHERE rowid IN (SELECT rowid FROM keyword_chunks LIMIT 2)")
        db.execute(
            "INSERT INTO keyword_chunks (collection, id, text) VALUES ('knowledge', 'ghost', 'a chunk Chroma lost')"
        )
    bot.sync()
    assert bot.keywords.ids() == _vector_ids(bot)


def test_hybrid_finds_exact_codes_and_keeps_the_floor(make_bot, topics):
    hybrid = make_bot(retrieval_mode="hybrid")
    hybrid.sync()
    found = hybrid.chain.retrieve("Which part is XJ-4471?")
    assert found[0].metadata["source"] == "pump.md" and found[0].metadata["score"] >= 0.35
    assert hybrid.keywords.search("XJ-4471 gasket", 3)[0] in {doc.id for doc in found}
    # a keyword match alone does not get past the similarity floor
    assert hybrid.keywords.search("hand", 3)  # "Tighten it by hand." matches the word
    assert hybrid.chain.retrieve("hand") == []
    assert hybrid.chain.retrieve("zzqx vprt") == []


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_a_floor_given_to_one_search_replaces_min_relevance_for_it_only(make_bot, topics, mode):
    bot = make_bot(retrieval_mode=mode, min_relevance=0.95)
    bot.sync()
    question = "How long does the e-bike battery last?"
    assert bot.chain.retrieve(question) == []  # nothing reaches 0.95
    lowered = bot.chain.retrieve(question, floor=0.2)
    assert lowered and lowered[0].metadata["source"] == "bikes.md"
    assert all(0.2 <= doc.metadata["score"] < 0.95 for doc in lowered)
    assert bot.chain.retrieve(question) == []  # the next search has the setting's floor again
    scoped = bot.chain.retrieve(question, {"source": "garden.md"}, floor=-1.0)
    assert {doc.metadata["source"] for doc in scoped} == {"garden.md"}  # the scope still applies
