"""The keyword index (FTS5 on SQLite, full-text search on PostgreSQL): exactly the collection's chunks,
ranked by the query's words."""

import pytest

from chatbot.knowledge.keywords import KeywordIndex
from chatbot.knowledge.store import open_vector_store
from chatbot.models.embeddings import load_embeddings

TEXTS = {
    "a": "The Zorblax reactor runs at 4,812 kelvin in the northern plant.",
    "b": "Quarterly revenue rose because of strong reactor maintenance contracts.",
    "c": "Employees may carry over five days of unused vacation.",
}


@pytest.fixture(scope="module")
def embeddings():
    return load_embeddings("embedded", device="cpu", dtype="float32")


@pytest.fixture
def store(tmp_path, embeddings):
    store = open_vector_store(tmp_path / "chroma", "chunks", embeddings)
    store.add_texts(list(TEXTS.values()), ids=list(TEXTS))
    return store


def test_reconcile_makes_the_index_hold_exactly_the_collection(database, store):
    index = KeywordIndex(database, "chunks")
    assert index.reconcile(store) == (3, 0)
    assert index.ids() == set(TEXTS)
    assert index.reconcile(store) == (0, 0)  # nothing to do the second time
    store.delete(ids=["c"])
    store.add_texts(["A new chunk about Zorblax safety drills."], ids=["d"])
    assert index.reconcile(store) == (1, 1)
    assert index.ids() == {"a", "b", "d"}
    reopened = KeywordIndex(database, "chunks")  # persisted, not in memory
    assert reopened.ids() == {"a", "b", "d"}


def test_search_ranks_by_the_query_words_and_ignores_stopwords(database, store):
    index = KeywordIndex(database, "chunks")
    index.reconcile(store)
    assert index.search("Zorblax temperature", 3) == ["a"]  # an exact code only one chunk has
    assert set(index.search("reactor", 3)) == {"a", "b"}
    assert index.search("vacation days", 1) == ["c"]
    assert index.search("what is the", 3) == []  # only stopwords: no match, no error
    assert index.search('"; DROP TABLE chunks; --', 3) == []  # quotes cannot break the MATCH query
    assert index.ids() == set(TEXTS)


def test_collections_sharing_a_database_search_only_their_own_chunks(database, store):
    mine, other = KeywordIndex(database, "chunks"), KeywordIndex(database, "other")
    mine.reconcile(store)
    assert other.ids() == set() and other.search("Zorblax", 3) == []
    assert other.reconcile(store, set()) == (0, 0)  # an empty collection removes nothing of the other
    assert mine.search("Zorblax", 3) == ["a"]
