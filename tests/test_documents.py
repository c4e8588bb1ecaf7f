"""Documents as the UI handles them: served read-only from the knowledge folder, uploaded, deleted."""

import os
import shutil

import pytest
from fastapi.testclient import TestClient

from chatbot.knowledge.documents import DocumentError, resolve_document, sanitize_filename, save_upload
from chatbot.knowledge.trash import Trash
from tests.conftest import REPO


@pytest.fixture
def library(knowledge, tmp_path):
    (knowledge / "notes").mkdir()
    (knowledge / "notes" / "fact.md").write_text("# Fact\n\nThe gate code is 4711.\n")
    (knowledge / "page.html").write_text(
        "<html><body><h1>Hi</h1><script>alert(1)</script><p>Words here.</p></body></html>"
    )
    (knowledge / ".hidden.md").write_text("secret")
    (knowledge / "tool.exe").write_bytes(b"MZ\x00\x01")
    outside = tmp_path / "outside.md"
    outside.write_text("The outside secret is 9999.")
    os.symlink(outside, knowledge / "leak.md")
    return knowledge


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd.md", "passwd.md"),
        ("C:\\Users\\me\\report.PDF", "report.pdf"),
        ("notes: draft <1>?.txt", "notes_ draft _1.txt"),
        ("e\u0301t\u00e9.md", "\u00e9t\u00e9.md"),
        ("x" * 300 + ".md", "x" * 117 + ".md"),
    ],
)
def test_sanitize_filename(name, expected):
    assert sanitize_filename(name) == expected


def test_upload_is_saved_atomically_and_bad_ones_are_refused(library, tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_text("# Pump\n\nThe pump runs at 3 bar.\n")
    assert save_upload(library, upload, "../../Pump Manual.md", folder="/manuals/") == "manuals/Pump Manual.md"
    assert (library / "manuals" / "Pump Manual.md").read_text() == upload.read_text()
    assert not [p for p in (library / "manuals").iterdir() if p.name.startswith(".")]  # no staging file left
    with pytest.raises(DocumentError, match="unsupported file type"):
        save_upload(library, upload, "virus.exe")
    with pytest.raises(DocumentError, match=r"minutes.doc: unsupported .* save it as \.docx"):
        save_upload(library, upload, "minutes.doc")
    with pytest.raises(DocumentError, match="limit"):
        save_upload(library, upload, "big.md", max_bytes=10)
    with pytest.raises(DocumentError, match="refused folder"):
        save_upload(library, upload, "x.md", folder="../manuals")


def test_resolve_and_trash_stay_inside_the_folder(library, tmp_path):
    assert resolve_document(library, "notes/fact.md") == library / "notes" / "fact.md"
    for bad in ("../outside.md", "/etc/passwd", "notes/../../outside.md", ".hidden.md", "leak.md", "notes", ""):
        with pytest.raises(DocumentError):
            resolve_document(library, bad)
    trash = Trash(tmp_path / "trash", library)
    with pytest.raises(DocumentError):
        trash.put("leak.md")
    assert (tmp_path / "outside.md").exists() and trash.entries() == []
    entry = trash.put("notes/fact.md")
    assert not (library / "notes" / "fact.md").exists()
    assert [(e.path, e.reason) for e in trash.entries()] == [("notes/fact.md", "deleted")]
    assert trash.restore(entry.id) == "notes/fact.md"
    assert (library / "notes" / "fact.md").read_text() == "# Fact\n\nThe gate code is 4711.\n"
    assert trash.entries() == [] and not any((tmp_path / "trash").iterdir())


def test_the_trash_never_overwrites_and_keeps_every_version(library, tmp_path):
    trash = Trash(tmp_path / "trash", library)
    fact = library / "notes" / "fact.md"
    trash.put("notes/fact.md")
    fact.write_text("a newer fact")
    trash.put("notes/fact.md")
    fact.write_text("the newest fact")
    older, oldest = trash.entries()  # newest first
    assert (older.path, oldest.path) == ("notes/fact.md", "notes/fact.md") and older.trashed_at >= oldest.trashed_at
    assert trash.restore("notes/fact.md") == "notes/fact (restored).md"  # by path: the newest entry
    assert trash.restore(oldest.id) == "notes/fact (restored 2).md"
    assert fact.read_text() == "the newest fact"
    assert (library / "notes" / "fact (restored).md").read_text() == "a newer fact"
    assert "4711" in (library / "notes" / "fact (restored 2).md").read_text()
    with pytest.raises(DocumentError, match="nothing in the trash"):
        trash.restore("notes/fact.md")


def test_a_file_named_like_the_trash_entry_file_is_kept_whole(library, tmp_path):
    (library / "entry.json").write_text('{"not": "an entry"}')
    trash = Trash(tmp_path / "trash", library)
    entry = trash.put("entry.json")
    assert [e.id for e in trash.entries()] == [entry.id]
    trash.restore(entry.id)
    assert (library / "entry.json").read_text() == '{"not": "an entry"}'


def test_emptying_the_trash_deletes_only_what_is_in_it(library, tmp_path):
    trash = Trash(tmp_path / "trash", library)
    first = trash.put("notes/fact.md")
    trash.put("page.html")
    assert trash.empty(first.id) == 1
    assert [e.path for e in trash.entries()] == ["page.html"]
    assert trash.empty() == 1 and trash.entries() == []
    assert (library / "tool.exe").exists()


def test_an_upload_over_a_document_keeps_the_old_version_in_the_trash(library, tmp_path):
    trash = Trash(tmp_path / "trash", library)
    upload = tmp_path / "upload.bin"
    upload.write_text("# Fact\n\nThe gate code is 1234 now.\n")
    with pytest.raises(DocumentError, match="exists already"):
        save_upload(library, upload, "fact.md", folder="notes")
    assert "4711" in (library / "notes" / "fact.md").read_text()
    saved = save_upload(library, upload, "fact.md", folder="notes", keep_old=lambda path: trash.put(path, "replaced"))
    assert saved == "notes/fact.md" and "1234" in (library / saved).read_text()
    (old,) = trash.entries()
    assert old.reason == "replaced"
    trash.restore(old.id)
    assert "4711" in (library / "notes" / "fact (restored).md").read_text()


@pytest.fixture
def app(make_bot, library):
    from chatbot.server.app import create_app

    def make(**settings):
        bot = make_bot(**settings)
        bot.sync()
        return TestClient(create_app(bot))

    return make


def test_files_route_serves_indexed_documents_only(app):
    http = app()
    response = http.get("/files/notes/fact.md")
    assert response.status_code == 200 and "4711" in response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-content-type-options"] == "nosniff"
    page = http.get("/files/page.html")
    assert page.status_code == 200 and page.headers["content-security-policy"] == "sandbox"
    for bad in (
        "/files/../outside.md",
        "/files/%2e%2e/outside.md",
        "/files/notes/%2e%2e/%2e%2e/outside.md",
        "/files/.hidden.md",
        "/files/leak.md",
        "/files/tool.exe",  # in the folder but not an indexed document
        "/files/nope.md",
    ):
        response = http.get(bad)
        assert response.status_code == 404, bad
        assert "9999" not in response.text and "secret" not in response.text
    assert http.post("/files/notes/fact.md", content=b"overwrite").status_code in (404, 405)
    assert http.delete("/files/notes/fact.md").status_code in (404, 405)
    assert "4711" in http.get("/files/notes/fact.md").text  # read-only


def test_login_protects_the_page_and_the_documents(app):
    http = app(ui_auth={"ada": "lovelace"})
    assert http.get("/files/notes/fact.md").status_code == 401
    assert http.post("/login", data={"username": "ada", "password": "wrong"}).status_code == 400
    assert http.post("/login", data={"username": "ada", "password": "lovelace"}).status_code == 200
    response = http.get("/files/notes/fact.md")
    assert response.status_code == 200 and "4711" in response.text


def test_knowledge_tab_lists_documents_and_reports_sync_activity(make_bot, library):
    from chatbot.ui.knowledge_tab import document_rows, status_markdown

    bot = make_bot()
    bot.sync()
    rows = {row[0]: row for row in document_rows(bot)}
    assert set(rows) == {"notes/fact.md", "page.html"}
    assert rows["notes/fact.md"][1:4] == ["md", "", 1] and rows["notes/fact.md"][5] == ""
    status = status_markdown(bot)
    assert "**Watcher:** off" in status and "2 documents, 2 chunks" in status and "2 added" in status
    state = bot.knowledge.state
    state.running, state.stage, state.done, state.total = True, "embedding", 16, 40
    assert "**Sync running:** embedding 16/40" in status_markdown(bot)
    state.running = False
    watcher = bot.watch(debounce_s=0.2)
    try:
        assert f"**Watcher:** {watcher.status.state} · 0 syncs" in status_markdown(bot)
    finally:
        bot.close()


def test_loss_plots_are_served_for_loaded_adapters_only(app, tmp_path):
    shutil.copytree(REPO / "adapters" / "support", tmp_path / "adapters" / "support")
    broken = tmp_path / "adapters" / "<b>broken"
    broken.mkdir()
    (broken / "adapter_model.bin").write_bytes(b"pickle")
    shutil.copy(REPO / "adapters" / "support" / "loss.png", broken)
    http = app(adapters_dir=tmp_path / "adapters")
    plot = http.get("/adapter-files/support/loss.png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    assert http.get("/adapter-files/base/loss.png").status_code == 404
    assert http.get("/adapter-files/nope/loss.png").status_code == 404
    assert http.get("/adapter-files/%3Cb%3Ebroken/loss.png").status_code == 404  # refused folder


def test_adapter_cards_escape_and_show_errors(make_bot, tmp_path):
    from chatbot.app.info import AdapterRow
    from chatbot.ui.adapters_tab import card_html, cards_html

    shutil.copytree(REPO / "adapters" / "support", tmp_path / "adapters" / "support")
    broken = tmp_path / "adapters" / "<b>broken"
    broken.mkdir()
    (broken / "adapter_model.bin").write_bytes(b"pickle")
    bot = make_bot(adapters_dir=tmp_path / "adapters")
    html = cards_html(bot)
    assert "Helpdesk" in html and "LoRA rank 8" in html and "/adapter-files/support/loss.png" in html
    assert "validation perplexity" in html and "8.916" in html
    assert "&lt;b&gt;broken" in html and "<b>broken" not in html and "refused" in html
    row = AdapterRow(
        name="x",
        display_name="<script>",
        description="",
        status="refused",
        error="bad <i>",
        warnings=[],
        base_model=None,
        rank=None,
        size_bytes=0,
        folder=None,
        metrics={},
    )
    card = card_html(row)
    assert "&lt;script&gt;" in card and "bad &lt;i&gt;" in card and "<img" not in card


def test_only_files_inside_the_upload_folder_count_as_uploaded(tmp_path):
    from chatbot.knowledge.documents import check_uploaded

    uploads = tmp_path / "gradio"
    (uploads / "abc").mkdir(parents=True)
    real = uploads / "abc" / "notes.md"
    real.write_text("uploaded")
    secret = tmp_path / "secret.md"
    secret.write_text("server file")
    (uploads / "abc" / "link.md").symlink_to(secret)
    assert check_uploaded(real, uploads) == real.resolve()
    for forged in (secret, uploads / "abc" / "link.md", uploads / ".." / "secret.md", uploads / "abc" / "none.md"):
        with pytest.raises(DocumentError, match="not an uploaded file"):
            check_uploaded(forged, uploads)


def test_suggested_questions_come_from_the_indexed_headings_and_file_names():
    from chatbot.knowledge.suggestions import suggested_questions

    metadatas = [
        {"source": "guide/02-kb.md", "section": "The knowledge base > What the sync skips"},
        {"source": "guide/02-kb.md", "section": "The knowledge base > How do I refresh the knowledge base?"},
        {"source": "guide/01-start.md", "section": "Getting started > Installing and starting the app"},
        {"source": "guide/01-start.md", "section": "Getting started > Installing and starting the app"},
        {"source": "reports/2024_q3-SEC filings.pdf", "section": None, "page": 3},
        {"source": "tiny.md", "section": "# ?"},
    ]
    assert suggested_questions(metadatas, limit=3) == [
        "What do my documents say about installing and starting the app?",
        "How do I refresh the knowledge base?",  # a heading that asks, asked first within its file
        "What is in q3 SEC filings?",
    ]
    assert suggested_questions(metadatas, limit=10)[-1] == "What do my documents say about what the sync skips?"
    assert suggested_questions([], limit=4) == []
