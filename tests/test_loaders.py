import os

import pytest

from chatbot.knowledge.loaders import LoadError, load_file
from chatbot.knowledge.scan import scan_folder
from tests.pdfs import make_pdf


def test_pdf_pages_are_numbered_from_one(tmp_path):
    path = make_pdf(tmp_path / "r.pdf", ["first page text", "second page text"])
    pages = load_file(path)
    assert [(p.number, p.text.strip()) for p in pages] == [(1, "first page text"), (2, "second page text")]


def test_pdf_encrypted_with_empty_password_is_opened(tmp_path):
    path = make_pdf(tmp_path / "e.pdf", ["secret quarterly revenue"], password="")
    assert "quarterly revenue" in load_file(path)[0].text


def test_pdf_that_needs_a_password_is_refused(tmp_path):
    path = make_pdf(tmp_path / "p.pdf", ["hidden"], password="hunter2")
    with pytest.raises(LoadError, match="password"):
        load_file(path)


def test_corrupt_pdf_is_refused_with_reason(tmp_path):
    path = tmp_path / "bad.pdf"
    path.write_bytes(b"%PDF-1.4\n garbage \x00\x01 not a pdf")
    with pytest.raises(LoadError, match="PDF"):
        load_file(path)


def test_binary_junk_named_txt_is_refused(tmp_path):
    path = tmp_path / "junk.txt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(LoadError, match="binary"):
        load_file(path)


def test_non_utf8_text_is_decoded(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("Le café coûte très cher à Zürich, déjà noté.".encode("cp1252"))
    assert "café" in load_file(path)[0].text


def test_utf8_bom_is_dropped(tmp_path):
    path = tmp_path / "bom.md"
    path.write_bytes("\ufeff# Title".encode())
    assert load_file(path)[0].text == "# Title"


def test_scan_skips_hidden_temporary_unsupported_oversized_and_outside_links(tmp_path):
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / "ok.md").write_text("hello")
    (root / "sub" / "deep.txt").write_text("deep")
    (root / ".hidden.md").write_text("x")
    (root / "~$lock.md").write_text("x")
    (root / "notes.md.swp").write_text("x")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / "big.txt").write_text("x" * 2000)
    outside = tmp_path / "secret.txt"
    outside.write_text("do not index")
    (root / "escape.txt").symlink_to(outside)
    (root / "inside.txt").symlink_to(root / "ok.md")
    result = scan_folder(root, max_bytes=1000)
    assert set(result.files) == {"ok.md", "sub/deep.txt", "inside.txt"}
    assert "outside" in result.skipped["escape.txt"]
    assert "unsupported" in result.skipped["image.png"]
    assert "limit" in result.skipped["big.txt"]
    assert not {".hidden.md", "~$lock.md", "notes.md.swp"} & set(result.skipped)
