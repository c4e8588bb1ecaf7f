"""Documents as the UI handles them: served read-only from the knowledge folder, uploaded, deleted."""

import os

import pytest
from fastapi.testclient import TestClient

from chatbot.knowledge.documents import DocumentError, delete_document, resolve_document, sanitize_filename, save_upload


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
    with pytest.raises(DocumentError, match="limit"):
        save_upload(library, upload, "big.md", max_bytes=10)
    with pytest.raises(DocumentError, match="refused folder"):
        save_upload(library, upload, "x.md", folder="../manuals")


def test_resolve_and_delete_stay_inside_the_folder(library, tmp_path):
    assert resolve_document(library, "notes/fact.md") == library / "notes" / "fact.md"
    for bad in ("../outside.md", "/etc/passwd", "notes/../../outside.md", ".hidden.md", "leak.md", "notes", ""):
        with pytest.raises(DocumentError):
            resolve_document(library, bad)
    with pytest.raises(DocumentError):
        delete_document(library, "leak.md")
    assert (tmp_path / "outside.md").exists()
    delete_document(library, "notes/fact.md")
    assert not (library / "notes" / "fact.md").exists()


@pytest.fixture
def app(make_bot, library):
    from chatbot.server import create_app

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
