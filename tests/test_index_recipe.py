"""An index is rebuilt when what decides its chunks and vectors changes (chunk sizes, embedding model)."""

import json
import os
from collections import Counter

import pytest

from chatbot.knowledge import sync as sync_module
from chatbot.knowledge.store import RECIPE_KEY, collection_recipe, cosine_similarity
from chatbot.models.embeddings import resolve_embedding_folder
from chatbot.ui.knowledge_tab import status_markdown
from tests.test_sync import indexed
from tests.test_sync_robust import kill_a_sync, paragraph


def consistent(bot) -> list[str]:
    """The collection's ids, after checking that records and keyword index hold exactly them."""
    ids = sorted(bot.store.get(include=[])["ids"])
    assert sorted(bot.knowledge.records.list_keys()) == ids
    assert sorted(bot.keywords.ids()) == ids
    return ids


def longest_chunk(bot) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_embedding_folder("embedded"))
    documents = bot.store.get(include=["documents"])["documents"]
    return max(len(tokenizer.encode(text, add_special_tokens=False)) for text in documents)


def test_a_new_chunk_size_re_reads_every_file_and_only_once(make_bot, user_guide):
    first = make_bot()
    first.sync()
    old_ids = consistent(first)
    recipe = json.loads(collection_recipe(first.store))
    assert recipe["reading"]["chunk_size"] == 200 and recipe["reading"]["chunk_overlap"] == 30
    assert len(recipe["vectors"]["embedding"]) == 16
    assert longest_chunk(first) > 60

    smaller = make_bot(chunk_size=60, chunk_overlap=10)
    assert "chunk_size 200 -> 60" in smaller.knowledge.pending()
    assert consistent(smaller) == old_ids  # saying so changed nothing
    report = smaller.sync()
    assert report.rebuilt and "chunk_size 200 -> 60" in report.rebuilt and "chunk_overlap 30 -> 10" in report.rebuilt
    assert len(report.updated) == 5 and report.unchanged == 0
    ids = consistent(smaller)
    assert len(ids) > len(old_ids) and longest_chunk(smaller) <= 60  # no chunk of the old recipe is left
    kept = set(ids) & set(old_ids)  # short sections come out the same: their vectors are kept
    assert kept and report.chunks_skipped == len(kept) and report.chunks_added == len(ids) - len(kept)
    assert smaller.status().chunks == len(ids)
    assert "**Re-indexed every file:** the index's recipe changed: chunk_overlap 30 -> 10" in status_markdown(smaller)
    assert smaller.knowledge.pending() is None
    assert smaller.sync().wrote_nothing  # the same recipe again: nothing to do

    back = make_bot()
    assert "chunk_size 60 -> 200" in back.sync().rebuilt
    assert consistent(back) == old_ids


def test_a_file_refused_by_a_limit_is_indexed_once_the_limit_is_raised(make_bot, user_guide):
    strict = make_bot(max_file_chars=1000)
    report = strict.sync()
    refused = sorted(report.errors)
    assert refused and all("max_file_chars" in report.errors[path] for path in refused)
    assert sorted(strict.sync().errors) == refused  # the same settings: still refused, nothing read
    relaxed = make_bot()
    report = relaxed.sync()
    assert "max_file_chars 1000 -> 5000000" in report.rebuilt
    assert not report.errors and sorted(report.added) == refused
    assert len(indexed(relaxed)) == 5 and not relaxed.status().errors
    assert relaxed.sync().wrote_nothing


def _with_a_dense_layer(folder, size: int):
    """The embedded MiniLM plus a random Dense layer to ``size`` dimensions: another embedding model."""
    from sentence_transformers.models import Dense

    source = resolve_embedding_folder("embedded")
    folder.mkdir()
    for entry in source.iterdir():
        if entry.name != "modules.json":
            (folder / entry.name).symlink_to(entry)
    (folder / "3_Dense").mkdir()
    Dense(384, size).save(str(folder / "3_Dense"))
    modules = json.loads((source / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder


def test_an_embedding_model_of_another_dimension_rebuilds_the_index(make_bot, knowledge, tmp_path):
    (knowledge / "cat.md").write_text("The lighthouse keeper feeds the cat at noon.")
    (knowledge / "ferry.md").write_text("The ferry leaves the harbor every hour.")
    make_bot().sync()
    other = make_bot(embedding_model=str(_with_a_dense_layer(tmp_path / "minilm-32", 32)))
    report = other.sync()
    assert report.rebuilt and "embedding model" in report.rebuilt
    assert indexed(other) == Counter({"cat.md": 1, "ferry.md": 1})
    vectors = other.store.get(include=["embeddings"])["embeddings"]
    assert {len(vector) for vector in vectors} == {32}
    assert other.chain.retrieve("Who feeds the cat?")  # the query has the vectors' dimension
    consistent(other)


def test_an_older_index_of_the_same_model_keeps_its_vectors(make_bot, user_guide):
    bot = make_bot()
    bot.sync()
    ids = consistent(bot)
    bot.store._collection.modify(metadata={"note": "an older index"})  # what an older version left
    assert "older version" in make_bot().knowledge.pending()
    report = make_bot().sync()
    assert report.rebuilt and "older version" in report.rebuilt
    assert len(report.updated) == 5 and report.chunks_added == 0  # read again, nothing embedded again
    assert consistent(make_bot()) == ids and RECIPE_KEY in make_bot().store._collection.metadata
    assert make_bot().sync().wrote_nothing


def test_an_older_index_of_another_model_is_rebuilt(make_bot, knowledge, tmp_path):
    (knowledge / "a.txt").write_text("Apples are red.")
    # the same dimension as the embedded model, other vectors: only comparing them tells
    older = make_bot(embedding_model=str(_with_a_dense_layer(tmp_path / "minilm-384", 384)))
    older.sync()
    older.store._collection.modify(metadata={"note": "an older index"})
    bot = make_bot()
    report = bot.sync()
    assert "another embedding model" in report.rebuilt and report.added == ["a.txt"]
    [stored] = bot.store.get(include=["embeddings"])["embeddings"]
    assert cosine_similarity(stored, bot.embeddings.embed_documents(["Apples are red."])[0]) > 0.999
    assert make_bot().sync().wrote_nothing


@pytest.mark.parametrize("step", ["forget", "reset_collection", "delete_keys", "record_recipe"])
def test_a_reset_interrupted_at_any_step_is_finished_by_the_next_sync(make_bot, user_guide, tmp_path, step):
    make_bot().sync()
    model = str(_with_a_dense_layer(tmp_path / "minilm-32", 32))
    bot = make_bot(embedding_model=model)
    where = {
        "forget": (bot.knowledge.manifest, "forget"),
        "reset_collection": (bot.store, "reset_collection"),
        "delete_keys": (bot.knowledge.records, "delete_keys"),
        "record_recipe": (sync_module, "record_recipe"),
    }[step]

    def crash(*_args: object) -> None:
        raise RuntimeError(f"crashed at {step}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(*where, crash)
        with pytest.raises(RuntimeError, match=step):
            bot.sync()
    clean = make_bot(data_dir=tmp_path / "clean", embedding_model=model)
    clean.sync()
    again = make_bot(embedding_model=model)
    assert not again.sync().errors
    assert indexed(again) == indexed(clean)
    assert consistent(again) == consistent(clean)
    assert {len(vector) for vector in again.store.get(include=["embeddings"])["embeddings"]} == {32}
    assert again.sync().wrote_nothing


def test_a_re_read_killed_mid_way_finishes_on_the_next_sync(make_settings, make_bot, knowledge, tmp_path):
    for number in range(30):
        (knowledge / f"doc-{number:02}.md").write_text("\n\n".join(paragraph(number * 20 + i) for i in range(20)))
    make_bot().sync()
    settings = make_settings()
    env = {
        **os.environ,
        "CHATBOT_KNOWLEDGE_DIR": str(knowledge),
        "CHATBOT_DATA_DIR": str(settings.data_dir),
        "CHATBOT_CHUNK_SIZE": "60",
        "CHATBOT_CHUNK_OVERLAP": "10",
    }
    kill_a_sync(env, 80)
    clean = make_bot(data_dir=tmp_path / "clean", chunk_size=60, chunk_overlap=10)
    clean.sync()
    bot = make_bot(chunk_size=60, chunk_overlap=10)
    assert indexed(bot) != indexed(clean)  # the kill landed mid-way: old and new chunks side by side
    report = bot.sync()
    assert "chunk_size 200 -> 60" in report.rebuilt  # not recorded yet: the re-read is redone
    assert report.chunks_skipped > 0  # what the killed run had written is kept
    assert not report.errors
    assert indexed(bot) == indexed(clean)
    assert consistent(bot) == consistent(clean)
    assert bot.sync().wrote_nothing


def test_each_collection_keeps_its_own_manifest(make_bot, user_guide):
    first = make_bot()
    first.sync()
    before = indexed(first)
    other = make_bot(collection="other")
    report = other.sync()
    assert len(report.added) == 5 and indexed(other) == before  # a new collection: every file, not "unchanged"
    guide = user_guide / "user-guide" / "01-getting-started.md"
    guide.write_text(guide.read_text() + "\n\nThe lighthouse keeper feeds the cat at noon.\n")
    assert other.sync().updated == ["user-guide/01-getting-started.md"]
    back = make_bot()  # the first collection has not seen the edit: its own manifest says so
    assert back.sync().updated == ["user-guide/01-getting-started.md"]
    edited = back.store.get(where={"source": "user-guide/01-getting-started.md"}, include=["documents"])
    assert any("lighthouse keeper" in text for text in edited["documents"])
    assert consistent(back) == consistent(other)


def test_a_collection_deleted_with_its_records_is_indexed_again(make_bot, user_guide):
    bot = make_bot()
    bot.sync()
    ids = consistent(bot)
    bot.store.delete_collection()  # as when the Chroma folder, or the server's collection, is gone
    bot.settings.record_db.unlink()
    again = make_bot()
    report = again.sync()
    assert len(report.added) == 5 and report.rebuilt is None  # nothing was there to re-build
    assert consistent(again) == ids and again.status().chunks == len(ids)
